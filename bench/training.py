"""Data-side benchmarks for training: the on-disk row index against loading everything with ``json``.

Run: ``.venv/bin/python bench/training.py [--quick]``. Prints rich tables; asserts nothing about speed.

``bench_index``: synthetic LLaVA-style rows (90% with one image, 10% text-only, answers of varied length)
written as JSONL files of 1M and 10M rows (``--quick``: 200k and 1M) and as a ``.json`` array of 1M
rows, in a temporary directory that is removed at the end. For each file:

- ``RowIndex.open`` build time (cold: no index yet), rows/s and MB/s, index size on disk per row;
- in a fresh forked process: time to reopen the built index, the rise of the resident set (VmRSS from
  ``/proc/self/status``) after opening and after 10k random ``row(i)`` calls, and the time per call.
  The data file was just written, so its pages are in the page cache (warm reads);
- for the 1M files, the baseline in another fresh process: ``json.loads`` of every line (JSONL) or one
  ``json.load`` (``.json``), its time and RSS rise, and the (trivial) random lookup in the list.

``bench_training``: training samples/s of the ``tiny-stage2`` preset on CPU on a small synthetic image +
text dataset, through the real trainer (``cambrian.train.trainer.train``, each run in a fresh process):
one process (all cores), one process with one thread, and 2-process DDP over gloo (``torchrun``, one
thread each), all with the same global batch; steady-state median over steps after the first two,
peak resident memory per process, and the DDP / single-process ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cambrian.data.index import RowIndex

console = Console(width=None if sys.stdout.isatty() else 150)  # full tables in logs too
N_ACCESS = 10_000
BASELINE_ROWS = 1_000_000

_QUESTIONS = [
    "What is shown in this image?",
    "Describe the scene in detail.",
    "How many people are visible, and what are they doing?",
    "What color is the largest object on the left side of the picture?",
]
_WORDS = (
    "the a cat dog sits on red blue mat near window while sun shines through glass and trees sway".split()
)


def _answers(k: int = 64) -> list[str]:
    """Answers from 5 to ~200 words, JSON-escaped, so row lengths vary like real data."""
    rng = np.random.default_rng(0)
    out = []
    for j in range(k):
        n = 5 + int(rng.integers(0, 40 if j % 4 else 200))
        out.append(json.dumps(" ".join(rng.choice(_WORDS, n)) + ".")[1:-1])
    return out


def _rows(lo: int, hi: int) -> list[str]:
    """JSON text of rows ``lo..hi-1`` (one object each, no newline)."""
    answers, questions = _answers(), [json.dumps(q)[1:-1] for q in _QUESTIONS]
    img = (
        '{"id": "%d", "image": "coco/train2017/%012d.jpg", "conversations": [{"from": "human", '
        '"value": "<image>\\n%s"}, {"from": "gpt", "value": "%s"}]}'
    )
    txt = '{"id": "%d", "conversations": [{"from": "human", "value": "%s"}, {"from": "gpt", "value": "%s"}]}'
    out = []
    for i in range(lo, hi):
        h = (i * 2654435761) & 0xFFFFFFFF  # cheap per-row hash for varied picks
        q, a = questions[h % len(questions)], answers[(h >> 8) % len(answers)]
        out.append(txt % (i, q, a) if h % 10 == 0 else img % (i, i, q, a))
    return out


def write_jsonl(path: Path, n: int, block: int = 200_000) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for lo in range(0, n, block):
            f.write("\n".join(_rows(lo, min(n, lo + block))) + "\n")


def write_json_array(path: Path, n: int, block: int = 200_000) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for lo in range(0, n, block):
            sep = "" if lo == 0 else ",\n"
            f.write(sep + ",\n".join(_rows(lo, min(n, lo + block))))
        f.write("\n]\n")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh forked process (clean RSS accounting) and return its dict."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target() -> None:
        child.send(fn(*args))

    proc = ctx.Process(target=target)
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def _measure_open(path: Path, n: int) -> dict[str, Any]:
    gc.collect()
    ids = np.random.default_rng(0).integers(0, n, N_ACCESS)
    r0 = rss_bytes()
    t = time.perf_counter()
    idx = RowIndex.open(path, progress=False)
    open_s = time.perf_counter() - t
    r_open = rss_bytes() - r0
    assert not idx.built
    t = time.perf_counter()
    for i in ids:
        idx.row(int(i))
    per_row = (time.perf_counter() - t) / len(ids)
    return {"open_s": open_s, "rss_open": r_open, "rss_access": rss_bytes() - r0, "row_us": per_row * 1e6}


def _measure_json(path: Path, n: int) -> dict[str, Any]:
    gc.collect()
    ids = np.random.default_rng(0).integers(0, n, N_ACCESS).tolist()
    r0 = rss_bytes()
    t = time.perf_counter()
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    load_s = time.perf_counter() - t
    rise = rss_bytes() - r0
    t = time.perf_counter()
    for i in ids:
        rows[i]
    per_row = (time.perf_counter() - t) / len(ids)
    assert len(rows) == n
    return {"open_s": load_s, "rss_open": rise, "rss_access": rise, "row_us": per_row * 1e6}


def _mb(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def bench_index(args: argparse.Namespace) -> None:
    sizes = [200_000, 1_000_000] if args.quick else [1_000_000, 10_000_000]
    tmp = Path(tempfile.mkdtemp(prefix="cambrian-bench-index-", dir=args.tmp_dir))
    build = Table(
        "file", "rows", "size MB", "write s", "build s", "rows/s", "MB/s", "index B/row", "image rows"
    )
    access = Table(
        "file", "method", "open / load s", "RSS rise open MB", "RSS rise +10k rows MB", "µs per row"
    )
    try:
        files: list[tuple[Path, int]] = []
        for n in sizes:
            files.append((tmp / f"rows-{n // 1000}k.jsonl", n))
        files.append((tmp / f"rows-{BASELINE_ROWS // 1000}k.json", BASELINE_ROWS))
        for path, n in files:
            t = time.perf_counter()
            (write_jsonl if path.suffix == ".jsonl" else write_json_array)(path, n)
            write_s = time.perf_counter() - t
            size = path.stat().st_size
            t = time.perf_counter()
            idx = RowIndex.open(path, progress=False)
            build_s = time.perf_counter() - t
            assert idx.built and len(idx) == n, (len(idx), n)
            disk = sum(p.stat().st_size for p in idx.index_dir.iterdir())
            build.add_row(
                path.name,
                f"{n:,}",
                _mb(size),
                f"{write_s:.1f}",
                f"{build_s:.2f}",
                f"{n / build_s:,.0f}",
                f"{size / 2**20 / build_s:,.0f}",
                f"{disk / n:.1f}",
                f"{int(idx.has_image.sum()):,}",
            )
            del idx
            m = _in_child(_measure_open, path, n)
            access.add_row(
                path.name,
                "RowIndex",
                f"{m['open_s']:.4f}",
                _mb(m["rss_open"]),
                _mb(m["rss_access"]),
                f"{m['row_us']:.1f}",
            )
            if n == BASELINE_ROWS:
                b = _in_child(_measure_json, path, n)
                how = "json.loads per line" if path.suffix == ".jsonl" else "json.load"
                access.add_row(
                    path.name,
                    how,
                    f"{b['open_s']:.2f}",
                    _mb(b["rss_open"]),
                    _mb(b["rss_access"]),
                    f"{b['row_us']:.2f}",
                )
            if not args.keep:
                path.unlink()
                shutil.rmtree(path.with_name(path.name + ".idx"), ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    build.title = "Row index build (cold, streaming)"
    access.title = f"Opened index vs everything in memory ({N_ACCESS:,} random rows, warm page cache)"
    console.print(build)
    console.print(access)


_TRAIN_CHILD = """
import resource, sys
sys.path.insert(0, {repo!r})
from cambrian.train import resolve_config
from cambrian.train.trainer import train
train(resolve_config(None, sys.argv[1:]))
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _train_run(tmp: Path, name: str, procs: int, threads: int, args: list[str]) -> dict[str, Any]:
    import socket
    import subprocess

    from cambrian.train.metrics import read_metrics

    script = tmp / "train_child.py"
    script.write_text(_TRAIN_CHILD.format(repo=str(Path(__file__).resolve().parents[1])))
    cmd = [sys.executable, str(script)]
    if procs > 1:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
               "--master_addr=127.0.0.1", f"--master_port={port}", str(script)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, *args, f"name={name}"], capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"training run {name} failed:\n{out.stderr[-3000:]}")
    rss = [int(line.split()[1]) * 1024 for line in out.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    metrics = read_metrics(tmp / "runs" / name)
    steady = metrics[2:] or metrics
    rate = statistics.median(m["samples_per_s"] for m in steady)
    return {"samples_s": rate, "wall": wall, "rss": max(rss) if rss else None, "steps": len(metrics)}


def bench_training(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.train.datagen import write_dataset

    steps = 8 if args.quick else 20
    tmp = Path(tempfile.mkdtemp(prefix="cambrian-bench-train-", dir=args.tmp_dir))
    try:
        data = write_dataset(tmp / "data", n=48, text_only=16)
        common = [f"data.path={data}", "preset=tiny-stage2", "data.template=vicuna_v1", "data.system=",
                  "progress=false", f"max_steps={steps}", "save_every=0", f"output_dir={tmp / 'runs'}",
                  "global_batch=16", "data.num_workers=0", "data.group_by_modality_length=false"]  # fmt: skip
        cores = os.cpu_count() or 1
        runs = {
            f"1 process, {cores} threads": _train_run(
                tmp, "single", 1, cores, [*common, "per_device_batch=8"]
            ),
            "1 process, 1 thread": _train_run(tmp, "single1", 1, 1, [*common, "per_device_batch=8"]),
            "2 processes DDP (gloo), 1 thread each": _train_run(
                tmp, "ddp", 2, 1, [*common, "per_device_batch=8", "distributed=ddp"]
            ),
        }
        table = Table(title=f"Training the tiny preset on CPU (global batch 16, {steps} steps, fp32)")
        for col in ("setup", "samples/s", "vs 1 process", "peak RSS / process MB", "wall s (incl. start-up)"):
            table.add_column(col, justify="right")
        base = runs[f"1 process, {cores} threads"]["samples_s"]
        for name, r in runs.items():
            table.add_row(name, f"{r['samples_s']:.1f}", f"{r['samples_s'] / base:.2f}x",
                          _mb(r["rss"]) if r["rss"] else "-", f"{r['wall']:.1f}")  # fmt: skip
        console.print(table)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k and 1M rows instead of 1M and 10M")
    parser.add_argument(
        "--tmp-dir", default=None, help="where to write the synthetic files (default: $TMPDIR)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files (prints nothing extra)")
    parser.add_argument(
        "--only", choices=("index", "training"), default=None, help="run one section (default: both)"
    )
    args = parser.parse_args(argv)
    console.print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    if args.only in (None, "index"):
        bench_index(args)
    if args.only in (None, "training"):
        bench_training(args)


if __name__ == "__main__":
    main()
