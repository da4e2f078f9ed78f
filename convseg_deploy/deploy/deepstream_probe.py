"""Run the DeepStream segmentation pipeline on a video and write the masks nvinfer made (pyds).

Written into the output folder of ``convseg-deploy deepstream`` (as ``probe.py``) and run there
with the DeepStream Python bindings: ``python3 probe.py VIDEO.mp4 --out masks``. It builds the
same pipeline as ``run_gst.sh`` (``PIPELINE`` below, filled in when written), puts a buffer probe
on nvinfer's src pad and reads each frame's ``NvDsInferSegmentationMeta``: nvinfer's
``class_map`` holds 0 where the model's probability is above ``segmentation-threshold`` and -1
elsewhere, which becomes a 0/255 mask PNG per frame plus one line of ``masks.jsonl``.
Standalone on purpose: a DeepStream machine needs neither convseg-deploy nor its dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PIPELINE = None  # the pipeline description, filled in by convseg-deploy deepstream
INFER_NAME = "segmentation"
MASK_ON = 255


def mask_from_class_map(class_map):  # numpy int array H x W -> uint8 H x W
    """nvinfer's class map of a one-class model (0: polyp, -1: background) as a 0/255 mask."""
    import numpy as np

    return np.where(np.asarray(class_map) == 0, MASK_ON, 0).astype(np.uint8)


def _write_mask(folder, index, mask):
    try:
        import cv2
    except ImportError:  # no OpenCV on this machine: numpy's own format
        import numpy as np

        np.save(os.path.join(folder, f"{index:06d}.npy"), mask)
        return
    if not cv2.imwrite(os.path.join(folder, f"{index:06d}.png"), mask):
        raise OSError(f"cannot write {folder}/{index:06d}.png")


def _probe(pyds, Gst, out, log):  # -> the pad probe callback
    import numpy as np

    def on_buffer(pad, info, _data):
        buffer = info.get_buffer()
        if not buffer:
            return Gst.PadProbeReturn.OK
        batch = pyds.gst_buffer_get_nvds_batch_meta(hash(buffer))
        frames = batch.frame_meta_list
        while frames is not None:
            frame = pyds.NvDsFrameMeta.cast(frames.data)
            users = frame.frame_user_meta_list
            while users is not None:
                user = pyds.NvDsUserMeta.cast(users.data)
                if user.base_meta.meta_type == pyds.NVDSINFER_SEGMENTATION_META:
                    seg = pyds.NvDsInferSegmentationMeta.cast(user.user_meta_data)
                    mask = mask_from_class_map(np.array(pyds.get_segmentation_masks(seg), copy=True, order="C"))
                    _write_mask(out, frame.frame_num, mask)
                    log.write(json.dumps({"frame": int(frame.frame_num), "width": int(seg.width), "height": int(seg.height),
                                          "polyp_pixels": int((mask == MASK_ON).sum())}) + "\n")
                users = users.next
            frames = frames.next
        return Gst.PadProbeReturn.OK

    return on_buffer


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the segmentation pipeline on VIDEO and write nvinfer's masks.")
    parser.add_argument("video", help="an H.264 MP4 file")
    parser.add_argument("--out", required=True, help="folder for the mask PNGs and masks.jsonl (new or empty)")
    parser.add_argument("--sink", default="fakesink", help="GStreamer sink for the visualised masks [fakesink]")
    args = parser.parse_args(argv)
    if PIPELINE is None:
        print("Error: this probe has no pipeline: use the probe.py that convseg-deploy deepstream wrote", file=sys.stderr)
        return 1
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst
        import pyds
    except (ImportError, ValueError) as exc:
        print(f"Error: this needs PyGObject with GStreamer and the DeepStream Python bindings (pyds): {exc}; "
              "run it on a DeepStream machine", file=sys.stderr)
        return 1
    if not os.path.isfile(args.video):
        print(f"Error: video {args.video} not found", file=sys.stderr)
        return 1
    if os.path.exists(args.out) and os.listdir(args.out):
        print(f"Error: {args.out} is not empty: choose a new --out", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    Gst.init(None)
    description = PIPELINE.format(video=json.dumps(os.path.abspath(args.video)),
                                  config=json.dumps(os.path.join(here, "nvinfer_config.txt")), sink=args.sink)
    pipeline = Gst.parse_launch(description)
    loop = GLib.MainLoop()
    failed = []

    def on_message(_bus, message):
        if message.type == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            failed.append(str(error))
            loop.quit()
        elif message.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    with open(os.path.join(args.out, "masks.jsonl"), "w") as log:
        pipeline.get_by_name(INFER_NAME).get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER, _probe(pyds, Gst, args.out, log), None)
        pipeline.set_state(Gst.State.PLAYING)
        try:
            loop.run()
        except KeyboardInterrupt:
            failed.append("interrupted")
        finally:
            pipeline.set_state(Gst.State.NULL)
    if failed:
        print(f"Error: the pipeline stopped: {failed[0]}", file=sys.stderr)
        return 1
    print(f"wrote nvinfer's masks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
