"""1 process and 2 processes (torchrun, gloo, CPU) train the same global batch to the same losses, DDP and FSDP2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cambrian.train.metrics import read_metrics
from tests.train.datagen import write_dataset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from cambrian.train import resolve_config
    from cambrian.train.trainer import train
    train(resolve_config(None, sys.argv[1:]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, procs: int, args: list[str]) -> list[float]:
    script = tmp_path / "train_child.py"
    script.write_text(SCRIPT)
    if procs == 1:
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), *args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    name = next(a.split("=", 1)[1] for a in args if a.startswith("name="))
    return [m["loss"] for m in read_metrics(tmp_path / name)]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_one_and_two_processes_give_the_same_losses(tmp_path, mode):
    data = write_dataset(tmp_path / "d", n=8, text_only=4)  # mixed batches: text-only micro-batches too
    common = [f"data.path={data}", "preset=tiny-stage2", "data.template=vicuna_v1", "data.system=",
              "progress=false", "max_steps=4", "save_every=2", "optim.lr=3e-3", f"output_dir={tmp_path}",
              "data.group_by_modality_length=false", "global_batch=8"]  # fmt: skip
    one = _run(tmp_path, 1, [*common, "name=one", "per_device_batch=4"])
    two = _run(tmp_path, 2, [*common, "name=two", "per_device_batch=2", f"distributed={mode}"])
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert (run["processes"], run["distributed"], run["grad_accum"]) == (2, mode, 2)
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=2e-5, abs=1e-6)
    assert one[-1] < one[0]
