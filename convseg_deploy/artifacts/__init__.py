"""Facts about artifacts, in one place that every layer reads.

``exporters`` (building), ``convseg_deploy.runtime`` (running), ``convseg_deploy.deploy`` and
``benchmarks`` all import from here and never from each other:

- ``names``: precision names, file names, tensor names, agreement thresholds, format tags.
- ``onnx_meta``: the ``convseg_deploy`` metadata entry of every ONNX file (preprocessing, threshold).
- ``sidecar``: the ``.engine.json`` sidecar of TensorRT engines and the rules for where an engine runs.
- ``device``: the one CUDA device probe.
- ``manifest``: the export/bundle ``manifest.json`` and the model records behind it.

Importing this package imports nothing heavy (no torch, onnx, onnxruntime or tensorrt).
"""
