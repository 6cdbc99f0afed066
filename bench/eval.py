"""Evaluation figures: `eval run` items/s at batch 1 vs 16, scoring 100k predictions per benchmark, 2 vs 1 processes.

Run: ``.venv/bin/python bench/eval.py [--items N] [--new-tokens T] [--records N] [--skip-procs]``.
Prints three tables; asserts nothing.

1. Generation: the runner (``cambrian.eval.runner.evaluate``, what ``cambrian eval run`` calls) on a
   CV-Bench-format snapshot of synthetic items (``cambrian.quickstart.dataset``) with the tiny preset, at
   batch 1 (the original scripts' protocol) and batch 16, in the same run; answers must be identical.
2. Scoring: for every registered benchmark, ``--records`` prediction records built from its test
   fixture's items (answers: the ground truth, a letter, empty output, and for half of them distinct
   strings and numbers) are scored with the legacy and the recommended rules.
3. Processes: ``cambrian eval run`` as 1 process vs ``torchrun --nproc_per_node=2`` (CPU, gloo) on the
   same snapshot, wall time including model start-up; predictions must be identical.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def _snapshot(tmp: Path, items: int) -> Path:
    from cambrian.quickstart.dataset import generate

    root = tmp / "data"
    generate(root / "cvbench", 8, items, seed=0, progress=False)
    return root


def bench_generation(
    console: Console, root: Path, tmp: Path, new_tokens: int, batch_sizes: list[int]
) -> None:
    from cambrian import build_tiny
    from cambrian.eval.answers import read_jsonl
    from cambrian.eval.runner import evaluate

    model, processor = build_tiny("tiny", seed=0)
    table = Table(title=f"eval run: CV-Bench-format synthetic items, tiny preset, up to {new_tokens} new tokens, "
                  f"{torch.get_num_threads()} threads")  # fmt: skip
    for col in ("batch size", "items", "items/s", "vs batch 1", "same answers as batch 1"):
        table.add_column(col, justify="right")
    base_rate = base = None
    for bs in batch_sizes:
        out = tmp / f"gen_b{bs}"
        t0 = time.perf_counter()
        evaluate(model, processor, ["cvbench"], root, out, model_id="tiny", batch_size=bs,
                 max_new_tokens=new_tokens, progress=False, console=Console(quiet=True))  # fmt: skip
        seconds = time.perf_counter() - t0
        answers = [r["answer"] for r in read_jsonl(out / "cvbench" / "predictions.jsonl")]
        rate = len(answers) / seconds
        if base is None:
            base_rate, base = rate, answers
        same = sum(a == b for a, b in zip(answers, base))
        table.add_row(
            str(bs), str(len(answers)), f"{rate:.1f}", f"{rate / base_rate:.2f}x", f"{same}/{len(base)}"
        )
    console.print(table)


def _records(name: str, tmp: Path, n: int) -> list[dict]:
    """``n`` records of benchmark ``name`` from its fixture's items, with varied answers."""
    sys.path.insert(0, str(REPO))
    from tests.eval.test_runner import write_fixture

    from cambrian.eval.benchmarks import BENCHMARKS
    from cambrian.eval.runner import _record

    write_fixture(name, tmp / "fixtures")
    bench = BENCHMARKS.get(name)
    items = bench.load(tmp / "fixtures" / name, bench.splits[0])
    rng = random.Random(0)
    out = []
    for i in range(n):
        item = items[i % len(items)]
        gt = item.record.get("gt_answer", "")
        gt = gt[0] if isinstance(gt, list) and gt else gt
        # Half the answers are distinct strings, so no per-string cache makes scoring look faster.
        answer = rng.choice([str(gt), f"The answer is {str(gt)[:3]}.", "B", "no", "",
                             f"{rng.random() * 100:.3f}", f"word {rng.randrange(10**9)} and more",
                             f"({rng.choice('ABCD')}) {rng.randrange(10**9)}", f"{rng.randrange(10**9)}.",
                             f"the answer is: {rng.randrange(10**6)}, {rng.randrange(10**6)}"])  # fmt: skip
        record = _record(bench, item, i, answer, "bench")
        record["item_key"] = f"{item.key}#{i}"
        out.append(record)
    return out


def bench_scoring(console: Console, tmp: Path, n: int) -> None:
    from cambrian.eval.answers import score_records
    from cambrian.eval.benchmarks import BENCHMARKS

    table = Table(title=f"scoring {n:,} prediction records per benchmark (pure Python, 1 thread)")
    for col in ("benchmark", "legacy s", "recommended s", "records/s (legacy)"):
        table.add_column(col, justify="right")
    total = 0.0
    for name in BENCHMARKS.names():
        records = _records(name, tmp, n)
        times = []
        for rules in ("legacy", "recommended"):
            t0 = time.perf_counter()
            score_records(BENCHMARKS.get(name), records, rules)
            times.append(time.perf_counter() - t0)
        total += times[0]
        table.add_row(name, f"{times[0]:.2f}", f"{times[1]:.2f}", f"{n / times[0]:,.0f}")
    table.add_row("all (legacy)", f"{total:.1f}", "", "")
    console.print(table)


def bench_processes(console: Console, root: Path, tmp: Path, new_tokens: int, batch: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["eval", "run", "tiny", "--random", "-b", "cvbench", "--data", str(root),
            "--max-new-tokens", str(new_tokens),
            "--batch-size", str(batch)]  # fmt: skip
    table = Table(title="eval run: 1 process vs torchrun 2 processes (CPU, gloo), wall time incl. start-up")
    for col in ("processes", "threads each", "seconds", "vs 1 process", "same predictions"):
        table.add_column(col, justify="right")
    results = {}
    cpus = os.cpu_count() or 1
    for nproc in (1, 2):
        out = tmp / f"procs{nproc}"
        launch = [sys.executable, "-m", "cambrian.cli"] if nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "cambrian.cli"]  # fmt: skip
        threads = max(1, cpus // nproc)
        t0 = time.perf_counter()
        subprocess.run([*launch, *args, "--out", str(out)], check=True, capture_output=True,
                       env={**env, "OMP_NUM_THREADS": str(threads)})  # fmt: skip
        results[nproc] = (
            time.perf_counter() - t0,
            (out / "cvbench" / "predictions.jsonl").read_text(),
            threads,
        )
    for nproc, (seconds, text, threads) in results.items():
        table.add_row(str(nproc), str(threads), f"{seconds:.1f}", f"{results[1][0] / seconds:.2f}x",
                      str(text == results[1][1]))  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=64, help="synthetic CV-Bench items to generate answers for")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--records", type=int, default=100_000, help="prediction records scored per benchmark")
    ap.add_argument("--skip-procs", action="store_true", help="skip the 1 vs 2 processes comparison")
    args = ap.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        root = _snapshot(tmp, args.items)
        bench_generation(console, root, tmp, args.new_tokens, [int(b) for b in args.batch_sizes.split(",")])
        bench_scoring(console, tmp, args.records)
        if not args.skip_procs:
            bench_processes(console, root, tmp, args.new_tokens, 16)


if __name__ == "__main__":
    main()
