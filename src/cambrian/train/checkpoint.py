"""Atomic, resumable training checkpoints.

A checkpoint is a directory ``checkpoints/step-00000120`` holding the trainable model parameters and
the optimizer state (``torch.distributed.checkpoint``: each process writes its own shards, and a run
can resume on a different number of processes), each process's RNG state, and
``trainer_state.json`` (step, scheduler, counters). Everything is written into ``step-XXXXXXXX.tmp``
first; ``trainer_state.json`` is written last and the directory is renamed only then, so a process
killed while saving leaves a ``.tmp`` directory that resume ignores (and removes), never a checkpoint
that looks complete. The last ``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from cambrian.train.distributed import DistContext

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, path), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Delete ``.tmp`` leftovers of a save that never finished; returns what was removed."""
    root = Path(run_dir) / "checkpoints"
    gone = [d for d in root.glob("step-*.tmp")] if root.is_dir() else []
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Frozen parameters come from the model's own initial weights, so checkpoints hold only trainable ones
# (stage 1: the connector). Loading is not strict about the frozen ones; dcp.load fails on any
# trainable key the checkpoint lacks.
_OPTIONS = StateDictOptions(ignore_frozen_params=True)
_LOAD_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """dcp warns that it assumes a single process when no process group exists: that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically on all processes (collective); returns its final path."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    with _single_process_quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp), no_dist=not ctx.enabled)
    torch.save(rng_state(), tmp / f"rng-{ctx.rank}.pt")
    ctx.barrier()
    if ctx.is_main:
        state = dict(trainer_state, step=step, world_size=ctx.world_size)
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a checkpoint of the same step from an earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    ctx.barrier()
    return final


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any]:
    """Restore model, optimizer and (when the process count matches) RNG state; returns trainer_state."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(path), no_dist=not ctx.enabled)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=_LOAD_OPTIONS,
    )
    trainer_state = json.loads((path / STATE_FILE).read_text())
    rng_file = path / f"rng-{ctx.rank}.pt"
    if trainer_state.get("world_size") == ctx.world_size and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return trainer_state
