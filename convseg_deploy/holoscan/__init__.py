"""``convseg-deploy holoscan``: a Holoscan application from a bundle, and the parts it runs.

``writer`` writes APP/app.py, APP/app.yaml and APP/README.md; ``app.py`` calls
``application.main`` with its yaml. On a GPU the application wires NVIDIA's operators
(``gpu_graph``: FormatConverterOp -> InferenceOp -> SegmentationPostprocessorOp -> HolovizOp);
without one, Python operators that call our runners (``operators``, CPU data only). ``sdk``
imports the wheel and each operator only on the path that uses it: several of the operators'
libraries need CUDA libraries a CPU machine lacks.
"""
