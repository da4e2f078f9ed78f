"""Training on several processes with torchrun and DistributedDataParallel.

PyTorch does the work: ``torchrun`` starts one process per device and rendezvouses them, and
this module only reads what torchrun put in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT), joins the process group (NCCL on CUDA, Gloo on CPU) with a timeout on every
collective, and offers the few collectives training needs. Without torchrun's environment the
context is a single process and nothing here talks to other processes.

A process that waits for a peer that died or never came gets an exception from Gloo/NCCL
within the timeout; ``collectives`` turns it into a one-line ConvSegError so the job exits
non-zero instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np

from convseg_deploy.errors import ConvSegError, one_line

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Longest a process waits in one collective (and for the process group to form). Rank 0 writes
# checkpoints while the others already wait in the next step's all-reduce: seconds, not minutes.
DEFAULT_TIMEOUT_S = 600.0
MIN_FRAMES_PER_STEP = 2  # BatchNorm cannot train on a single frame


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job. ``backend`` None: a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def name(self) -> str:
        return f"rank {self.rank}/{self.world_size}"


def launched_by_torchrun(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return all(key in env for key in TORCHRUN_ENV)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process: the one that reports."""
    return os.environ.get("RANK", "0") == "0" or not launched_by_torchrun()


def _env_int(key: str) -> int:
    value = os.environ[key]
    try:
        return int(value)
    except ValueError:
        raise ConvSegError(f"environment variable {key}={value!r} is not an integer: start training with torchrun") from None


def _rank_device(device: str, local_rank: int) -> str:
    """One device per local rank: cuda:<local rank> on GPUs, the CPU otherwise."""
    import torch

    from convseg_deploy.runtime.torch_runner import resolve_device

    if device.startswith("cuda:"):
        raise ConvSegError(f"--device {device} names one GPU, but torchrun starts one process per GPU: "
                           "use --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    resolved = resolve_device(device)
    if resolved == "cpu":
        return "cpu"
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConvSegError(f"local rank {local_rank} has no GPU: this machine has {count}; "
                           f"use --nproc-per-node {count} or fewer")
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def init_distributed(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """The context of this process; joins torchrun's process group when torchrun started it."""
    if not launched_by_torchrun():
        from convseg_deploy.runtime.torch_runner import resolve_device

        return DistContext(device=resolve_device(device))
    import torch
    import torch.distributed as dist

    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world:
        raise ConvSegError(f"RANK={rank} is outside WORLD_SIZE={world}: start training with torchrun")
    rank_device = _rank_device(device, local_rank)
    backend = "nccl" if rank_device.startswith("cuda") else "gloo"
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        # NCCL: bind the communicator to this rank's GPU now (eager init), not at the first collective
        kwargs: dict[str, Any] = {"device_id": torch.device(rank_device)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    except (RuntimeError, ValueError, TimeoutError) as exc:
        raise ConvSegError(
            f"rank {rank}/{world}: the {world} processes did not meet at {where} within {timeout_s:g} s "
            f"({one_line(exc, 300)}): check that every node runs the same command, that the address is reachable "
            "and that --nnodes x --nproc-per-node matches the processes started") from None
    return DistContext(rank, world, local_rank, rank_device, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def is_peer_failure(exc: BaseException) -> bool:
    """Whether an exception says that another process failed or timed out (not a bug here)."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(word in text for word in ("gloo", "nccl", "connection closed",
                                                                           "connection reset", "timed out"))


@contextlib.contextmanager
def collectives(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a peer's death or a collective timeout while doing ``what`` into a one-line error."""
    try:
        yield
    except RuntimeError as exc:
        if not ctx.enabled or not is_peer_failure(exc):
            raise
        raise ConvSegError(f"{ctx.name}: lost the other processes while {what} ({one_line(exc, 300)}); "
                           "the job stops: the first error of another rank above says why") from None


def all_gather(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def check_same_options(ctx: DistContext, options: dict[str, Any]) -> None:
    """Every rank must train with the same options (seed, split, batch): else shards overlap."""
    for rank, theirs in enumerate(all_gather(ctx, options)):
        differ = sorted(k for k in options if theirs.get(k) != options[k])
        if differ:
            k = differ[0]
            raise ConvSegError(f"{ctx.name}: rank {rank} trains with {k}={theirs.get(k)!r}, this rank with "
                               f"{options[k]!r}: start every node with the same command and options")


def check_world_size(n_train: int, batch_size: int, world_size: int) -> None:
    """Every rank needs a shard with at least one trainable step."""
    if world_size > 1 and n_train // world_size < MIN_FRAMES_PER_STEP:
        raise ConvSegError(f"{n_train} training frames cannot be shared by {world_size} processes "
                           f"(each needs at least {MIN_FRAMES_PER_STEP}): use fewer processes or more frames")
    if world_size > 1 and batch_size < MIN_FRAMES_PER_STEP:
        raise ConvSegError(f"--batch-size {batch_size} per process is too small for BatchNorm: use at least "
                           f"{MIN_FRAMES_PER_STEP} (the global batch is batch size x {world_size} processes)")


def epoch_shard(n: int, epoch: int, seed: int, ctx: DistContext) -> np.ndarray:
    """This rank's frame indices for ``epoch``: torch's DistributedSampler with the epoch set.

    Shards are disjoint and equally long (the remainder of n / world size is dropped, a
    different few frames each epoch), so every rank takes the same number of steps.
    """
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64)


def sum_over_ranks(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sums over ranks, added in rank order so every rank gets the same floats."""
    gathered = all_gather(ctx, [float(v) for v in values])
    return [sum(row[i] for row in gathered) for i in range(len(values))]


def sync_bn_buffers(ctx: DistContext, model: Any, averaged: bool) -> None:
    """Make BatchNorm running statistics identical on every rank.

    ``averaged``: average the ranks' statistics first (each rank estimated them on its own
    frames); otherwise they are already equal (synchronised BN) and rank 0's copy is sent.
    """
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            for buf in (module.running_mean, module.running_var):
                if averaged:
                    dist.all_reduce(buf)
                    buf /= ctx.world_size
                dist.broadcast(buf, src=0)


def prepare_model(model: Any, ctx: DistContext, sync_bn: bool) -> Any:
    """The model to train: itself in one process, else (optionally sync-BN'd) wrapped in DDP."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        from convseg_deploy.sync_batchnorm import convert_sync_batchnorm

        convert_sync_batchnorm(model, ctx.device)
    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def launch_local(nproc: int, worker_args: list[str]) -> None:
    """Run ``convseg-deploy <worker_args>`` in ``nproc`` processes on this machine with torchrun.

    torchrun's standalone rendezvous picks a free local port; ``--max-restarts 0``: a failed
    rank stops the job (torchrun then stops the other ranks), it is not retried.
    """
    if launched_by_torchrun():
        raise ConvSegError("--nproc-per-node starts torchrun, but this process already runs under torchrun: leave it out")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                         "-m", "convseg_deploy.cli", *worker_args])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        raise ConvSegError(f"training on {nproc} processes failed: rank {rank} {how} (its error is above); "
                           "torchrun stopped the other ranks") from None
