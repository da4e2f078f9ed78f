"""``live``: segmentation of a camera, capture card, network stream, GStreamer pipeline or video
file as it plays, with overlays out and a latency that does not grow.

The stages, each a small class, joined by bounded queues and started and stopped in one place
(``pipeline.Pipeline``), after Holoscan's operators and Ultralytics' ``LoadStreams``::

    source --> Capture --(every frame, bounded queue)--------------------> Output --> record, stream, display, frames.jsonl
                  |                                                          ^
                  +--(newest frame only: Mailbox)--> Inference --(masks: MaskBoard)--+

- ``sources``: one class per kind of source (V4L2 camera through OpenCV, files and URLs through
  FFmpeg/PyAV, GStreamer pipelines through ``gst-launch-1.0``), each read by Capture alone.
- ``stages``: Capture, Inference, Output and the two hand-overs between them.
- ``segmenters``: a frame in, its mask out, on a local runner or a Triton server.
- ``outputs``: the recording, the output stream and the window.
- ``records``: the per-frame record (frames.jsonl) and the summary (summary.json): the one place
  for their keys and for the definitions of latency and mask age.
- ``journal``: writing those two files safely; ``status``: the once-a-second status line.
- ``run``: the library entry point (``live``); ``command``: the click command.

Nothing here imports torch; PyAV and the backends are imported when a run needs them.
"""
