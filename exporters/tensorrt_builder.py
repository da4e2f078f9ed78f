"""Build a TensorRT engine from an ONNX file, with a sidecar that says where it can run.

One build path serves TensorRT 10.x and 11.x: a strongly typed network. Precision comes from the
ONNX graph itself (FP16 weights and casts, Q/DQ nodes for INT8), never from builder flags, so
none of the weak-typing APIs that TensorRT 11 removed (``BuilderFlag.FP16``/``INT8``, calibrators,
``platform_has_fast_*``, precision-constraint flags) is touched here.

Every ``X.engine`` gets an ``X.engine.json`` sidecar (``convseg_deploy.artifacts.sidecar``) naming
where it may run: TensorRT build, CUDA major version, CPU architecture, OS, GPU and compute
capability, hardware-compatibility level, version compatibility and DLA core. The build runs on
CUDA device ``device`` (its primary context made current around the build).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

from convseg_deploy.hardware.gpu import PrimaryContext, engine_target, import_pycuda, import_tensorrt
from convseg_deploy.artifacts.io_variants import IO_TENSOR, io_of, spatial, variant
from convseg_deploy.artifacts.names import TENSORRT_INSTALL_HINT
from convseg_deploy.artifacts.onnx_meta import get_metadata, load_onnx, preprocess_from_metadata
from convseg_deploy.artifacts.sidecar import parse_capability, parse_version3, sidecar_path, sm_name
from convseg_deploy.config import check_image_size
from convseg_deploy.errors import ConvSegError, MissingDependencyError
from convseg_deploy.fsutil import atomic_path, sha256_file, write_json

Size = tuple[int, int]


def _read_onnx(path: Path) -> tuple[dict[str, Any], str, list[int | None]]:
    """The metadata, the I/O variant and the input's dims (None where dynamic), from one load.
    Every variant of ``artifacts.io_variants`` builds: ``image`` N x 3 x H x W (tensor I/O) or
    the frames/Holoscan/DeepStream input in its own layout."""
    model = load_onnx(path)
    meta = get_metadata(model, str(path))
    try:
        spec = variant(io_of(meta))
    except ConvSegError:
        raise ConvSegError(f"{path}: its metadata names an unknown I/O {io_of(meta)!r}: re-export it") from None
    inputs = {value.name: value for value in model.graph.input}
    if spec.input not in inputs:
        raise ConvSegError(
            f"{path} has no input named '{spec.input}' (it has {', '.join(inputs) or 'none'}): "
            "export it with 'convseg-deploy export'"
        )
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[spec.input].type.tensor_type.shape.dim]
    channels = dims[3] if spec.layout == "NHWC" and len(dims) == 4 else (dims[1] if len(dims) == 4 else 0)
    if len(dims) != 4 or channels not in (None, 3):
        layout = "N x H x W x 3" if spec.layout == "NHWC" else "N x 3 x H x W"
        raise ConvSegError(f"{path}: input '{spec.input}' should be {layout}, found {dims}: re-export it")
    return meta, spec.io, dims


def _ordered(what: str, values: list[Any]) -> None:
    if not all(a <= b for a, b in pairwise(values)):
        raise ConvSegError(f"{what} must satisfy min <= opt <= max, got {' / '.join(map(str, values))}")


def _plan_profile(
    dims: list[int | None], batches: tuple[int, int, int], sizes: tuple[Size | None, ...], source: Path, io: str = IO_TENSOR
) -> dict[str, list[int]]:
    """Min/opt/max shapes of the input, in the layout of variant ``io``: batch from the arguments,
    H/W from the ONNX or the arguments."""
    for value in batches:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConvSegError(f"batch sizes must be positive integers, got {value!r}")
    _ordered("batch sizes", list(batches))
    fixed_n = dims[0]
    fixed_h, fixed_w = spatial(dims, io)
    if fixed_n is not None and batches != (fixed_n,) * 3:
        raise ConvSegError(
            f"{source} has a fixed batch size of {fixed_n}: pass --min-batch/--opt-batch/--max-batch {fixed_n} "
            "or re-export it with a dynamic batch"
        )
    if fixed_h is None or fixed_w is None:
        if any(size is None for size in sizes):
            raise ConvSegError(
                f"{source} has a dynamic height/width: give min, opt and max sizes (e.g. --min-size 256x256)"
            )
        hw = [check_image_size(*size) for size in sizes]  # type: ignore[misc]
        _ordered("heights", [h for h, _ in hw])
        _ordered("widths", [w for _, w in hw])
    else:
        fixed = check_image_size(fixed_h, fixed_w)
        for size in sizes:
            if size is not None and tuple(size) != fixed:
                raise ConvSegError(
                    f"{source} has a fixed size {fixed_h}x{fixed_w}, not {size[0]}x{size[1]}: drop the size "
                    "options or re-export it with a dynamic size"
                )
        hw = [fixed] * 3
    nhwc = variant(io).layout == "NHWC"
    return {key: ([n, h, w, 3] if nhwc else [n, 3, h, w]) for key, n, (h, w) in zip(("min", "opt", "max"), batches, hw)}


def _network_flags(trt: ModuleType) -> int:
    major = parse_version3(trt.__version__)
    if major is None or major[0] < 10:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} is too old: strongly typed builds need 10.x or 11.x ({TENSORRT_INSTALL_HINT})"
        )
    if major[0] >= 11:
        return 0  # strong typing is always on; the STRONGLY_TYPED flag is deprecated and ignored
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _parser_error(parser: Any, onnx_path: Path) -> ConvSegError:
    if parser.num_errors == 0:
        return ConvSegError(f"TensorRT could not parse {onnx_path} and gave no reason: check it with onnx.checker")
    err = parser.get_error(0)
    desc = " ".join(str(err.desc()).split())  # parser descriptions can span lines
    more = f" ({parser.num_errors} errors in all)" if parser.num_errors > 1 else ""
    return ConvSegError(
        f"TensorRT cannot parse {onnx_path}: node '{err.node_name()}' (op {err.node_operator()}, "
        f"#{err.node()}): {desc} [{err.code()}]{more}; re-export with ops this TensorRT supports"
    )


def _add_profile(builder: Any, config: Any, name: str, shapes: dict[str, list[int]], onnx_path: Path) -> None:
    """One optimization profile for the input ``name``. TensorRT reports a bad profile without raising an
    error of its own kind: the binding's set_shape raises RuntimeError when setDimensions refuses a
    shape, and add_optimization_profile returns -1 for an invalid profile (and only logs why)."""
    described = " / ".join("x".join(map(str, shapes[key])) for key in ("min", "opt", "max"))
    profile = builder.create_optimization_profile()
    try:
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    except RuntimeError as exc:
        raise ConvSegError(f"TensorRT refused the input shapes {described} of {onnx_path} ({exc}): "
                           "check the batch and size options") from None
    if config.add_optimization_profile(profile) < 0:
        raise ConvSegError(f"TensorRT found the optimization profile {described} (min / opt / max) of {onnx_path} "
                           "invalid: each dimension needs min <= opt <= max within the ONNX input's shape")


def _attach_timing_cache(config: Any, path: Path | None) -> None:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ConvSegError(
            f"timing cache {path} was made by another TensorRT version or GPU: delete it or pass another --timing-cache"
        )


def build_engine(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    min_size: Size | None = None,
    opt_size: Size | None = None,
    max_size: Size | None = None,
    workspace_mib: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    builder_opt_level: int | None = None,
    hardware_compat: bool = False,
    device: int = 0,
    dla_core: int | None = None,
    gpu_fallback: bool = False,
    version_compatible: bool = False,
) -> dict[str, Any]:
    """Build ``out_path`` (default: the ONNX path with ``.engine``) and its sidecar; return the sidecar.

    Sizes are (height, width) and only needed when the ONNX has a dynamic height/width.
    ``timing_cache`` is loaded when it exists and saved back after the build, so rebuilds are fast.
    ``device``: the CUDA device to build on (and so the one the engine is for). ``dla_core``: build
    for that DLA core of a Jetson AGX Orin (``gpu_fallback``: layers the DLA cannot run go to the
    GPU). ``version_compatible``: the engine also runs on later TensorRT versions of the same major.
    """
    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path is not None else onnx_path.with_suffix(".engine")
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if workspace_mib is not None and (isinstance(workspace_mib, bool) or int(workspace_mib) != workspace_mib
                                      or workspace_mib <= 0):
        raise ConvSegError(f"workspace must be a positive number of MiB, got {workspace_mib!r}")
    if builder_opt_level is not None and builder_opt_level not in range(6):
        raise ConvSegError(f"builder optimization level must be 0-5 (3 is TensorRT's default), got {builder_opt_level!r}")
    meta, io, dims = _read_onnx(onnx_path)
    spec, threshold = preprocess_from_metadata(meta, str(onnx_path))
    profile_shapes = _plan_profile(dims, (min_batch, opt_batch, max_batch), (min_size, opt_size, max_size), onnx_path, io)
    input_name = variant(io).input

    _check_targets(dla_core, gpu_fallback, hardware_compat, version_compatible)

    trt = import_tensorrt()
    flags = _network_flags(trt)
    target = engine_target(str(trt.__version__), device)
    if target is None:
        raise MissingDependencyError(
            f"no CUDA GPU found on this machine (device {device}): build the engine on the GPU that will run it "
            "(TensorRT engines are specific to the GPU and TensorRT version)"
        )
    gpu_name, capability = target["gpu_name"], target["compute_capability"]
    if hardware_compat and (parse_capability(capability) or (0, 0)) < (8, 0):
        raise ConvSegError(
            f"hardware-compatible engines must be built on an Ampere or newer GPU; {gpu_name} is {sm_name(capability)}"
        )
    with _current_device(device):
        serialized, config = _build(trt, flags, onnx_path, input_name, profile_shapes, workspace_mib, builder_opt_level,
                                    hardware_compat, cache_path, dla_core, gpu_fallback, version_compatible, gpu_name)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(memoryview(serialized))

    sidecar = {
        **target,
        "precision": str(meta.get("precision", "unknown")),
        "io": io,
        "profile": {"input": input_name, **profile_shapes},
        "engine_file": out_path.name,
        "engine_sha256": sha256_file(out_path),
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "preprocess": spec.to_dict(),
        "threshold": threshold,
        "hardware_compat": "ampere_plus" if hardware_compat else "none",
        "version_compatible": bool(version_compatible),
        "dla_core": dla_core,
        "gpu_fallback": bool(gpu_fallback),
        "builder_opt_level": builder_opt_level,
        "workspace_mib": workspace_mib,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_json(sidecar_path(out_path), sidecar)
    except BaseException:
        out_path.unlink(missing_ok=True)  # an engine without its sidecar cannot be verified
        raise
    return sidecar


def _check_targets(dla_core: int | None, gpu_fallback: bool, hardware_compat: bool, version_compatible: bool) -> None:
    if dla_core is None:
        if gpu_fallback:
            raise ConvSegError("--gpu-fallback only applies to DLA engines: add --dla-core N or drop it")
        return
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
        raise ConvSegError(f"DLA core must be 0 or more, got {dla_core!r}")
    if hardware_compat or version_compatible:
        raise ConvSegError("DLA engines cannot be hardware- or version-compatible (TensorRT supports neither on DLA): "
                           "drop --hardware-compat/--version-compatible")


@contextlib.contextmanager
def _current_device(device: int) -> Any:
    """Device ``device``'s primary context current on this thread while TensorRT builds."""
    try:
        cuda = import_pycuda()
    except MissingDependencyError:
        if device != 0:
            raise  # without pycuda, TensorRT builds on the CUDA runtime's default device 0
        yield
        return
    context = PrimaryContext(cuda, device)
    try:
        with context:
            yield
    finally:
        context.release()


def _build(trt: ModuleType, flags: int, onnx_path: Path, input_name: str, profile_shapes: dict[str, list[int]],
           workspace_mib: int | None, builder_opt_level: int | None, hardware_compat: bool, cache_path: Path | None,
           dla_core: int | None, gpu_fallback: bool, version_compatible: bool, gpu_name: str) -> tuple[Any, Any]:
    """The serialized engine and the builder config (for its timing cache)."""
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - pybind raises TypeError when CUDA cannot initialise
        raise MissingDependencyError(f"TensorRT could not initialise CUDA on {gpu_name} ({exc}): check the driver") from None
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise _parser_error(parser, onnx_path)

    config = builder.create_builder_config()
    _add_profile(builder, config, input_name, profile_shapes, onnx_path)
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if builder_opt_level is not None:
        config.builder_optimization_level = int(builder_opt_level)
    if hardware_compat:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if version_compatible:
        try:
            flag = trt.BuilderFlag.VERSION_COMPATIBLE
        except AttributeError:
            raise ConvSegError(f"TensorRT {trt.__version__} cannot build version-compatible engines: drop --version-compatible") from None
        config.set_flag(flag)
    if dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if dla_core >= cores:
            raise ConvSegError(
                f"DLA core {dla_core} does not exist: this device has {cores} DLA core(s) under TensorRT {trt.__version__} "
                "(Jetson AGX Orin has 2; TensorRT 11 supports none on JetPack): drop --dla-core or pick another"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    _attach_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        hint = " (on DLA, try --gpu-fallback)" if dla_core is not None and not gpu_fallback else ""
        raise ConvSegError(
            f"TensorRT could not build an engine from {onnx_path} (see its log above): try a larger "
            f"--workspace-mib or a smaller --max-batch/--max-size{hint}"
        )
    return serialized, config
