"""Training in several processes: torchrun + DistributedDataParallel on Gloo, two CPU processes.

The runs are real: ``convseg-deploy train --nproc-per-node 2`` starts torchrun, which starts two
worker processes that meet in a Gloo process group. Everything is tiny (resnet18 encoder,
8 decoder channels, 32x32 frames) because each run starts processes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convseg_deploy import ConvSegError, load_model
from convseg_deploy.checkpoint import read_checkpoint
from convseg_deploy.config import TrainConfig
from convseg_deploy.data import find_samples, load_samples, split_samples
from convseg_deploy.distributed import DistContext, check_world_size, epoch_shard
from convseg_deploy.evaluate import evaluate_runner
from convseg_deploy.metrics import METRIC_NAMES
from convseg_deploy.runtime.torch_runner import TorchRunner
from convseg_deploy.train import build_model, train
from tests.test_train import read_log

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
EPOCHS = 4  # the first run trains EPOCHS - 1, the resumed run one more
TINY = ["--encoder", "resnet18", "--decoder-channels", "8", "--image-size", str(SIZE), "--lr", "2e-3",
        "--device", "cpu", "--seed", "0", "--no-progress", "--no-augment"]
PROCESS_LIMIT_S = 300  # a hang guard for the subprocesses, not a speed check


def cli(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``convseg-deploy ARGS`` in a fresh process that imports this checkout."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "convseg_deploy.cli", *args], env=full_env, capture_output=True,
                          text=True, timeout=PROCESS_LIMIT_S, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]


# ------------------------------------------------------------------------------ no processes


def test_epoch_shards_are_disjoint_equal_and_reshuffled_every_epoch() -> None:
    n, world = 11, 2
    shards = [epoch_shard(n, 1, 0, DistContext(rank=r, world_size=world, backend="gloo")) for r in range(world)]
    assert [len(s) for s in shards] == [5, 5]  # equal: every rank takes the same number of steps
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) <= set(range(n))
    again = epoch_shard(n, 1, 0, DistContext(rank=0, world_size=world, backend="gloo"))
    np.testing.assert_array_equal(again, shards[0])  # the same on every rank that asks
    later = epoch_shard(n, 2, 0, DistContext(rank=0, world_size=world, backend="gloo"))
    assert later.tolist() != shards[0].tolist()  # set_epoch reshuffles


@pytest.mark.parametrize("frames, batch, world, match", [(3, 4, 2, "3 training frames"), (64, 1, 2, "--batch-size 1")])
def test_a_world_size_that_cannot_share_the_data_is_a_user_error(frames: int, batch: int, world: int, match: str) -> None:
    with pytest.raises(ConvSegError, match=match):
        check_world_size(frames, batch, world)
    check_world_size(frames, batch, 1)  # one process: today's rules


# ------------------------------------------------------------------------------ two processes


@pytest.fixture(scope="module")
def two_process_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-process run of EPOCHS - 1 epochs, then resumed by two processes for one more."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    first = cli("train", "--data", str(synth_data), "--out", str(out), *TINY, "--batch-size", "4",
                "--epochs", str(EPOCHS - 1), "--nproc-per-node", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    before = read_checkpoint(out / "last.pt")
    second = cli("train", "--data", str(synth_data), "--out", str(out), *TINY, "--batch-size", "4",
                 "--epochs", str(EPOCHS), "--nproc-per-node", "2", "--resume", str(out / "last.pt"))
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "first": first, "second": second, "before": before}


def test_two_ranks_train_disjoint_shards_and_only_rank_0_writes(two_process_run: dict[str, Any]) -> None:
    out = two_process_run["out"]
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))  # one row per epoch: one writer
    for row in rows:
        # 64 training frames: 32 per rank, and no frame on both ranks
        assert row["world_size"] == 2 and row["rank_frames"] == [32, 32] and row["distinct_frames"] == 64
        assert row["val_images"] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 4 and config["global_batch"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "log.jsonl"]
    for proc in (two_process_run["first"], two_process_run["second"]):
        epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
        assert len(epoch_lines) == len({line.split(":")[0] for line in epoch_lines})  # logged once, by rank 0
        assert "2 processes (gloo) x batch 4 = global batch 8" in proc.stdout
        assert proc.stdout.count("best validation dice") == 1


def test_a_distributed_run_resumes_where_it_stopped(two_process_run: dict[str, Any]) -> None:
    before, last = two_process_run["before"], read_checkpoint(two_process_run["out"] / "last.pt")
    assert f"resuming {two_process_run['out'] / 'last.pt'} at epoch {EPOCHS}" in two_process_run["second"].stdout
    assert before["epoch"] == EPOCHS - 1 and last["epoch"] == EPOCHS

    def adam_steps(ckpt: dict[str, Any]) -> int:
        return max(int(s["step"]) for s in ckpt["extra"]["train_state"]["optimizer"]["state"].values())

    assert adam_steps(last) == adam_steps(before) + 32 // 4  # one epoch more: 32 frames per rank, batch 4
    assert last["extra"]["train_state"]["world_size"] == 2


def _val_split(synth_data: Path) -> tuple[np.ndarray, np.ndarray]:
    cfg = TrainConfig()
    samples = split_samples(find_samples(synth_data), "val", synth_data, seed=0,
                            fractions=(cfg.val_fraction, cfg.test_fraction))
    images, masks = load_samples(samples, (SIZE, SIZE))
    assert masks is not None
    return images, masks


def test_distributed_checkpoint_loads_and_beats_the_untrained_model(two_process_run: dict[str, Any],
                                                                    synth_data: Path) -> None:
    model = load_model(two_process_run["out"] / "best.pt")
    assert model.config.encoder == "resnet18" and model.preprocess.size == (SIZE, SIZE)
    images, masks = _val_split(synth_data)
    polyp = masks.reshape(len(masks), -1).any(1)  # on empty frames predicting nothing already scores 1
    assert polyp.sum() >= 4
    torch.manual_seed(0)  # the initial weights of the run (DDP copies rank 0's)
    untrained = build_model(TrainConfig(encoder="resnet18", decoder_channels=8, image_size=(SIZE, SIZE))).eval()
    with TorchRunner(model=untrained) as runner:
        before = evaluate_runner(runner, images[polyp], masks[polyp])
    with TorchRunner(model=model) as runner:
        after = evaluate_runner(runner, images[polyp], masks[polyp])
    assert after["dice"] > before["dice"] + 0.1, (after["dice"], before["dice"])


def test_distributed_validation_equals_evaluate(two_process_run: dict[str, Any], synth_data: Path) -> None:
    out = two_process_run["out"]
    best = read_checkpoint(out / "best.pt")
    row = next(r for r in read_log(out) if r["epoch"] == best["epoch"])
    images, masks = _val_split(synth_data)
    with TorchRunner(out / "best.pt") as runner:
        evaluated = evaluate_runner(runner, images, masks)
    assert evaluated["images"] == row["val_images"] == 8
    for name in METRIC_NAMES:  # per-image averages over all frames, not a mean of the ranks' means
        assert row[f"val_{name}"] == pytest.approx(evaluated[name], rel=0, abs=1e-12), name


def test_two_processes_with_sync_bn_take_the_same_step_as_one_process_with_the_global_batch(
        synth_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(encoder="resnet18", decoder_channels=8, image_size=(SIZE, SIZE), epochs=1, batch_size=8, lr=2e-3,
                      device="cpu", seed=0, augment=False, max_train_images=8)
    train(cfg, synth_data, tmp_path / "one", progress=False, log=lambda _m: None)
    two = cli("train", "--data", str(synth_data), "--out", str(tmp_path / "two"), *TINY, "--batch-size", "4",
              "--epochs", "1", "--max-train-images", "8", "--sync-bn", "--nproc-per-node", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    one_state = read_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    two_state = read_checkpoint(tmp_path / "two" / "last.pt")["state_dict"]
    torch.manual_seed(0)
    start = build_model(cfg).state_dict()
    keys = [k for k, v in one_state.items() if v.is_floating_point()]
    assert set(two_state) == set(one_state)

    def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[k].flatten().double() for k in keys])

    one, two_w = flat(one_state), flat(two_state)
    rel = float((one - two_w).norm() / one.norm())
    assert rel <= 1e-5, rel
    moved = float((one - flat(start)).norm() / one.norm())
    assert moved > 1000 * rel, (moved, rel)  # the step was taken, and it is the same step
    # every tensor on its own, the head's single-channel BatchNorm included (looser: tensors near
    # zero, such as running means, carry the float noise of another summation order)
    for k in keys:
        diff = float((one_state[k].double() - two_state[k].double()).norm() / one_state[k].double().norm().clamp_min(1e-12))
        assert diff <= 1e-4, (k, diff)


# ------------------------------------------------------------------------------ failures


def test_a_world_size_too_large_for_the_data_fails_the_whole_job(synth_data: Path, tmp_path: Path) -> None:
    proc = cli("train", "--data", str(synth_data), "--out", str(tmp_path / "run"), *TINY, "--batch-size", "4",
               "--epochs", "1", "--max-train-images", "3", "--nproc-per-node", "2")
    assert proc.returncode == 1
    errors = error_lines(proc)
    assert any(e.startswith("Error: rank 0/2: 3 training frames cannot be shared by 2 processes") for e in errors), errors
    assert errors[-1].startswith("Error: training on 2 processes failed: rank ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_unreachable_rendezvous_fails_within_the_timeout(synth_data: Path, tmp_path: Path) -> None:
    port = free_port()  # nobody listens there: rank 0 never comes
    proc = cli("train", "--data", str(synth_data), "--out", str(tmp_path / "run"), *TINY, "--epochs", "1",
               "--dist-timeout", "2", env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    assert proc.returncode == 1
    assert error_lines(proc) == [error_lines(proc)[0]]
    assert error_lines(proc)[0].startswith(f"Error: rank 1/2: the 2 processes did not meet at 127.0.0.1:{port} within 2 s")
    assert "Traceback" not in proc.stderr


def test_a_rank_that_dies_stops_rank_0_with_an_error(synth_data: Path, tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "run"
    args = [sys.executable, "-m", "convseg_deploy.cli", "train", "--data", str(synth_data), "--out", str(out), *TINY,
            "--batch-size", "4", "--epochs", "20", "--max-train-images", "16", "--dist-timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen(args, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        assert ranks[0].stdout is not None
        for line in ranks[0].stdout:  # wait until training is under way
            if line.startswith("epoch 1:"):
                break
        ranks[1].send_signal(signal.SIGKILL)
        ranks[1].wait(timeout=PROCESS_LIMIT_S)
        stdout, stderr = ranks[0].communicate(timeout=PROCESS_LIMIT_S)
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert ranks[0].returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: rank 0/2: lost the other processes while "), stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(read_log(out)) < 20 and not list(out.glob(".*.tmp"))
