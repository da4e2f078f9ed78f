"""convseg_deploy.exporters.tensorrt_builder against the recording TensorRT double, in its 10.x and 11.x flavours."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from convseg_deploy.config import PreprocessSpec
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.fsutil import sha256_file
from convseg_deploy.artifacts.sidecar import check_engine_compat, read_sidecar, sidecar_path
from convseg_deploy.exporters.tensorrt_builder import build_engine
from convseg_deploy.hardware import gpu as device
from tests.fakes import install, make_fake_pycuda, make_fake_tensorrt
from tests.fakes.fake_tensorrt import CACHE_MAGIC
from tests.fakes.onnx_models import tiny_onnx


@pytest.fixture
def trt(flavour: str, monkeypatch: pytest.MonkeyPatch):
    module = make_fake_tensorrt(flavour)
    install(monkeypatch, module)
    return module


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "model.fp16.onnx")


def names(calls: list[tuple]) -> list[str]:
    return [call[0] for call in calls]


def expected_network_flags(trt) -> int:
    # 10.x: opt in to strong typing (STRONGLY_TYPED is bit 1 there); 11.x: always on, flag deprecated.
    return 0 if trt.__version__.startswith("11.") else 1 << 1


def test_builds_strongly_typed_network_without_weak_typing_apis(trt, onnx_file: Path) -> None:
    build_engine(onnx_file, opt_batch=2, max_batch=4)

    assert ("create_network", expected_network_flags(trt)) in trt.calls
    assert ("parse_from_file", str(onnx_file)) in trt.calls
    assert ("set_optimization_profile_shape", "image", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)) in trt.calls
    assert not [c for c in trt.calls if c[0] in ("deprecated", "set_flag")]
    built = names(trt.calls)
    assert built.index("create_network") < built.index("parse_from_file") < built.index("build_serialized_network")
    for option in ("set_memory_pool_limit", "builder_optimization_level", "hardware_compatibility_level"):
        assert option not in built  # TensorRT's own defaults unless asked


def test_engine_and_sidecar_are_written_next_to_the_onnx(trt, onnx_file: Path) -> None:
    sidecar = build_engine(onnx_file, opt_batch=2, max_batch=4)

    engine = onnx_file.with_name("model.fp16.engine")
    assert engine.is_file()
    assert sidecar_path(engine) == onnx_file.with_name("model.fp16.engine.json")
    assert json.loads(sidecar_path(engine).read_text()) == sidecar == read_sidecar(engine)
    assert sidecar["tensorrt_version"] == trt.__version__
    assert (sidecar["gpu_name"], sidecar["compute_capability"]) == ("NVIDIA H100", "9.0")
    assert sidecar["precision"] == "fp16"
    assert sidecar["profile"] == {"input": "image", "min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}
    assert sidecar["onnx_file"] == "model.fp16.onnx"
    assert sidecar["onnx_sha256"] == sha256_file(onnx_file)
    assert sidecar["engine_file"] == "model.fp16.engine"
    assert sidecar["engine_sha256"] == sha256_file(engine)
    assert sidecar["preprocess"] == PreprocessSpec(size=(64, 64)).to_dict()
    assert sidecar["threshold"] == 0.5
    assert sidecar["hardware_compat"] == "none" and sidecar["version_compatible"] is False
    assert sidecar["dla_core"] is None and sidecar["gpu_fallback"] is False
    # where it may run: the full TensorRT version, CUDA, CPU architecture and OS of the build machine
    assert sidecar["cuda_version"] == "12.6"
    assert (sidecar["cpu_arch"], sidecar["os"]) == (device.host_platform()["cpu_arch"], device.host_platform()["os"])
    assert sidecar["builder_opt_level"] is None
    assert datetime.fromisoformat(sidecar["created"]).tzinfo is not None
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == [
        "model.fp16.engine", "model.fp16.engine.json", "model.fp16.onnx"]  # no temp files left


def test_out_path_can_be_anywhere(trt, onnx_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "engines" / "h100" / "convseg.engine"
    build_engine(onnx_file, out)
    assert out.is_file() and (out.parent / "convseg.engine.json").is_file()


def test_workspace_opt_level_and_hardware_compat_reach_the_config(trt, onnx_file: Path) -> None:
    sidecar = build_engine(onnx_file, workspace_mib=512, builder_opt_level=5, hardware_compat=True)

    assert ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 512 << 20) in trt.calls
    assert ("builder_optimization_level", 5) in trt.calls
    assert ("hardware_compatibility_level", trt.HardwareCompatibilityLevel.AMPERE_PLUS) in trt.calls
    assert sidecar["hardware_compat"] == "ampere_plus" and sidecar["builder_opt_level"] == 5
    assert sidecar["workspace_mib"] == 512


def test_hardware_compat_needs_an_ampere_gpu_to_build_on(flavour, monkeypatch, onnx_file: Path) -> None:
    install(monkeypatch, make_fake_tensorrt(flavour, gpu=("Tesla T4", (7, 5))))
    with pytest.raises(ConvSegError, match="Ampere or newer GPU; Tesla T4 is sm_75"):
        build_engine(onnx_file, hardware_compat=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"builder_opt_level": 6}, "must be 0-5"),
        ({"builder_opt_level": -1}, "must be 0-5"),
        ({"workspace_mib": 0}, "positive number of MiB"),
        ({"min_batch": 0}, "positive integers"),
        ({"min_batch": 4, "opt_batch": 2}, "min <= opt <= max"),
        ({"opt_batch": 16, "max_batch": 8}, "min <= opt <= max"),
        ({"min_size": (32, 32)}, "fixed size 64x64"),
    ],
)
def test_bad_options_are_refused_before_building(trt, onnx_file: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConvSegError, match=message):
        build_engine(onnx_file, **kwargs)
    assert "build_serialized_network" not in names(trt.calls)
    assert not onnx_file.with_suffix(".engine").exists()


def test_dynamic_size_onnx_takes_sizes_from_the_arguments(trt, tmp_path: Path) -> None:
    onnx_file = tiny_onnx(tmp_path / "dyn.onnx", dynamic_size=True)
    with pytest.raises(ConvSegError, match="dynamic height/width"):
        build_engine(onnx_file)

    sidecar = build_engine(onnx_file, max_batch=2, min_size=(128, 160), opt_size=(256, 256), max_size=(512, 512))
    assert ("set_optimization_profile_shape", "image", (1, 3, 128, 160), (1, 3, 256, 256), (2, 3, 512, 512)) in trt.calls
    assert sidecar["profile"]["max"] == [2, 3, 512, 512]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (((100, 128), (256, 256), (512, 512)), "multiples of 16"),
        (((256, 256), (128, 128), (512, 512)), "heights must satisfy min <= opt <= max"),
        (((256, 512), (256, 256), (512, 512)), "widths must satisfy min <= opt <= max"),
    ],
)
def test_dynamic_sizes_are_validated(trt, tmp_path: Path, sizes: tuple, message: str) -> None:
    onnx_file = tiny_onnx(tmp_path / "dyn.onnx", dynamic_size=True)
    with pytest.raises(ConvSegError, match=message):
        build_engine(onnx_file, min_size=sizes[0], opt_size=sizes[1], max_size=sizes[2])


def test_timing_cache_is_created_then_loaded_and_saved(trt, onnx_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "caches" / "h100.cache"
    build_engine(onnx_file, timing_cache=cache)
    assert ("create_timing_cache", 0) in trt.calls and ("set_timing_cache", False) in trt.calls
    first = cache.read_bytes()
    assert first == CACHE_MAGIC + b"1"

    trt.calls.clear()
    build_engine(onnx_file, timing_cache=cache)
    assert ("create_timing_cache", len(first)) in trt.calls
    assert names(trt.calls).index("get_timing_cache") > names(trt.calls).index("build_serialized_network")
    assert cache.read_bytes() == CACHE_MAGIC + b"2"


def test_without_a_cache_file_an_empty_cache_is_used_and_nothing_saved(trt, onnx_file: Path) -> None:
    build_engine(onnx_file)
    assert ("create_timing_cache", 0) in trt.calls
    assert "get_timing_cache" not in names(trt.calls)


def test_foreign_timing_cache_is_refused(trt, onnx_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "other-gpu.cache"
    cache.write_bytes(b"made by a different TensorRT")
    with pytest.raises(ConvSegError, match="other-gpu.cache was made by another TensorRT version or GPU"):
        build_engine(onnx_file, timing_cache=cache)
    assert not onnx_file.with_suffix(".engine").exists()


def test_parser_error_names_node_op_and_file(flavour, monkeypatch, onnx_file: Path) -> None:
    install(monkeypatch, make_fake_tensorrt(flavour, fail_parse=True))
    with pytest.raises(ConvSegError) as info:
        build_engine(onnx_file)
    message = str(info.value)
    assert "node 'head/Conv' (op Conv" in message and str(onnx_file) in message
    assert "\n" not in message
    assert not onnx_file.with_suffix(".engine").exists()


def test_failed_build_leaves_no_engine_and_no_sidecar(flavour, monkeypatch, onnx_file: Path) -> None:
    install(monkeypatch, make_fake_tensorrt(flavour, fail_build=True))
    with pytest.raises(ConvSegError, match="TensorRT could not build an engine from"):
        build_engine(onnx_file, timing_cache=onnx_file.with_suffix(".cache"))
    assert [p.name for p in onnx_file.parent.iterdir()] == ["model.fp16.onnx"]


def test_missing_tensorrt_says_how_to_install_it(monkeypatch, onnx_file: Path) -> None:
    install(monkeypatch, None)
    with pytest.raises(MissingDependencyError) as info:
        build_engine(onnx_file)
    message = str(info.value)
    assert 'pip install "convseg-deploy[tensorrt]"' in message and "TensorRT is not installed" in message
    assert "\n" not in message


def test_no_gpu_is_a_missing_dependency(flavour, monkeypatch, onnx_file: Path) -> None:
    install(monkeypatch, make_fake_tensorrt(flavour, gpu=None))
    with pytest.raises(MissingDependencyError, match="no CUDA GPU found"):
        build_engine(onnx_file)


def test_onnx_without_metadata_is_refused(trt, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ConvSegError, match="no convseg_deploy metadata"):
        build_engine(bare)


# The double itself must fail loudly where real TensorRT would, or the tests above prove nothing.
@pytest.mark.parametrize(
    "touch",
    [
        lambda trt, b, c: trt.BuilderFlag.FP16,
        lambda trt, b, c: trt.BuilderFlag.INT8,
        lambda trt, b, c: trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
        lambda trt, b, c: trt.IInt8EntropyCalibrator2,
        lambda trt, b, c: c.int8_calibrator,
        lambda trt, b, c: b.platform_has_fast_fp16,
        lambda trt, b, c: b.platform_has_fast_int8,
    ],
)
def test_fake_flags_weak_typing_apis(flavour, monkeypatch, touch) -> None:
    trt = make_fake_tensorrt(flavour)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    if flavour.startswith("11."):
        with pytest.raises(AttributeError, match="removed in TensorRT 11"):
            touch(trt, builder, config)
    else:
        touch(trt, builder, config)
        assert trt.calls[-1][0] == "deprecated"


def test_fake_flags_binding_index_apis(flavour, onnx_file: Path) -> None:
    trt = make_fake_tensorrt(flavour)
    gpu = make_fake_pycuda()["pycuda.driver"].Device(0).retain_primary_context()
    gpu.push()  # the runtime side needs a current CUDA context, as the real one does
    try:
        _binding_index_apis_fail(trt, onnx_file)
    finally:
        gpu.pop()


def _binding_index_apis_fail(trt, onnx_file: Path) -> None:
    builder = trt.Builder(trt.Logger())
    with pytest.raises(AttributeError, match="has no IBuilderConfig.int8_calibrator_typo"):
        builder.create_builder_config().int8_calibrator_typo = 1
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(onnx_file))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    context = engine.create_execution_context()
    for owner, name in [(engine, "num_bindings"), (engine, "get_binding_shape"), (context, "execute_async_v2"),
                        (context, "set_binding_shape"), (builder, "build_engine")]:
        with pytest.raises(AttributeError, match="removed in TensorRT 10"):
            getattr(owner, name)


# check_engine_compat and read_sidecar are pure: no TensorRT needed.
SIDECAR = {"engine_file": "model.fp16.engine", "onnx_file": "model.fp16.onnx", "tensorrt_version": "10.3.0.30",
           "cuda_version": "12.6", "cpu_arch": "aarch64", "os": "linux", "compute_capability": "8.7",
           "hardware_compat": "none", "profile": {"input": "image", "min": [1, 3, 256, 256], "opt": [1, 3, 256, 256],
                                                  "max": [8, 3, 256, 256]}}
ORIN = {"tensorrt_version": "10.3.0.30", "cuda_version": "12.6", "cpu_arch": "aarch64", "os": "linux",
        "compute_capability": "8.7", "gpu_name": "Orin"}
H100 = {"tensorrt_version": "10.3.0.30", "cuda_version": "12.6", "cpu_arch": "x86_64", "os": "linux",
        "compute_capability": "9.0", "gpu_name": "NVIDIA H100"}
REBUILD = ("rebuild it here with 'convseg-deploy build-engine model.fp16.onnx --out model.fp16.engine --min-batch 1 "
           "--opt-batch 1 --max-batch 8'")


def test_compatible_engine_gives_none() -> None:
    assert check_engine_compat(SIDECAR, ORIN) is None
    assert check_engine_compat(SIDECAR, ORIN | {"cuda_version": "12.2"}) is None  # CUDA minor versions are compatible


@pytest.mark.parametrize(
    ("here", "differs"),
    [
        ({"tensorrt_version": "10.3.0.26"}, "TensorRT version"),  # the build number counts
        ({"tensorrt_version": "10.3.1.30"}, "TensorRT version"),
        ({"cuda_version": "13.0"}, "CUDA major version"),
        ({"cpu_arch": "x86_64"}, "CPU architecture"),
        ({"os": "windows"}, "OS"),
        ({"compute_capability": "8.6"}, "GPU architecture"),
    ],
)
def test_each_mismatch_is_named_with_the_rebuild_command(here: dict, differs: str) -> None:
    message = check_engine_compat(SIDECAR, ORIN | here)
    assert message is not None and message.endswith(f"({differs} differ): {REBUILD}")
    assert message.startswith("engine model.fp16.engine was built for TensorRT 10.3.0.30, CUDA 12.6, aarch64/linux, "
                              "sm_87; this device has ")


def test_version_or_gpu_mismatch_says_what_to_do() -> None:
    message = check_engine_compat(SIDECAR, H100 | {"tensorrt_version": "10.13.0.35"})
    assert message == (
        "engine model.fp16.engine was built for TensorRT 10.3.0.30, CUDA 12.6, aarch64/linux, sm_87; this device has "
        "TensorRT 10.13.0.35, CUDA 12.6, x86_64/linux, sm_90 (TensorRT version, CPU architecture, GPU architecture "
        f"differ): {REBUILD}"
    )


def test_hardware_compat_engines_run_on_any_ampere_plus_gpu_but_same_version() -> None:
    portable = SIDECAR | {"hardware_compat": "ampere_plus", "cpu_arch": "x86_64"}
    assert check_engine_compat(portable, H100) is None
    assert check_engine_compat(portable, H100 | {"compute_capability": "8.0"}) is None
    assert "Ampere or newer" in check_engine_compat(portable, H100 | {"compute_capability": "7.5"})
    assert "TensorRT version" in check_engine_compat(portable, H100 | {"tensorrt_version": "11.4.0"})
    # the case: an x86 hardware-compatible engine on a Jetson Orin is refused before deserialising
    assert "(CPU architecture differ)" in check_engine_compat(portable, ORIN)
    assert check_engine_compat(SIDECAR | {"hardware_compat": True, "cpu_arch": "x86_64"}, H100) is None  # older sidecars


def test_version_compatible_engines_run_on_later_versions_of_the_same_major() -> None:
    flexible = SIDECAR | {"version_compatible": True}
    assert check_engine_compat(flexible, ORIN | {"tensorrt_version": "10.13.0.35"}) is None
    assert "TensorRT version" in check_engine_compat(flexible, ORIN | {"tensorrt_version": "10.2.0.1"})
    assert "TensorRT version" in check_engine_compat(flexible, ORIN | {"tensorrt_version": "11.4.0"})
    assert check_engine_compat(flexible, ORIN | {"tensorrt_version": "11.4.0"}).endswith("--version-compatible'")


def test_read_sidecar_errors_are_clear(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(ConvSegError, match=r"has no sidecar m\.engine\.json.*build-engine"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ConvSegError, match="is not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"tensorrt_version": "10.3.0"}))
    with pytest.raises(ConvSegError, match="lacks cuda_version, cpu_arch, os, compute_capability, hardware_compat, "
                                           "precision, profile, preprocess, threshold"):
        read_sidecar(engine)


def test_cuda_device_info_falls_back_to_nvidia_smi(monkeypatch) -> None:
    import subprocess

    from tests.fakes import block

    block(monkeypatch, "pycuda", "pycuda.driver", "torch")
    monkeypatch.setattr(device.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    answer = subprocess.CompletedProcess([], 0, stdout="0, NVIDIA A100-SXM4-80GB, 8.0, 81920, 550.54.15\n"
                                                       "1, NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15\n", stderr="")
    monkeypatch.setattr(device.subprocess, "run", lambda *a, **k: answer)
    assert device.cuda_device_info() == ("NVIDIA A100-SXM4-80GB", "8.0")
    assert device.cuda_device_info(1) == ("NVIDIA H100 80GB HBM3", "9.0")
    assert device.cuda_device_info(2) is None
    assert device.list_gpus()[1] == {"index": 1, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                                     "memory_mib": 81559, "driver": "550.54.15"}

    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    assert device.cuda_device_info() is None


# ------------------------------------------------------------------ what TensorRT's parser refuses


def _with_node(path: Path, node_op: str) -> Path:
    """The tiny model with its Conv swapped for ``node_op`` (same inputs and output)."""
    import onnx

    model = onnx.load(str(path))
    model.graph.node[0].op_type = node_op
    onnx.save(model, str(path))
    return path


def test_parser_refuses_an_operator_tensorrt_has_no_importer_for(trt, onnx_file: Path) -> None:
    _with_node(onnx_file, "ConvInteger")  # ONNX Runtime's integer-op format; TensorRT has no importer
    with pytest.raises(ConvSegError, match=r"node 'head/Conv' \(op ConvInteger, #0\): No importer registered for op: "
                                           r"ConvInteger\..* \[8\]; re-export"):  # 8: ErrorCode.UNSUPPORTED_NODE
        build_engine(onnx_file)
    assert ("build_serialized_network",) not in trt.calls and not onnx_file.with_suffix(".engine").exists()


def test_parser_refuses_int32_dequantize_of_a_quantized_bias(trt, onnx_file: Path, tmp_path: Path) -> None:
    """ONNX Runtime's quantize_static quantizes Conv biases to INT32 by default: TensorRT refuses that."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from convseg_deploy.artifacts.onnx_meta import get_metadata, set_metadata
    from convseg_deploy.exporters.int8 import BatchReader
    import onnx

    quantized = tmp_path / "model.int8.onnx"
    batches = [np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)]
    quantize_static(str(onnx_file), str(quantized), BatchReader(batches), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    model = onnx.load(str(quantized))
    set_metadata(model, {**get_metadata(onnx.load(str(onnx_file)), str(onnx_file)), "precision": "int8"})
    onnx.save(model, str(quantized))
    bias_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and "bias" in n.input[0]]
    assert len(bias_dq) == 1
    with pytest.raises(ConvSegError) as info:
        build_engine(quantized)
    index = [n.name for n in model.graph.node].index(bias_dq[0].name)
    assert f"node '{bias_dq[0].name}' (op DequantizeLinear, #{index}): " in str(info.value)
    assert "got INT32" in str(info.value) and "\n" not in str(info.value)


def test_set_shape_refusal_and_an_invalid_profile_are_errors_not_engines(trt, onnx_file: Path) -> None:
    """The builder checks TensorRT's own reports: set_shape raising RuntimeError (setDimensions
    refused the shape) and add_optimization_profile returning -1 (an unordered profile)."""
    from convseg_deploy.exporters.tensorrt_builder import _add_profile

    builder = trt.Builder(trt.Logger())
    config = builder.create_builder_config()
    with pytest.raises(ConvSegError, match=r"TensorRT refused the input shapes 1x3x64x64 / 1x3x-64x64 / 1x3x64x64 .*"
                                           r"Shape provided for opt is inconsistent"):
        _add_profile(builder, config, "image", {"min": [1, 3, 64, 64], "opt": [1, 3, -64, 64], "max": [1, 3, 64, 64]}, onnx_file)
    with pytest.raises(ConvSegError, match=r"optimization profile 4x3x64x64 / 2x3x64x64 / 8x3x64x64 .* invalid"):
        _add_profile(builder, config, "image", {"min": [4, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [8, 3, 64, 64]}, onnx_file)
    assert config.profiles == []
    _add_profile(builder, config, "image", {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [8, 3, 64, 64]}, onnx_file)
    assert len(config.profiles) == 1
