"""The evaluation runner end to end: every registered benchmark's fixture through `eval run` on the tiny
preset, resume after an interruption (and a torn last line), 2-process torchrun == 1 process, the CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cambrian import build_tiny
from cambrian.cli import app
from cambrian.eval.answers import read_jsonl, score_file
from cambrian.eval.benchmarks import BENCHMARKS, MODULES
from cambrian.eval.runner import RunMismatchError, evaluate

REPO = Path(__file__).resolve().parents[2]
# The original's CV-Bench parts read the CV-Bench snapshot.
SHARED_FIXTURES = {"ade": "cvbench", "coco": "cvbench", "omni": "cvbench"}


def write_fixture(name: str, root: Path) -> None:
    """The benchmark's tiny official-format snapshot (``write_snapshot`` of its own test module)."""
    module = SHARED_FIXTURES.get(name, name)
    importlib.import_module(f"tests.eval.benchmarks.test_{module}").write_snapshot(root / name)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny")


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_runs_end_to_end(name, tiny, tmp_path):
    model, processor = tiny
    write_fixture(name, tmp_path / "data")
    bench = BENCHMARKS.get(name)
    items = bench.load(tmp_path / "data" / name, bench.splits[0])
    assert sum(it.generate for it in items) >= 2
    summary = evaluate(model, processor, [name], tmp_path / "data", tmp_path / "out", model_id="tiny",
                       batch_size=3, max_new_tokens=3, progress=False)  # fmt: skip
    out = tmp_path / "out" / name
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["item_key"] for r in records] == [it.key for it in items]
    assert [r["item_index"] for r in records] == list(range(len(items)))
    for r, it in zip(records, items):
        assert isinstance(r[bench.answer_field], str)
        assert r["model_id"] == "tiny"
        if not it.generate:
            assert r[bench.answer_field] == ""
    score = json.loads((out / "score.json").read_text())
    assert score["benchmark"] == name and "headline" in score and isinstance(score["n"], int)
    assert summary["benchmarks"][name]["headline"] == score["headline"]
    # Rescoring the written file gives the same numbers (one scoring path for ours and the original's).
    assert score_file(bench, out / "predictions.jsonl") == score


def test_resume_generates_only_what_is_missing(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    write_fixture("cvbench", tmp_path / "data")
    kw = dict(model_id="tiny", batch_size=2, max_new_tokens=3, progress=False)
    clean = evaluate(model, processor, ["cvbench"], tmp_path / "data", tmp_path / "clean", **kw)
    reference = read_jsonl(tmp_path / "clean" / "cvbench" / "predictions.jsonl")

    calls = []
    original = type(processor).generate_replies

    def dying(self, *args, **kwargs):
        if len(calls) == 2:  # the process dies while the third batch is generated
            raise KeyboardInterrupt
        calls.append(len(args[1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(processor), "generate_replies", dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, processor, ["cvbench"], tmp_path / "data", tmp_path / "run", **kw)
    pred = tmp_path / "run" / "cvbench" / "predictions.jsonl"
    assert len(read_jsonl(pred)) == 4
    with pred.open("a") as f:  # and the kill tore the last line mid-write
        f.write('{"question_id": 4, "type": "3D", "ans')
    monkeypatch.setattr(type(processor), "generate_replies", original)
    calls.clear()
    monkeypatch.setattr(
        type(processor), "generate_replies", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    resumed = evaluate(model, processor, ["cvbench"], tmp_path / "data", tmp_path / "run", **kw)
    assert resumed["benchmarks"]["cvbench"]["generated"] == 2 and len(calls) == 1
    assert read_jsonl(pred) == reference
    assert resumed["benchmarks"]["cvbench"]["headline"] == clean["benchmarks"]["cvbench"]["headline"]
    # Nothing left: a third call generates nothing.
    again = evaluate(model, processor, ["cvbench"], tmp_path / "data", tmp_path / "run", **kw)
    assert again["benchmarks"]["cvbench"]["generated"] == 0
    # Other settings in the same directory are refused, not mixed in.
    with pytest.raises(RunMismatchError, match="max_new_tokens"):
        evaluate(
            model, processor, ["cvbench"], tmp_path / "data", tmp_path / "run", **{**kw, "max_new_tokens": 5}
        )


def _cli(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "cambrian.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cambrian.cli", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


RUN = ["eval", "run", "tiny", "--random"]  # the tiny preset, random weights


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    write_fixture("cvbench", tmp_path / "data")
    write_fixture("mme", tmp_path / "data")
    args = [*RUN, "-b", "cvbench,mme", "--data", str(tmp_path / "data"), "--max-new-tokens", "3",
            "--batch-size", "2"]  # fmt: skip
    one = _cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli(*args, "--out", str(tmp_path / "two"), nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in ("cvbench", "mme"):
        a = (tmp_path / "one" / name / "predictions.jsonl").read_text()
        b = (tmp_path / "two" / name / "predictions.jsonl").read_text()
        assert a == b and a.count("\n") >= 2
        assert not list((tmp_path / "two" / name).glob("predictions.rank*"))
        assert json.loads((tmp_path / "one" / name / "score.json").read_text()) == json.loads(
            (tmp_path / "two" / name / "score.json").read_text()
        )


def test_cli_run_score_and_errors(tmp_path):
    write_fixture("cvbench", tmp_path / "data")
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, [*RUN, "-b", "cvbench", "--data", str(tmp_path / "data"),
                              "--out", str(out), "--max-new-tokens", "2", "--limit", "4"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out / "cvbench" / "predictions.jsonl")) == 4
    res = runner.invoke(
        app, ["eval", "score", "cvbench", str(out / "cvbench" / "predictions.jsonl"), "--json"]
    )
    assert res.exit_code == 0, res.output
    parsed = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert parsed["benchmark"] == "cvbench" and parsed["n"] == 4 and "headline" in parsed

    def fails(args, *needles):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        for needle in needles:
            assert needle in r.output, r.output

    fails(["eval", "run", "tiny", "-b", "cvbench", "--data", str(tmp_path / "data")],
          "tiny is a preset with random weights; pass --random to build it")  # fmt: skip
    fails([*RUN, "-b", "cvbnech", "--data", str(tmp_path / "data")], "cvbnech", "mme")
    fails([*RUN, "-b", "mme", "--data", str(tmp_path / "data"), "--out", str(out)],
          str(tmp_path / "data" / "mme"))  # fmt: skip
    fails([*RUN, "-b", "cvbench", "--data", str(tmp_path / "data"), "--rules", "new"], "legacy")
    fails([*RUN, "-b", "cvbench", "--data", str(tmp_path / "data"), "--split", "cvbench"],
          "BENCH=SPLIT")  # fmt: skip
    fails([*RUN, "-b", "cvbench", "--data", str(tmp_path / "data"), "--split", "cvbench=val"],
          "valid splits of cvbench: test")  # fmt: skip
    fails(["eval", "score", "cvbench", str(tmp_path / "nope.jsonl")], "nope.jsonl", "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "A"}\n{oops\n')
    fails(["eval", "score", "cvbench", str(bad)], "bad.jsonl:2")
    bad.write_text('{"answer": "A", "options": ["a", "b"]}\n')
    fails(["eval", "score", "cvbench", str(bad)], "gt_answer")
