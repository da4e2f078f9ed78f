"""The README.md written into a generated Triton model repository: how to serve it, how to call it."""

from __future__ import annotations

from convseg_deploy.exporters.triton_spec import RepoOptions, Served

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"


def _model_line(model: Served) -> str:
    io = ("uint8 `frames` N x {h} x {w} x 3 RGB in; uint8 `mask` (0/255) and float32 `probability` N x {h} x {w} out"
          if model.platform != "tensorrt_plan" else
          "float32 `image` N x 3 x {h} x {w} (preprocessed as the sidecar says) in; float32 `logits` N x 1 x {h} x {w} out")
    return (f"| `{model.name}` | `{model.platform}` | {model.precision} | {model.max_batch} | "
            + io.format(h=model.size[0], w=model.size[1]) + " |")


def repository_readme(served: list[Served], options: RepoOptions) -> str:
    frames_model = next((m for m in served if m.platform != "tensorrt_plan"), served[0])
    h, w = frames_model.size
    gpu = "--gpus all " if options.kind == "gpu" else ""
    lines = [
        "# Triton model repository (written by `convseg-deploy triton`)",
        "",
        "| model | platform | precision | max batch | tensors |",
        "|---|---|---|---|---|",
        *(_model_line(m) for m in served),
        "",
        f"Dynamic batching waits up to {options.queue_delay_us} us for batches of "
        f"{', '.join(map(str, options.preferred_batch))}; {options.instances} instance(s) per "
        f"{'GPU' if options.kind == 'gpu' else 'server (CPU)'}.",
        "",
        "## Serve",
        "",
        "```",
        f"docker run --rm {gpu}--shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\",
        f"  -v $PWD:/models {TRITON_IMAGE} tritonserver --model-repository=/models",
        "```",
        "",
        "Python-backend models need `numpy` and `onnxruntime` (`onnxruntime-gpu` on GPUs) in the",
        "server's Python (`pip install` them in the container). The `nvidia-pytriton` wheel's",
        "`tritonserver` has the Python backend only: `python -m benchmarks.triton_local REPO` runs it.",
        "",
        "## Call (gRPC, nine lines)",
        "",
        "```python",
        "import cv2, tritonclient.grpc as grpc",
        'client = grpc.InferenceServerClient("localhost:8001")',
        'rgb = cv2.cvtColor(cv2.imread("frame.jpg"), cv2.COLOR_BGR2RGB)',
        f"frames = cv2.resize(rgb, ({w}, {h}))[None]  # 1 x {h} x {w} x 3 uint8",
        'inp = grpc.InferInput("frames", list(frames.shape), "UINT8")',
        "inp.set_data_from_numpy(frames)",
        f'result = client.infer("{frame_model_name(served)}", [inp], outputs=[grpc.InferRequestedOutput("mask")])',
        'mask = result.as_numpy("mask")[0]  # uint8, 255 = polyp',
        'cv2.imwrite("mask.png", cv2.resize(mask, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST))',
        'print("polyp pixels:", int((mask > 0).sum()))',
        "```",
        "",
        "Load test: `convseg-deploy bench --backends triton --triton-url localhost:8001 --concurrency 1,4,16 --data DIR`.",
        "",
    ]
    return "\n".join(lines)


def frame_model_name(served: list[Served]) -> str:
    return next((m.name for m in served if m.platform != "tensorrt_plan"), served[0].name)
