"""TensorRTRunner over the TensorRT and pycuda doubles, plus one real-GPU test (marked gpu)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.runtime.tensorrt_runner import TensorRTRunner
from convseg_deploy.hardware.gpu import cuda_device_info
from convseg_deploy.artifacts.sidecar import sidecar_path
from convseg_deploy.exporters.tensorrt_builder import build_engine
from tests.fakes import HEAP, install, make_fake_pycuda, make_fake_tensorrt
from tests.fakes.fake_pycuda import current_context
from tests.fakes.onnx_models import tiny_onnx, tiny_reference

RNG = np.random.default_rng(0)


def frames(n: int, size: int = 64) -> np.ndarray:
    return RNG.random((n, 3, size, size), dtype=np.float32)


@pytest.fixture
def trt(flavour: str, monkeypatch: pytest.MonkeyPatch):
    module = make_fake_tensorrt(flavour)
    module.pycuda = install(monkeypatch, module)  # keep the driver at hand for its call log
    return module


@pytest.fixture
def engine(trt, tmp_path: Path) -> Path:
    onnx_file = tiny_onnx(tmp_path / "model.fp16.onnx")
    build_engine(onnx_file, opt_batch=2, max_batch=4)
    trt.calls.clear()
    return onnx_file.with_suffix(".engine")


def driver_calls(trt) -> list[tuple]:
    return trt.pycuda["pycuda.driver"].calls


def test_infer_goes_through_named_tensors(trt, engine: Path) -> None:
    batch = frames(2)
    with TensorRTRunner(engine) as runner:
        out = runner.infer(batch)
        runner.synchronize()

    assert out.shape == (2, 1, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, batch.mean(axis=1, keepdims=True), rtol=1e-6)  # the double's "model"
    assert ("set_input_shape", "image", (2, 3, 64, 64)) in trt.calls
    assert ("set_tensor_address", "image") in trt.calls and ("set_tensor_address", "logits") in trt.calls
    assert ("get_tensor_profile_shape", "image", 0) in trt.calls
    called = [c[0] for c in trt.calls]
    assert called.index("set_tensor_address") < called.index("execute_async_v3")
    assert runner.info.backend == "tensorrt" and runner.info.precision == "fp16"
    assert runner.info.artifact == str(engine)
    assert runner.preprocess == PreprocessSpec(size=(64, 64)) and runner.threshold == 0.5


def test_buffers_are_reused_and_grown(trt, engine: Path) -> None:
    with TensorRTRunner(engine) as runner:
        runner.infer(frames(1))
        runner.infer(frames(1))
        allocs = [c for c in driver_calls(trt) if c[0] == "mem_alloc"]
        assert len(allocs) == 2  # one input and one output buffer, reused by the second call
        big = frames(4)
        np.testing.assert_allclose(runner.infer(big), big.mean(axis=1, keepdims=True), rtol=1e-6)
        assert len([c for c in driver_calls(trt) if c[0] == "mem_alloc"]) == 4
        assert len([c for c in driver_calls(trt) if c[0] == "mem_free"]) == 2
        small = frames(1)
        np.testing.assert_allclose(runner.infer(small), small.mean(axis=1, keepdims=True), rtol=1e-6)


def test_deactivate_frees_device_memory_and_pops_the_context(trt, engine: Path) -> None:
    before = set(HEAP.blocks)
    with TensorRTRunner(engine) as runner:
        runner.infer(frames(3))
        assert set(HEAP.blocks) - before
    assert set(HEAP.blocks) == before
    called = [c[0] for c in driver_calls(trt)]
    # made current around load, infer and release, and popped after each: nothing stays current
    assert called.count("context_push") == called.count("context_pop") >= 3
    assert current_context() is None
    assert called[-1] == "context_detach"


def test_batch_above_the_profile_says_how_to_rebuild(trt, engine: Path) -> None:
    with TensorRTRunner(engine) as runner:
        with pytest.raises(ConvSegError, match=r"batch 5 exceeds the engine's profile \(max 4\): rebuild with --max-batch"):
            runner.infer(frames(5))
        assert "set_input_shape" not in [c[0] for c in trt.calls]


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 1, 64, 64), "N x 3 x H x W"), ((64, 64, 3), "N x 3 x H x W"), ((1, 3, 32, 32), "outside the engine's profile")],
)
def test_wrong_shapes_are_refused(trt, engine: Path, shape: tuple, message: str) -> None:
    with TensorRTRunner(engine) as runner, pytest.raises(ConvSegError, match=message):
        runner.infer(np.zeros(shape, dtype=np.float32))


def test_dynamic_size_engine_runs_any_size_in_its_profile(trt, tmp_path: Path) -> None:
    onnx_file = tiny_onnx(tmp_path / "dyn.onnx", dynamic_size=True)
    build_engine(onnx_file, max_batch=2, min_size=(32, 32), opt_size=(64, 64), max_size=(128, 128))
    with TensorRTRunner(onnx_file.with_suffix(".engine")) as runner:
        batch = RNG.random((2, 3, 96, 48), dtype=np.float32)
        assert runner.infer(batch).shape == (2, 1, 96, 48)
        with pytest.raises(ConvSegError, match="image size 160x64 is outside"):
            runner.infer(np.zeros((1, 3, 160, 64), dtype=np.float32))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tensorrt_version": "10.3.0.30", "compute_capability": "8.7"},
         r"built for TensorRT 10\.3\.0\.30, .* sm_87; .*\(TensorRT version, GPU architecture differ\)"),
        ({"compute_capability": "8.6"}, r"sm_86; this device has .*\(GPU architecture differ\)"),
        ({"cpu_arch": "aarch64"}, r"aarch64/linux, sm_90; this device has .*x86_64/linux.*\(CPU architecture differ\)"),
        ({"cuda_version": "13.0"}, r"CUDA 13\.0.*this device has .*CUDA 12\.6.*\(CUDA major version differ\)"),
    ],
)
def test_sidecar_mismatch_is_reported_before_deserialising(trt, engine: Path, change: dict, expected: str,
                                                           monkeypatch) -> None:
    from convseg_deploy.hardware import gpu as device

    monkeypatch.setattr(device, "host_platform", lambda: {"cpu_arch": "x86_64", "os": "linux"})
    path = sidecar_path(engine)
    sidecar = json.loads(path.read_text())
    path.write_text(json.dumps(sidecar | {"cpu_arch": "x86_64", "os": "linux"} | change))
    with pytest.raises(ConvSegError, match=expected) as info:
        TensorRTRunner(engine).activate()
    assert f"this device has TensorRT {trt.__version__}, CUDA 12.6, x86_64/linux, sm_90" in str(info.value)
    assert "rebuild it here with 'convseg-deploy build-engine model.fp16.onnx --out model.fp16.engine --min-batch 1 " \
           "--opt-batch 2 --max-batch 4'" in str(info.value)
    assert "deserialize_cuda_engine" not in [c[0] for c in trt.calls]
    assert current_context() is None


def test_engine_from_another_gpu_is_refused(flavour, monkeypatch, tmp_path: Path) -> None:
    builder_side = make_fake_tensorrt(flavour, gpu=("NVIDIA A100", (8, 0)))
    install(monkeypatch, builder_side)
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    build_engine(onnx_file)
    install(monkeypatch, make_fake_tensorrt(flavour))  # now "on" an H100
    with pytest.raises(ConvSegError, match="sm_80; this device has .*sm_90 .*: rebuild it here"):
        TensorRTRunner(onnx_file.with_suffix(".engine")).activate()


def test_undeserialisable_engine_is_reported_and_cleaned_up(trt, engine: Path) -> None:
    engine.write_bytes(b"not an engine")
    runner = TensorRTRunner(engine)
    with pytest.raises(ConvSegError, match="could not load engine .*rebuild it here"):
        runner.activate()
    called = [c[0] for c in driver_calls(trt)]
    assert called.count("context_push") == called.count("context_pop") >= 1
    assert current_context() is None and "mem_alloc" not in called


def test_missing_sidecar_or_engine(trt, engine: Path) -> None:
    sidecar_path(engine).unlink()
    with pytest.raises(ConvSegError, match="has no sidecar"):
        TensorRTRunner(engine).activate()
    with pytest.raises(ConvSegError, match="not found"):
        TensorRTRunner(engine.with_name("nope.engine")).activate()


def test_missing_pycuda_or_tensorrt_says_how_to_install(flavour, monkeypatch, tmp_path: Path) -> None:
    trt = make_fake_tensorrt(flavour)
    install(monkeypatch, trt)
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    build_engine(onnx_file)
    engine = onnx_file.with_suffix(".engine")

    install(monkeypatch, trt, pycuda_modules={})
    with pytest.raises(MissingDependencyError, match=r'pycuda is not installed.*pip install "convseg-deploy\[tensorrt\]"'):
        TensorRTRunner(engine).activate()
    install(monkeypatch, None)
    with pytest.raises(MissingDependencyError, match=r'TensorRT is not installed.*pip install "convseg-deploy\[tensorrt\]"'):
        TensorRTRunner(engine).activate()
    from convseg_deploy.hardware import gpu as device

    install(monkeypatch, trt, pycuda_modules=make_fake_pycuda(gpu=None))
    monkeypatch.setattr(device, "gpu_expected", lambda: False)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU found"):
        TensorRTRunner(engine).activate()
    # A machine with an NVIDIA driver whose CUDA fails to initialise is broken, not GPU-less: not a skip.
    monkeypatch.setattr(device, "gpu_expected", lambda: True)
    with pytest.raises(ConvSegError, match="the CUDA driver failed to initialise") as info:
        TensorRTRunner(engine).activate()
    assert not isinstance(info.value, MissingDependencyError)


def test_cuda_graph_is_not_faked(trt, engine: Path) -> None:
    with pytest.raises(ConvSegError, match="CUDA graph replay is not implemented"):
        TensorRTRunner(engine, use_cuda_graph=True).activate()


def test_infer_needs_activate(trt, engine: Path) -> None:
    with pytest.raises(ConvSegError, match="not active"):
        TensorRTRunner(engine).infer(frames(1))


def test_one_runner_serves_two_threads(trt, engine: Path) -> None:
    """Each thread has no CUDA context of its own: the runner makes one current per call."""
    from concurrent.futures import ThreadPoolExecutor

    inputs = [frames(1 + i % 2) for i in range(16)]
    with TensorRTRunner(engine) as runner:
        with ThreadPoolExecutor(max_workers=2) as pool:
            outputs = list(pool.map(runner.infer, inputs))
    for batch, out in zip(inputs, outputs):
        np.testing.assert_allclose(out, batch.mean(axis=1, keepdims=True), rtol=1e-6)
    pushes = {c[2] for c in driver_calls(trt) if c[0] == "context_push"}
    assert len(pushes) >= 2  # pushed on the worker threads too, not only on the loading thread


def test_doubles_fail_without_a_current_context(trt, engine: Path) -> None:
    cuda = trt.pycuda["pycuda.driver"]
    with pytest.raises(cuda.LogicError, match="no currently active context"):
        cuda.mem_alloc(64)
    runner = TensorRTRunner(engine)
    runner.activate()
    try:
        # A runner that only pushed its context once, at load time (the old behaviour), fails here:
        with pytest.raises(RuntimeError, match="no context is current on this thread"):
            runner._context.execute_async_v3(runner._stream.handle)
        assert np.isfinite(runner.infer(frames(1))).all()  # the runner itself makes it current
    finally:
        runner.deactivate()


def test_execution_happens_only_at_stream_synchronisation(trt, engine: Path) -> None:
    cuda = trt.pycuda["pycuda.driver"]
    gpu = cuda.Device(0).retain_primary_context()
    gpu.push()
    try:
        runtime = trt.Runtime(trt.Logger())
        context = runtime.deserialize_cuda_engine(engine.read_bytes()).create_execution_context()
        stream = cuda.Stream()
        batch = frames(1)
        src, dst = cuda.mem_alloc(batch.nbytes), cuda.mem_alloc(batch.nbytes // 3)
        out = np.full((1, 1, 64, 64), -1.0, np.float32)
        assert context.set_input_shape("image", batch.shape)
        assert context.set_tensor_address("image", int(src)) and context.set_tensor_address("logits", int(dst))
        assert not context.set_tensor_address("nope", int(src)) and not context.set_tensor_address("logits", 0)
        cuda.memcpy_htod_async(src, batch, stream)
        assert context.execute_async_v3(stream.handle)
        cuda.memcpy_dtoh_async(out, dst, stream)
        assert (out == -1).all()  # queued, not run: reading before synchronising reads stale memory
        stream.synchronize()
        np.testing.assert_allclose(out, batch.mean(axis=1, keepdims=True), rtol=1e-6)
        src.free()
        dst.free()
    finally:
        gpu.pop()


def test_rejected_tensor_address_is_an_error(trt, engine: Path, monkeypatch) -> None:
    with TensorRTRunner(engine) as runner:
        monkeypatch.setattr(runner._context, "set_tensor_address", lambda name, address: False)
        with pytest.raises(ConvSegError, match="TensorRT rejected the device address of tensor 'image'"):
            runner.infer(frames(1))


def test_device_time_comes_from_cuda_events(trt, engine: Path) -> None:
    with TensorRTRunner(engine) as runner:
        assert runner.device_time_ms() is None
        runner.infer(frames(2))
        first = runner.device_time_ms()
        assert first is not None and 0 <= first < 1e3
    assert [c[0] for c in driver_calls(trt)].count("event_record") == 2


def test_second_gpu_builds_and_runs_its_own_engine(flavour, monkeypatch, tmp_path: Path) -> None:
    trt = make_fake_tensorrt(flavour)
    pycuda = install(monkeypatch, trt, make_fake_pycuda([("NVIDIA H100", (9, 0)), ("NVIDIA A100", (8, 0))]))
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    sidecar = build_engine(onnx_file, device=1)
    assert (sidecar["gpu_name"], sidecar["compute_capability"]) == ("NVIDIA A100", "8.0")
    pushed = [c[1] for c in pycuda["pycuda.driver"].calls if c[0] == "context_push"]
    assert pushed and set(pushed) == {1}  # the build ran with GPU 1 current
    engine = onnx_file.with_suffix(".engine")
    batch = frames(2)
    with TensorRTRunner(engine, device=1) as runner:
        np.testing.assert_allclose(runner.infer(batch), batch.mean(axis=1, keepdims=True), rtol=1e-6)
        assert runner.info.extra["gpu"] == "NVIDIA A100"
    with pytest.raises(ConvSegError, match=r"sm_80; this device has .*sm_90 \(GPU architecture differ\)"):
        TensorRTRunner(engine, device=0).activate()
    with pytest.raises(ConvSegError, match=r"CUDA device 2 does not exist: this machine has 2 GPU\(s\); pass --device 0 to 1"):
        TensorRTRunner(engine, device=2).activate()


def test_dla_engine_sets_the_runtime_core(flavour, monkeypatch, tmp_path: Path) -> None:
    orin = ("Orin", (8, 7))
    trt = make_fake_tensorrt(flavour, gpu=orin, dla_cores=2)
    install(monkeypatch, trt)
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    sidecar = build_engine(onnx_file, dla_core=1, gpu_fallback=True)
    assert sidecar["dla_core"] == 1 and sidecar["gpu_fallback"] is True
    assert ("set_flag", trt.BuilderFlag.GPU_FALLBACK) in trt.calls
    with TensorRTRunner(onnx_file.with_suffix(".engine")) as runner:
        assert runner.infer(frames(1)).shape == (1, 1, 64, 64)
    assert ("runtime_DLA_core", 1) in trt.calls
    with pytest.raises(ConvSegError, match="DLA core 2 does not exist: this device has 2 DLA core"):
        build_engine(onnx_file, dla_core=2)
    install(monkeypatch, make_fake_tensorrt(flavour, gpu=orin, dla_cores=0))  # same GPU, no DLA (e.g. Orin Nano)
    with pytest.raises(ConvSegError, match="runs on DLA core 1, and this device has 0 DLA core"):
        TensorRTRunner(onnx_file.with_suffix(".engine")).activate()
    with pytest.raises(ConvSegError, match="--gpu-fallback only applies to DLA engines"):
        build_engine(onnx_file, gpu_fallback=True)
    with pytest.raises(ConvSegError, match="cannot be hardware- or version-compatible"):
        build_engine(onnx_file, dla_core=0, version_compatible=True)


def test_version_compatible_engine_runs_on_a_later_tensorrt(monkeypatch, tmp_path: Path) -> None:
    older = make_fake_tensorrt("10.13.0")
    install(monkeypatch, older)
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    assert build_engine(onnx_file, version_compatible=True)["version_compatible"] is True
    assert ("set_flag", older.BuilderFlag.VERSION_COMPATIBLE) in older.calls
    install(monkeypatch, make_fake_tensorrt("10.14.1"))
    batch = frames(1)
    with TensorRTRunner(onnx_file.with_suffix(".engine")) as runner:  # host code allowed, or the fake refuses
        np.testing.assert_allclose(runner.infer(batch), batch.mean(axis=1, keepdims=True), rtol=1e-6)


def _real_tensorrt():
    """The installed tensorrt module, or a skip when it is absent, a test double or has no GPU."""
    trt = pytest.importorskip("tensorrt")
    location = Path(getattr(trt, "__file__", None) or "")
    fakes = Path(__file__).resolve().parents[1] / "fakes"
    if getattr(trt, "IS_FAKE", False) or not location.is_file() or fakes in location.resolve().parents:
        pytest.skip(f"tensorrt at {location or '?'} is not a real install")
    driver = pytest.importorskip("pycuda.driver")
    if getattr(driver, "IS_FAKE", False):
        pytest.skip("pycuda is a test double")
    if cuda_device_info() is None:
        pytest.skip("no CUDA GPU")
    return trt


@pytest.mark.gpu
def test_real_engine_builds_and_matches_the_onnx(tmp_path: Path) -> None:
    trt = _real_tensorrt()
    assert "tests.fakes" not in repr(sys.modules.get("tensorrt"))
    onnx_file = tiny_onnx(tmp_path / "tiny.onnx", precision="fp32")
    sidecar = build_engine(onnx_file, min_batch=1, opt_batch=2, max_batch=4, timing_cache=tmp_path / "t.cache")
    assert sidecar["tensorrt_version"] == trt.__version__
    batch = RNG.random((3, 3, 64, 64), dtype=np.float32)
    with TensorRTRunner(onnx_file.with_suffix(".engine")) as runner:
        out = runner.infer(batch)
        with pytest.raises(ConvSegError, match="exceeds the engine's profile"):
            runner.infer(frames(5))
    np.testing.assert_allclose(out, tiny_reference(batch), rtol=1e-3, atol=1e-3)
