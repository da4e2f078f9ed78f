"""Record a video file's decoded frames as a GXF recording (VideoStreamRecorderOp), for the
application's ``replayer:FOLDER`` source: ``python record_gxf.py VIDEO FOLDER BASENAME``.

The frames are decoded by convseg-deploy's file source (the decoding ``live`` and the
application use) and emitted as host tensors, which is what the recorder writes and the
replayer reads back on a machine without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

from convseg_deploy.holoscan.sdk import import_holoscan, operator
from convseg_deploy.live.sources import open_source


def record(video: str, folder: Path, basename: str) -> int:
    holoscan = import_holoscan()
    from holoscan.core import Application, Operator

    source = open_source(video)
    source.open(5.0)

    class Frames(Operator):
        def setup(self, spec):
            spec.output("out")

        def compute(self, op_input, op_output, context):
            frame = source.read()
            if frame is None:
                self.stop_execution()
                return
            self.count = getattr(self, "count", 0) + 1
            op_output.emit({"": holoscan.as_tensor(frame.image)}, "out")

    class Recorder(Application):
        def compose(self):
            self.frames = Frames(self, name="frames")
            recorder = operator("VideoStreamRecorderOp")(self, name="recorder", directory=str(folder),
                                                         basename=basename)
            self.add_flow(self.frames, recorder)

    folder.mkdir(parents=True, exist_ok=True)
    app = Recorder()
    app.run()
    source.close()
    return app.frames.count


if __name__ == "__main__":
    print(record(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
