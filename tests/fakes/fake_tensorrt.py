"""A recording test double of the ``tensorrt`` Python module, in a 10.x or an 11.x flavour.

``make_fake_tensorrt()`` returns a module whose ``calls`` list records every builder and runtime
call, e.g. ``("create_network", flags)``, ``("set_memory_pool_limit", pool, size)``,
``("set_optimization_profile_shape", name, min, opt, max)``, ``("create_timing_cache", nbytes)``.

It fails loudly on APIs the project must not use:
- in both flavours, the binding-index API removed in TensorRT 10 (``num_bindings``,
  ``get_binding_shape``, ``execute_async_v2``, ...): AttributeError "removed in TensorRT 10";
- in the 11.x flavour, the weak-typing API removed in TensorRT 11 (``BuilderFlag.FP16``/``INT8``,
  ``IInt8Calibrator``, ``config.int8_calibrator``, ``platform_has_fast_fp16``/``int8``, the
  precision-constraint flags): AttributeError "removed in TensorRT 11";
- in the 10.x flavour those still exist but are deprecated: using one records
  ``("deprecated", "BuilderFlag.FP16")`` so tests can assert that nothing was touched.
Any name the fake does not know raises AttributeError too, so a typo cannot pass silently.

The parser reads the real ONNX file (inputs, outputs) and refuses what TensorRT's ONNX parser
refuses, at the first such node, reporting it as the real parser does (``num_errors``,
``get_error(i)`` with node index, name, operator, description and code): operators outside
``SUPPORTED_OPS``, Q/DQ of types other than INT8/FP8/INT4 (INT32 biases, UINT8 activations) and
non-zero zero points. ``IOptimizationProfile.set_shape`` raises RuntimeError for a shape that
setDimensions refuses (as the binding does) and ``add_optimization_profile`` returns -1 for an
unordered profile. A "serialized engine" is a
small JSON blob that ``Runtime.deserialize_cuda_engine`` reads back, and the execution context
computes the mean over channels of its input in fake device memory (see ``fake_pycuda``).

The runtime side is as strict as CUDA: deserialising, creating an execution context and
``execute_async_v3`` need a CUDA context current on the calling thread, of the device the engine
was loaded on; ``execute_async_v3`` only enqueues (the work runs at stream synchronisation);
``set_tensor_address`` returns False for an unknown tensor or a null/misaligned address, as
TensorRT does. ``Runtime.DLA_core``/``num_DLA_cores`` exist as in TensorRT (0 DLA cores unless
``dla_cores`` is given).
"""

from __future__ import annotations

import enum
import itertools
import json
import types
from typing import Any

import numpy as np

from .fake_pycuda import DEFAULT_GPU, GPU, HEAP, current_context, enqueue

ENGINE_MAGIC = b"FAKE-TRT-ENGINE\n"
CACHE_MAGIC = b"FAKE-TRT-CACHE:"

REMOVED_10 = "removed in TensorRT 10 (binding-index API): use the named-tensor API"
REMOVED_11 = "removed in TensorRT 11 (weak typing): precision must come from the ONNX graph"

# (owner, name) -> why it is gone. Owners are the fake classes' TensorRT names.
BINDING_API = {
    ("ICudaEngine", n): REMOVED_10
    for n in ("num_bindings", "get_binding_shape", "get_binding_index", "get_binding_name", "get_binding_dtype",
              "binding_is_input", "max_batch_size", "get_profile_shape", "has_implicit_batch_dimension",
              "get_location", "get_binding_vectorized_dim")
} | {
    ("IExecutionContext", n): REMOVED_10
    for n in ("execute", "execute_async", "execute_v2", "execute_async_v2", "set_binding_shape",
              "get_binding_shape", "all_binding_shapes_specified", "get_strides")
} | {
    ("Builder", n): REMOVED_10 for n in ("build_engine", "max_batch_size", "max_workspace_size", "build_cuda_engine")
} | {("IBuilderConfig", "max_workspace_size"): REMOVED_10}

WEAK_TYPING_API = {
    ("BuilderFlag", n): REMOVED_11
    for n in ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
              "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")
} | {
    ("tensorrt", n): REMOVED_11
    for n in ("IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
              "IInt8LegacyCalibrator", "CalibrationAlgoType", "QuantizationFlag")
} | {
    ("IBuilderConfig", n): REMOVED_11
    for n in ("int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
              "get_quantization_flag", "quantization_flags", "clear_quantization_flag")
} | {
    ("Builder", n): REMOVED_11 for n in ("platform_has_fast_fp16", "platform_has_fast_int8")
} | {
    ("ICudaEngine", "device_memory_size"): REMOVED_11,
}


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class HardwareCompatibilityLevel(enum.IntEnum):
    NONE = 0
    AMPERE_PLUS = 1
    SAME_COMPUTE_CAPABILITY = 2


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


_NP_TYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
             DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 7: DataType.INT64,
               2: DataType.UINT8, 9: DataType.BOOL}


class _State:
    """What one fake module knows: its flavour, its switches and its call log."""

    def __init__(self, version: str, gpu: GPU | None, fail_parse: bool, fail_build: bool, dla_cores: int = 0) -> None:
        self.dla_cores = dla_cores
        self.version = version
        self.major = int(version.split(".")[0])
        self.gpu = gpu
        self.fail_parse = fail_parse
        self.fail_build = fail_build
        self.calls: list[tuple[Any, ...]] = []
        self.removed = dict(BINDING_API)
        self.deprecated: set[tuple[str, str]] = set()
        if self.major >= 11:
            self.removed |= WEAK_TYPING_API
        else:
            self.deprecated = set(WEAK_TYPING_API)

    def record(self, *call: Any) -> None:
        self.calls.append(call)

    def missing(self, owner: str, name: str) -> Any:
        """Raise for a removed or unknown name; for a deprecated one, record it and return a dummy."""
        if (owner, name) in self.removed:
            raise AttributeError(f"{owner}.{name} was {self.removed[owner, name]} (fake TensorRT {self.version})")
        if (owner, name) in self.deprecated:
            self.record("deprecated", f"{owner}.{name}")
            return _Deprecated(f"{owner}.{name}")
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"fake TensorRT {self.version} has no {owner}.{name}: if the real API has it, add it to tests/fakes/fake_tensorrt.py"
        )


class _Deprecated:
    """Stands in for a deprecated 10.x object (a flag, a calibrator class); usable but recorded."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __int__(self) -> int:
        return 0

    def __call__(self, *args: Any, **kwargs: Any) -> _Deprecated:
        return self

    def __bool__(self) -> bool:
        return True


class _StrictMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_ready", True)  # from now on, unknown attributes cannot be set
        return obj


class _Strict(metaclass=_StrictMeta):
    """Base of the fake classes: removed and unknown attributes fail loudly, on read and on write."""

    _owner = "object"

    def __init__(self, state: _State) -> None:
        object.__setattr__(self, "_state", state)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._state.missing(self._owner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        settable = name.startswith("_") or name in self.__dict__ or hasattr(type(self), name)
        if settable or not self.__dict__.get("_ready"):
            object.__setattr__(self, name, value)
            return
        self._state.missing(self._owner, name)  # raises unless deprecated (then it is recorded)
        object.__setattr__(self, name, value)


class _Namespace(_Strict):
    """An enum-like namespace (``BuilderFlag``) whose removed members fail loudly."""

    def __init__(self, state: _State, owner: str, members: dict[str, int]) -> None:
        super().__init__(state)
        object.__setattr__(self, "_owner", owner)
        for name, value in members.items():
            object.__setattr__(self, name, value)


class Logger:
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4

    def __init__(self, min_severity: int = WARNING) -> None:
        self.min_severity = min_severity

    def log(self, severity: int, msg: str) -> None:
        pass


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition(_Strict):
    _owner = "INetworkDefinition"

    def __init__(self, state: _State, flags: int) -> None:
        super().__init__(state)
        self.flags = flags
        self.strongly_typed = state.major >= 11 or bool(flags & (1 << int(state.network_flags.STRONGLY_TYPED)))
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


# ONNX operators TensorRT's parser imports (onnx-tensorrt docs/operators.md), restricted to those
# a convolutional segmentation network and its FP16/Q-DQ forms use; everything else is refused
# like an op without an importer. Listed as unsupported there: ConvInteger, QLinearConv,
# MatMulInteger, QLinearMatMul, DynamicQuantizeLinear (ONNX Runtime's integer-operator format).
SUPPORTED_OPS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "ConvTranspose", "DequantizeLinear", "Div", "Exp", "Expand", "Flatten", "Gather", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul",
    "Neg", "Pad", "PRelu", "QuantizeLinear", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice",
    "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Upsample", "Where",
})
QDQ_TYPES = {3: "INT8", 17: "FLOAT8E4M3FN", 22: "INT4"}  # what TensorRT's Q/DQ carry (ONNX type ids)
ONNX_TYPE_NAMES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FLOAT16", 16: "BFLOAT16"}
# The "Supported Types" column of onnx-tensorrt docs/operators.md for TensorRT 10.0 (commit 96e7811), for the
# operators that take other than float data; each is checked on its data inputs (Where: the two value
# inputs after the BOOL condition; Cast: its input and its "to" type). UINT8 exists for Cast only, so
# a UINT8 tensor must be cast to float at the input and back at the output.
_FLOAT = {1, 10, 16}
_NUMERIC = _FLOAT | {6, 7}
_ANY = _NUMERIC | {9}
TYPE_SUPPORT = {"Cast": _ANY | {2}, "Gather": _ANY, "Greater": _NUMERIC, "Where": _ANY, "Squeeze": _ANY,
                "Unsqueeze": _ANY, "Transpose": _ANY, "Reshape": _ANY, "Concat": _ANY, "Mul": _NUMERIC, "Sub": _NUMERIC,
                "Div": _NUMERIC, "Add": _NUMERIC, "Sigmoid": _FLOAT, "Conv": _FLOAT, "Relu": _NUMERIC}


class ParserError:
    def __init__(self, node: int, name: str, op: str, desc: str, code: ErrorCode = ErrorCode.UNSUPPORTED_NODE) -> None:
        self._node, self._name, self._op, self._desc, self._code = node, name, op, desc, code

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def func(self) -> str:
        return "importNode"

    def file(self) -> str:
        return "ModelImporter.cpp"

    def line(self) -> int:
        return 42


class OnnxParser(_Strict):
    _owner = "OnnxParser"

    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        super().__init__(network._state)
        self.network = network
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def clear_errors(self) -> None:
        self.errors.clear()

    def parse_from_file(self, model: str) -> bool:
        self._state.record("parse_from_file", model)
        with open(model, "rb") as fh:
            return self._load(fh.read())

    def parse(self, model: bytes, path: str | None = None) -> bool:
        self._state.record("parse", len(model), path)
        return self._load(bytes(model))

    def _load(self, data: bytes) -> bool:
        import onnx

        graph = onnx.load_from_string(data).graph
        if self._state.fail_parse:
            node = graph.node[0]
            self.errors.append(ParserError(0, node.name, node.op_type, f"No importer registered for op: {node.op_type}\n(fake)"))
            return False
        types = _tensor_types(data)
        for index, node in enumerate(graph.node):
            problem = _unsupported(node, graph) or _unsupported_type(node, types)
            if problem is not None:  # the real parser stops at the first node it cannot import
                self.errors.append(ParserError(index, node.name, node.op_type, *problem))
                return False
        initializers = {init.name for init in graph.initializer}

        def tensor(value: Any) -> ITensor:
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                         for d in value.type.tensor_type.shape.dim)
            return ITensor(value.name, dims, _ONNX_TYPES[value.type.tensor_type.elem_type])

        self.network.inputs = [tensor(v) for v in graph.input if v.name not in initializers]
        self.network.outputs = [tensor(v) for v in graph.output]
        return True


def _tensor_types(data: bytes) -> dict[str, int]:
    """ONNX element type of every tensor of a model (inputs, weights, inferred intermediates)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _unsupported_type(node: Any, types: dict[str, int]) -> tuple[str, ErrorCode] | None:
    """Why TensorRT 10's parser would refuse the element types of ``node`` (TYPE_SUPPORT), or None."""
    allowed = TYPE_SUPPORT.get(node.op_type)
    if allowed is None:
        return None
    data = list(node.input[1:3]) if node.op_type == "Where" else list(node.input[:1])
    found = [types[name] for name in data if name in types]  # a type inference could not tell is not judged
    if node.op_type == "Cast":
        found.append(next(a.i for a in node.attribute if a.name == "to"))
    bad = [t for t in found if t not in allowed]
    if not bad:
        return None
    return (f"Assertion failed: {node.op_type} does not support type {ONNX_TYPE_NAMES.get(bad[0], bad[0])} (fake)",
            ErrorCode.UNSUPPORTED_NODE)


def _unsupported(node: Any, graph: Any) -> tuple[str, ErrorCode] | None:
    """Why TensorRT's ONNX parser would refuse ``node`` (its description and code), or None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
        return (f"No importer registered for op: {node.op_type}. Attempting to import as plugin. (fake)",
                ErrorCode.UNSUPPORTED_NODE)
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return None
    inits = {t.name: t for t in graph.initializer}
    zero_point = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    source = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
    # a DequantizeLinear input has its zero point's type; a QuantizeLinear output too
    dtype = source.data_type if source is not None else (zero_point.data_type if zero_point is not None else 3)
    if dtype not in QDQ_TYPES:
        side = "input" if node.op_type == "DequantizeLinear" else "output"
        return (f"Assertion failed: {node.op_type} {side} must be one of {', '.join(QDQ_TYPES.values())}, "
                f"got {ONNX_TYPE_NAMES.get(dtype, dtype)} (fake)", ErrorCode.INVALID_NODE)
    if zero_point is not None:
        from onnx import numpy_helper

        if numpy_helper.to_array(zero_point).any():
            return ("Assertion failed: Non-zero zero point is not supported; TensorRT quantization is symmetric (fake)",
                    ErrorCode.INVALID_NODE)
    return None


class IOptimizationProfile(_Strict):
    _owner = "IOptimizationProfile"

    def __init__(self, state: _State) -> None:
        super().__init__(state)
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        """Like the real binding: setDimensions refusing a shape (a negative dimension, ranks that
        differ) raises RuntimeError; an unordered min/opt/max is accepted here and makes the
        profile invalid, so ``add_optimization_profile`` returns -1."""
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        self._state.record("set_optimization_profile_shape", input, *shapes)
        for which, shape in zip(("min", "opt", "max"), shapes):
            if any(d < 0 for d in shape) or len(shape) != len(shapes[0]):
                raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
        self.shapes[input] = shapes

    def is_valid(self) -> bool:
        return all(a <= b for shapes in self.shapes.values() for lo, hi in itertools.pairwise(shapes)
                   for a, b in zip(lo, hi))

    def get_shape(self, input: str) -> list[tuple[int, ...]]:
        return list(self.shapes[input])


class ITimingCache(_Strict):
    _owner = "ITimingCache"

    def __init__(self, state: _State, entries: int) -> None:
        super().__init__(state)
        self.entries = entries

    def serialize(self) -> bytes:
        self._state.record("serialize_timing_cache", self.entries)
        return CACHE_MAGIC + str(self.entries).encode()


class IBuilderConfig(_Strict):
    _owner = "IBuilderConfig"

    def __init__(self, state: _State) -> None:
        super().__init__(state)
        self.profiles: list[IOptimizationProfile] = []
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.timing_cache: ITimingCache | None = None
        self._opt_level = 3
        self._hw_level = HardwareCompatibilityLevel.NONE
        self.flags: set[int] = set()
        self.DLA_core = -1
        self.default_device_type = DeviceType.GPU

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        self._state.record("builder_optimization_level", level)
        if not 0 <= level <= 5:
            raise ValueError(f"fake TensorRT: builder_optimization_level {level} is outside 0-5")
        self._opt_level = level

    @property
    def hardware_compatibility_level(self) -> HardwareCompatibilityLevel:
        return self._hw_level

    @hardware_compatibility_level.setter
    def hardware_compatibility_level(self, level: HardwareCompatibilityLevel) -> None:
        self._state.record("hardware_compatibility_level", HardwareCompatibilityLevel(level))
        self._hw_level = HardwareCompatibilityLevel(level)

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self._state.record("set_memory_pool_limit", MemoryPoolType(pool), pool_size)
        self.pool_limits[MemoryPoolType(pool)] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._state.record("add_optimization_profile", dict(profile.shapes))
        if not profile.is_valid():
            return -1  # real TensorRT logs "Optimization profile is invalid" and returns -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: Any) -> None:
        self._state.record("set_flag", flag)
        self.flags.add(int(flag))

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        self._state.record("create_timing_cache", len(data))
        entries = int(data[len(CACHE_MAGIC):] or 0) if data.startswith(CACHE_MAGIC) else (-1 if data else 0)
        return ITimingCache(self._state, entries)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._state.record("set_timing_cache", ignore_mismatch)
        if cache.entries < 0 and not ignore_mismatch:
            return False  # not a cache this "TensorRT" wrote: the real one rejects foreign caches
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        self._state.record("get_timing_cache")
        return self.timing_cache


class _GpuFactory(_Strict):
    """Builder and Runtime: constructed from a logger, and refused without a CUDA GPU."""

    def __init__(self, logger: Logger) -> None:
        state = _current_state(type(self))
        super().__init__(state)
        state.record(self._owner)
        if state.gpu is None:
            raise TypeError("pybind11::init(): factory function returned nullptr")  # what TensorRT does without CUDA


class Builder(_GpuFactory):
    _owner = "Builder"

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self._state.record("create_network", flags)
        return INetworkDefinition(self._state, flags)

    def create_builder_config(self) -> IBuilderConfig:
        self._state.record("create_builder_config")
        return IBuilderConfig(self._state)

    def create_optimization_profile(self) -> IOptimizationProfile:
        self._state.record("create_optimization_profile")
        return IOptimizationProfile(self._state)

    @property
    def platform_has_tf32(self) -> bool:
        return True

    @property
    def num_DLA_cores(self) -> int:
        return self._state.dla_cores

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        state = self._state
        state.record("build_serialized_network")
        if state.fail_build or not network.inputs:
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        if any(-1 in t.shape and t.name not in profile for t in network.inputs):
            return None  # real TensorRT: dynamic inputs need an optimization profile
        on_dla = config.default_device_type == DeviceType.DLA
        if on_dla and not 0 <= config.DLA_core < state.dla_cores:
            return None  # real TensorRT logs "DLA core N is not available" and fails the build
        if config.timing_cache is not None:
            config.timing_cache.entries += 1  # the build "timed" something new
        blob = {
            "version": state.version,
            "strongly_typed": network.strongly_typed,
            "hardware_compat": int(config.hardware_compatibility_level),
            "dla_core": config.DLA_core if on_dla else None,
            "version_compatible": int(state.builder_flags.VERSION_COMPATIBLE) in config.flags,
            "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.outputs],
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
        }
        return ENGINE_MAGIC + json.dumps(blob).encode()


class ICudaEngine(_Strict):
    _owner = "ICudaEngine"

    def __init__(self, state: _State, blob: dict[str, Any]) -> None:
        super().__init__(state)
        self.blob = blob
        self.device = 0  # the GPU it was deserialised on
        self.modes = {name: TensorIOMode.INPUT for name, _, _ in blob["inputs"]}
        self.modes |= {name: TensorIOMode.OUTPUT for name, _, _ in blob["outputs"]}
        self.shapes = {name: tuple(shape) for name, shape, _ in blob["inputs"] + blob["outputs"]}
        self.dtypes = {name: DataType(dt) for name, _, dt in blob["inputs"] + blob["outputs"]}

    @property
    def num_io_tensors(self) -> int:
        return len(self.modes)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return list(self.modes)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.modes.get(name, TensorIOMode.NONE)

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.dtypes[name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        self._state.record("get_tensor_profile_shape", name, profile_index)
        if profile_index != 0 or name not in self.blob["profile"]:
            raise RuntimeError(f"fake TensorRT: no profile {profile_index} for {name}")
        return [tuple(s) for s in self.blob["profile"][name]]

    def create_execution_context(self, strategy: Any = None) -> IExecutionContext:
        self._state.record("create_execution_context")
        _require_context("create_execution_context", self.device)
        return IExecutionContext(self._state, self)


class IExecutionContext(_Strict):
    _owner = "IExecutionContext"

    def __init__(self, state: _State, engine: ICudaEngine) -> None:
        super().__init__(state)
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        self._state.record("set_input_shape", name, shape)
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            return False  # real TensorRT logs an error and returns False
        self.input_shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self.input_shapes.get(name, self.engine.shapes[name])
        (source,) = self.input_shapes.values() or [self.engine.shapes[name]]
        return tuple(s if s > 0 else d for s, d in zip(self.engine.shapes[name], source))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._state.record("set_tensor_address", name)
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE or int(memory) <= 0 or int(memory) % 256:
            return False  # real TensorRT logs "invalid tensor name" / "address is not aligned" and returns False
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._state.record("execute_async_v3", stream_handle)
        _require_context("execute_async_v3", self.engine.device)
        engine = self.engine
        (src,) = [n for n, m in engine.modes.items() if m == TensorIOMode.INPUT]
        (dst,) = [n for n, m in engine.modes.items() if m == TensorIOMode.OUTPUT]
        if src not in self.input_shapes or {src, dst} - set(self.addresses):
            raise RuntimeError("fake TensorRT: set_input_shape and set_tensor_address must come before execute_async_v3")
        in_type, out_type = _NP_TYPES[engine.dtypes[src]], _NP_TYPES[engine.dtypes[dst]]
        shape, src_addr, dst_addr = self.input_shapes[src], self.addresses[src], self.addresses[dst]

        def run() -> None:  # enqueued: reads the input and writes the output when the stream gets there
            nbytes = int(np.prod(shape)) * np.dtype(in_type).itemsize
            batch = np.frombuffer(HEAP.read(src_addr, nbytes), dtype=in_type).reshape(shape)
            out = batch.astype(np.float32).mean(axis=1, keepdims=True).astype(out_type)  # deterministic "model"
            HEAP.write(dst_addr, out)

        return enqueue(stream_handle, run)


def _require_context(what: str, device: int | None = None) -> int:
    """The device of the CUDA context current on this thread; fails like CUDA without one."""
    context = current_context()
    if context is None:
        raise RuntimeError(f"fake TensorRT {what}: CUDA error 201 (invalid device context): no context is current on "
                           "this thread")
    if device is not None and context.device.index != device:
        raise RuntimeError(f"fake TensorRT {what}: the engine lives on GPU {device} but GPU {context.device.index}'s "
                           "context is current")
    return context.device.index


class Runtime(_GpuFactory):
    _owner = "Runtime"

    engine_host_code_allowed = False  # must be True to load a version-compatible plan (embedded lean runtime)

    @property
    def num_DLA_cores(self) -> int:
        return self._state.dla_cores

    @property
    def DLA_core(self) -> int:
        return self.__dict__.get("_dla_core", -1)

    @DLA_core.setter
    def DLA_core(self, core: int) -> None:
        self._state.record("runtime_DLA_core", core)
        object.__setattr__(self, "_dla_core", int(core))

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        self._state.record("deserialize_cuda_engine", len(data))
        device = _require_context("deserialize_cuda_engine")
        if not data.startswith(ENGINE_MAGIC):
            return None
        blob = json.loads(data[len(ENGINE_MAGIC):])
        if blob.get("version_compatible"):
            built, here = (tuple(int(p) for p in v.split(".")) for v in (blob["version"], self._state.version))
            if built[0] != here[0] or here < built or not self.engine_host_code_allowed:
                return None  # a version-compatible plan: same major, this version or later, host code allowed
        elif blob["version"] != self._state.version:
            return None  # real TensorRT refuses engines from another version
        if blob.get("dla_core") is not None and not 0 <= self.DLA_core < self._state.dla_cores:
            return None  # a DLA engine needs runtime.DLA_core set to an existing core
        engine = ICudaEngine(self._state, blob)
        engine.device = device
        return engine


def _current_state(cls: type) -> _State:
    return cls._fake_state  # type: ignore[attr-defined]


def nptype(trt_type: DataType) -> type:
    return _NP_TYPES[DataType(trt_type)]


def volume(shape: Any) -> int:
    return int(np.prod(list(shape)))


def make_fake_tensorrt(
    version: str = "10.13.0",
    gpu: GPU | None = DEFAULT_GPU,
    fail_parse: bool = False,
    fail_build: bool = False,
    dla_cores: int = 0,
) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module of the flavour ``version`` names ("10.x.y" or "11.x.y").

    ``gpu=None`` fakes a machine without CUDA (``Builder``/``Runtime`` creation fails as in real
    TensorRT); give the same ``gpu`` to ``make_fake_pycuda`` (``install`` does) for a consistent
    machine. ``fail_parse`` makes the parser reject the first node; ``fail_build`` makes
    ``build_serialized_network`` return None.
    """
    state = _State(version, gpu, fail_parse, fail_build, dla_cores)
    module = types.ModuleType("tensorrt")
    module.__file__ = __file__
    module.__version__ = version
    module.IS_FAKE = True
    module.FAKE_GPU = gpu
    module.calls = state.calls
    module.state = state

    if state.major >= 11:
        creation_flags = {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2}
    else:
        creation_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_AOT_PYTHON_PLUGINS": 2,
                          "PREFER_JIT_PYTHON_PLUGINS": 3}
    state.network_flags = enum.IntEnum("NetworkDefinitionCreationFlag", creation_flags)  # type: ignore[attr-defined]
    flags = {"DEBUG": 1, "GPU_FALLBACK": 2, "REFIT": 3, "DISABLE_TIMING_CACHE": 4, "TF32": 5, "SPARSE_WEIGHTS": 6,
             "SAFETY_SCOPE": 7, "VERSION_COMPATIBLE": 8, "EXCLUDE_LEAN_RUNTIME": 9, "STRIP_PLAN": 10}
    state.builder_flags = types.SimpleNamespace(**flags)  # type: ignore[attr-defined]

    # Fresh subclasses per module, so that two fakes in one test session never share a state.
    bound = {cls.__name__: type(cls)(cls.__name__, (cls,), {"_fake_state": state}) for cls in (Builder, Runtime)}
    module.__dict__.update(
        Logger=Logger, Builder=bound["Builder"], Runtime=bound["Runtime"], OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=state.network_flags, BuilderFlag=_Namespace(state, "BuilderFlag", flags),
        MemoryPoolType=MemoryPoolType, HardwareCompatibilityLevel=HardwareCompatibilityLevel, DeviceType=DeviceType,
        TensorIOMode=TensorIOMode, DataType=DataType, ErrorCode=ErrorCode, ParserError=ParserError,
        ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext, IBuilderConfig=IBuilderConfig,
        INetworkDefinition=INetworkDefinition, IOptimizationProfile=IOptimizationProfile,
        ITimingCache=ITimingCache, nptype=nptype, volume=volume,
    )
    module.__getattr__ = lambda name: state.missing("tensorrt", name)  # type: ignore[attr-defined]
    return module
