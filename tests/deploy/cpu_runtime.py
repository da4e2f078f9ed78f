"""What ``predict --backend auto`` uses for ONNX files on this CPU: OpenVINO on Intel CPUs where it
is installed, else ONNX Runtime's CPU provider (tests that check the choice read it from here)."""

from __future__ import annotations

from convseg_deploy.deploy.select import openvino_preferred

CPU_RUNTIME = ("openvino", "cpu") if openvino_preferred() else ("onnxruntime", "cpu")
CPU_LABEL = "OpenVINO (CPU)" if openvino_preferred() else "ONNX Runtime (CPU)"
