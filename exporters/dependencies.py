"""What each export step needs installed, checked before any work starts.

An export runs for minutes: the FP32 file, FP16, then INT8. A package that only the last step
imports (ModelOpt for the ``int8`` file) must not be found missing after the others were done and
thrown away, so ``check_export_dependencies`` looks every one up first and names the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

from convseg_deploy.errors import ConvSegError

TRAIN_EXTRA = 'pip install "convseg-deploy[train]"'
EXPORT_EXTRA = 'pip install "convseg-deploy[export]"'
RUNTIME_EXTRA = 'pip install "convseg-deploy[cpu]" (or "[gpu]" for NVIDIA\'s build)'  # setup.cfg: one of the two

# (module, why, install hint) for every export, and per precision on top
ALWAYS = (("torch", "the FP32 ONNX export (PyTorch)", TRAIN_EXTRA),
          ("onnxruntime", "the checks of every exported file (ONNX Runtime)", RUNTIME_EXTRA))
BY_PRECISION = {
    "int8": (("modelopt.onnx.quantization", "the int8 (TensorRT) file (NVIDIA ModelOpt)", EXPORT_EXTRA),),
    "int8-cpu": (("onnxruntime.quantization", "the int8-cpu file (ONNX Runtime's quantizer)", RUNTIME_EXTRA),),
}
DICE_DROP_BOUND = ("scipy", "the Dice-drop bound of the checks (SciPy's Student t)", EXPORT_EXTRA)


def _missing(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None. Top-level packages are looked up without
    importing them; a submodule (ModelOpt's quantizer) is imported, since a package that is
    present can still fail to import (a missing dependency of its own)."""
    if "." not in module:
        return None if importlib.util.find_spec(module) is not None else "not installed"
    try:
        importlib.import_module(module)
    except ImportError as exc:  # ModelOpt adds lines of advice of its own: keep the error on one line
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def check_export_dependencies(precisions: Sequence[str], dice_drop_bound: bool) -> None:
    """Raise ConvSegError naming the first missing package, what needs it and what to install."""
    needed = list(ALWAYS)
    for precision in precisions:
        needed += BY_PRECISION.get(precision, ())
    if dice_drop_bound:
        needed.append(DICE_DROP_BOUND)
    for module, why, hint in needed:
        problem = _missing(module)
        if problem:
            raise ConvSegError(f"{why} needs {module.split('.')[0]} ({problem}), and nothing was exported: {hint}")
