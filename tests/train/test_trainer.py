"""The trainer on a tiny model: both stages learn, frozen parts stay put, resume after a kill is exact."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cambrian import CambrianForCausalLM
from cambrian.train import resolve_config
from cambrian.train.checkpoint import list_checkpoints
from cambrian.train.metrics import read_metrics
from cambrian.train.trainer import TrainingStopped, build_model, train
from tests.train.datagen import write_dataset

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, data: Path, *overrides: str, preset: str = "tiny-stage2"):
    return resolve_config(
        None,
        [f"preset={preset}", f"data.path={data}", f"output_dir={tmp_path / 'runs'}", "progress=false",
         "data.template=vicuna_v1", "data.system=", *overrides],
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n=8, text_only=4)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_two_stages_learn_and_stage1_freezes_towers_and_llm(tmp_path, data):
    # A random frozen LLM leaves the connector little to fit (text-only rows keep a constant loss).
    cfg1 = _cfg(tmp_path, data, "name=s1", "max_steps=30", "save_every=0", "optim.connector_lr=1e-2",
                "optim.sva_lr=1e-2", preset="tiny-stage1")  # fmt: skip
    torch.manual_seed(cfg1.seed)
    before, _ = build_model(cfg1)  # the trainer builds the same initial weights from the seed
    r1 = train(cfg1)
    assert r1.losses[-1] < r1.losses[0] - 0.15, r1.losses
    after = CambrianForCausalLM.from_pretrained(r1.final_dir)
    for part in ("vision_towers", "language_model"):
        b, a = _snapshot(getattr(before, part)), _snapshot(getattr(after, part))
        assert all(torch.equal(b[k], a[k]) for k in b), f"{part} changed in stage 1"
    b, a = _snapshot(before.connector), _snapshot(after.connector)
    assert any(not torch.equal(b[k], a[k]) for k in b)
    assert (r1.run_dir / "connector.safetensors").is_file() and (r1.run_dir / "loss.png").is_file()
    assert json.loads((r1.run_dir / "run.json").read_text())["trainable"] == {
        "towers": False, "connector": True, "sva": True, "llm": False
    }  # fmt: skip

    cfg2 = _cfg(tmp_path, data, "name=s2", "max_steps=40", "save_every=0", "optim.lr=3e-3",
                f"model.connector_path={r1.run_dir}")  # fmt: skip
    r2 = train(cfg2)
    assert r2.losses[0] < r1.losses[0]  # stage 2 starts from the aligned connector
    assert r2.losses[-1] < r2.losses[0] / 4, r2.losses
    metrics = read_metrics(r2.run_dir)
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert (r2.run_dir / "config.yaml").is_file()


def _child(cfg_args: list[str], kill_at: str | None) -> subprocess.CompletedProcess:
    """Train in a fresh process; with ``kill_at`` it SIGKILLs itself while renaming that checkpoint."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from cambrian.train import resolve_config
        from cambrian.train.trainer import train
        kill_at = {kill_at!r}
        real_replace = os.replace
        def replace(src, dst):
            if kill_at and str(dst).endswith(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)  # shards and rng written, rename not done
            return real_replace(src, dst)
        os.replace = replace
        train(resolve_config(None, {cfg_args!r}), resume="--resume" in sys.argv)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_resume_after_kill_during_save_reproduces_the_loss_sequence(tmp_path, data):
    common = [f"data.path={data}", "preset=tiny-stage2", "data.template=vicuna_v1", "data.system=",
              "progress=false", "max_steps=9", "save_every=3", "keep_last=2", "optim.lr=3e-3"]  # fmt: skip
    straight = train(resolve_config(None, [*common, f"output_dir={tmp_path}", "name=straight"]))

    args = [*common, f"output_dir={tmp_path}", "name=killed"]
    run_dir = tmp_path / "killed"
    first = _child(args, kill_at="step-00000006")
    assert first.returncode != 0
    assert [s for s, _ in list_checkpoints(run_dir)] == [3]
    assert (run_dir / "checkpoints" / "step-00000006.tmp").is_dir()  # the save that was cut off

    resumed = train(resolve_config(None, args), resume=True)
    assert not (run_dir / "checkpoints" / "step-00000006.tmp").exists()
    assert [s for s, _ in list_checkpoints(run_dir)] == [6, 9]  # keep_last=2
    assert resumed.losses == straight.losses[3:]
    assert [m["loss"] for m in read_metrics(run_dir)] == straight.losses


def test_bad_images_are_skipped_counted_and_stop_the_run_past_the_limit(tmp_path):
    data = write_dataset(tmp_path / "d", n=8, bad_images=4)
    r = train(_cfg(tmp_path, data, "name=ok", "max_steps=3", "save_every=0", "data.max_bad_fraction=0.5",
                   "data.bad_check_after=0"))  # fmt: skip
    logged = [json.loads(x) for x in (r.run_dir / "skipped.rank0.jsonl").read_text().splitlines()]
    assert logged and all(x["id"].startswith("bad-") and "not found" in x["reason"] for x in logged)
    assert sum(m["skipped"] for m in read_metrics(r.run_dir)) == len(logged)
    with pytest.raises(TrainingStopped, match=r"max_bad_fraction=0.05.*cambrian data validate"):
        train(_cfg(tmp_path, data, "name=stop", "max_steps=3", "data.max_bad_fraction=0.05",
                   "data.bad_check_after=0"))  # fmt: skip


def test_gradient_checkpointing_and_bf16_autocast(tmp_path, data):
    base = _cfg(tmp_path, data, "name=plain", "max_steps=3", "save_every=0")
    ckpt = _cfg(tmp_path, data, "name=ckpt", "max_steps=3", "save_every=0", "gradient_checkpointing=true")
    assert train(ckpt).losses == pytest.approx(train(base).losses, rel=1e-5)
    bf16 = train(_cfg(tmp_path, data, "name=bf16", "max_steps=3", "save_every=0", "precision=bf16"))
    assert all(torch.isfinite(torch.tensor(bf16.losses)))


def test_changing_the_global_batch_scales_the_learning_rate(tmp_path, data, capsys):
    r = train(_cfg(tmp_path, data, "name=scaled", "max_steps=1", "save_every=0", "global_batch=4",
                   "per_device_batch=4", "optim.lr=1e-3"))  # fmt: skip
    run = json.loads((r.run_dir / "run.json").read_text())
    assert run["lr_scale"] == pytest.approx((4 / 8) ** 0.5)
    assert run["lrs"]["llm"] == pytest.approx(1e-3 * (4 / 8) ** 0.5)
    assert "scaled by sqrt(4/8) = 0.707: llm 0.001 -> 0.000707" in capsys.readouterr().err


def test_an_existing_run_is_refused_unless_resumed_or_overwritten(tmp_path, data):
    args = ("name=again", "save_every=1", "keep_last=2")
    old = train(_cfg(tmp_path, data, *args, "max_steps=4"))
    run = old.run_dir
    assert [s for s, _ in list_checkpoints(run)] == [3, 4]
    again = _cfg(tmp_path, data, *args, "max_steps=2")
    with pytest.raises(
        ValueError, match=r"already holds a run \(checkpoints up to step 4\).*--resume.*--overwrite"
    ):
        train(again)
    assert [s for s, _ in list_checkpoints(run)] == [3, 4] and len(read_metrics(run)) == 4  # untouched
    with pytest.raises(ValueError, match="contradict"):
        train(again, resume=True, overwrite=True)

    # Without clearing, keep_last would delete steps 1-2 of the new run and keep the old run's 3-4.
    new = train(again, overwrite=True)
    assert [s for s, _ in list_checkpoints(run)] == [1, 2]
    assert [m["step"] for m in read_metrics(run)] == [1, 2]
    assert new.losses == pytest.approx(old.losses[:2], rel=1e-5)  # same seed, same first two lrs: a fresh run

    # Resuming it with another data file or global batch is refused, naming both values.
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text())
    with pytest.raises(
        ValueError, match=rf"data\.path: .* trained on {re.escape(str(data))}, not {re.escape(str(other))}"
    ):
        train(_cfg(tmp_path, other, *args, "max_steps=3"), resume=True)
    with pytest.raises(ValueError, match=r"global_batch: .* global batch 8, this one would use 4"):
        train(_cfg(tmp_path, data, *args, "max_steps=3", "global_batch=4"), resume=True)
    assert [s for s, _ in list_checkpoints(run)] == [1, 2]
