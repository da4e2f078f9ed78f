"""Channel pruning to a FLOPs budget with NVIDIA Model Optimizer (``modelopt.torch.prune``, FastNAS).

FastNAS converts the model into a search space (every prunable channel count of every Conv2d
and BatchNorm2d the torch.fx trace reaches: encoder, skip reducers, the decoder's CFR branches),
measures how much the score drops when each one is narrowed alone (re-calibrating BatchNorm on a
few batches first), then takes the narrowest subnet per layer whose drop stays under a threshold
found by binary search so that the whole model meets the FLOPs bound. The result is a plain
``nn.Module`` with narrower layers (``convseg_deploy.layer_channels`` records and rebuilds them).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from convseg_deploy.errors import MissingDependencyError

SLIM_EXTRA = "convseg-deploy[train,export]"
# FastNAS's defaults: 20 ratios of 5%; channel counts are rounded to multiples of the divisor.
DEFAULT_RATIO_STEP = 0.05
# Multiples of 8 keep the GPU's tensor cores (FP16/INT8) and the CPU's vector lanes full.
DEFAULT_CHANNEL_DIVISOR = 8


def require_modelopt() -> None:
    """Fail before any work when ModelOpt's torch side or its FLOPs counter is missing or too new."""
    missing = []
    for module in ("modelopt.torch.prune", "torchprofile", "requests"):
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{module} ({exc.name or exc})")
    if missing:
        raise MissingDependencyError(f"slim needs NVIDIA Model Optimizer's torch side, which is not installed here "
                                     f"(missing {', '.join(missing)}): pip install \"{SLIM_EXTRA}\"")
    import torchprofile.profile

    if not hasattr(torchprofile.profile, "handlers"):  # 0.1 moved them: ModelOpt's FLOPs count then fails
        raise MissingDependencyError("this torchprofile is not the 0.0.x series that ModelOpt counts FLOPs with: "
                                     f"pip install \"{SLIM_EXTRA}\" (it pins torchprofile<0.1)")


def model_flops(model: nn.Module, height: int, width: int) -> float:
    """FLOPs of one height x width frame as ModelOpt counts them (2 x MACs of torchprofile, BatchNorm excluded)."""
    from modelopt.torch.nas.utils import inference_flops

    device = next(model.parameters()).device
    with torch.no_grad():
        return float(inference_flops(model, (torch.zeros(1, 3, height, width, device=device),), unit=1))


def fastnas_mode(channel_divisor: int, ratio_step: float) -> list[tuple[str, dict]]:
    """FastNAS's mode config: the channel choices of every Conv2d and BatchNorm2d."""
    steps = max(1, round(1.0 / ratio_step))
    ratios = tuple(i / steps for i in range(1, steps + 1))
    return [("fastnas", {
        "nn.Conv2d": {"*": {"channels_ratio": ratios, "kernel_size": (), "channel_divisor": channel_divisor}},
        "nn.BatchNorm2d": {"*": {"features_ratio": ratios, "feature_divisor": channel_divisor}},
    })]


def searchable_channels(model: nn.Module, channel_divisor: int = DEFAULT_CHANNEL_DIVISOR,
                        ratio_step: float = DEFAULT_RATIO_STEP) -> dict[str, list[int]]:
    """The channel counts FastNAS may choose, per hparam name, for a copy of ``model`` (``model`` is unchanged)."""
    import copy

    import modelopt.torch.nas as mtn
    from modelopt.torch.opt.utils import named_hparams

    with _quiet():
        converted = mtn.convert(copy.deepcopy(model), mode=fastnas_mode(channel_divisor, ratio_step))
    return {name: list(hp.choices) for name, hp in named_hparams(converted, configurable=True)}


@contextlib.contextmanager
def _quiet():
    """ModelOpt prints its search progress and warns per untraced module: keep it out of our log."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def prune_to_flops(model: nn.Module, max_flops: float, dummy_input: torch.Tensor, score: Callable[[nn.Module], float],
                   calibration: Sequence[torch.Tensor], search_checkpoint: Path | None = None,
                   channel_divisor: int = DEFAULT_CHANNEL_DIVISOR, ratio_step: float = DEFAULT_RATIO_STEP) -> nn.Module:
    """``model`` (changed in place) narrowed to at most ``max_flops`` for ``dummy_input``'s shape.

    ``score`` is maximised (e.g. Dice on a few training frames); ``calibration`` are input
    batches that re-estimate BatchNorm statistics of each candidate. ``search_checkpoint``
    keeps ModelOpt's sensitivity map, so a repeated search skips the expensive part.
    """
    import modelopt.torch.prune as mtp

    config = {"data_loader": list(calibration), "collect_func": lambda batch: batch, "score_func": score,
              "max_iter_data_loader": len(calibration), "verbose": False}
    if search_checkpoint is not None:
        config["checkpoint"] = str(search_checkpoint)
    with _quiet():
        pruned, _ = mtp.prune(model, mode=fastnas_mode(channel_divisor, ratio_step), constraints={"flops": float(max_flops)},
                              dummy_input=dummy_input, config=config)
    return pruned
