"""Synchronised BatchNorm for ``--sync-bn``: torch's SyncBatchNorm on GPUs, a Gloo one on CPUs.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (its kernels, ``batch_norm_stats`` and friends,
exist for CUDA only), so CPU training with Gloo cannot use it. ``GlooSyncBatchNorm`` computes
the same thing from two differentiable all-reduces (``torch.distributed.nn.functional``): the
batch mean and the biased variance over the frames of all ranks, the normalisation, and the
running statistics updated as BatchNorm does (unbiased variance, momentum or cumulative
average). Autograd's backward of the all-reduces sums the gradients of all ranks, which is what
makes the result equal to one BatchNorm over the global batch.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (backward: the sum of every rank's gradient)."""
    from torch.distributed.nn.functional import all_reduce

    # Recent torch calls it deprecated in favour of a private module whose autograd older
    # releases lack; this one is correct on every supported torch (tests check the gradients).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor)


def _world_size_if_syncing(training: bool) -> int:
    import torch.distributed as dist

    if training and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the batches of every rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _world_size_if_syncing(self.training) < 2 or not self.track_running_stats:
            return super().forward(x)
        channels = x.shape[1]
        shape = (1, channels, 1, 1)
        local_count = torch.tensor([x.numel() // channels], dtype=x.dtype, device=x.device)
        sums = _all_reduce_sum(torch.cat([x.sum((0, 2, 3)), local_count]))
        count = sums[-1].detach()
        mean = sums[:channels] / count
        centered = x - mean.view(shape)
        var = _all_reduce_sum(centered.square().sum((0, 2, 3))) / count  # two passes: as exact as BatchNorm
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            unbiased = var * (count / (count - 1)) if count > 1 else var
            self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        return out


def _convert_to_gloo(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_to_gloo(child))
    return module


def convert_sync_batchnorm(model: Any, device: str) -> Any:
    """Replace every BatchNorm of ``model`` in place by its synchronised form for ``device``.

    State dict keys stay the same, so checkpoints load into a plain ConvSegNet.
    """
    if device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_to_gloo(model)
