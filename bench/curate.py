"""Curation at Cambrian scale: ``cambrian.curation.curate`` against a plain-Python baseline, same inputs.

Run: ``.venv/bin/python bench/curate.py [--sizes 1000000 10000000] [--baseline-limit-gb 12]``. Prints a
rich table; asserts nothing about speed.

For each size N: synthetic LLaVA-style rows (one image or text-only, short and long answers, ~3%
exact duplicates) in 30 source files of Zipf-like sizes over the paper's 7 categories, written to a
temporary directory (removed at the end). Both contestants apply the same recipe: dedup by (image,
first question), per-source cap scaled like the paper's (350k per 10M rows), rebalancing to the
paper's category ratios, the short-answer system prompt, a seeded order, JSONL out. Each runs in a
fresh process; we report wall time, rows/s, peak resident memory (the process and its scan workers)
and the output size; the ratio row compares the two at the same N.

- **ours**: ``curate`` (cold: row indexes and scan cache built inside the timing; 2 scan workers).
- **baseline**: what scripts usually do: ``json.loads`` every row into a list of dicts, Python sets and
  dicts for dedup and counts, ``random.sample`` per source and category, ``random.shuffle``, ``json.dumps``
  each row. It runs under an address-space limit (``--baseline-limit-gb``); hitting it is reported as
  out of memory with the rows it had loaded, a measured outcome rather than a crash of the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cambrian.curation.curate import PAPER_RATIOS, SHORT_ANSWER_PROMPT

console = Console(width=None if sys.stdout.isatty() else 150)
N_SOURCES = 30
CATS = list(PAPER_RATIOS)
_Q = [
    "What is shown in this image?",
    "How many {} are there?",
    "What colour is the {}?",
    "Read the text on the {}.",
]
_NOUNS = "cat dog sign chart table bus tree cup person boat clock plane".split()
_LONG = "The image shows a {} standing next to a {} under a clear sky with several details visible in it."


def source_sizes(n: int) -> list[int]:
    w = [1 / (k + 1) ** 1.1 for k in range(N_SOURCES)]
    sizes = [int(n * x / sum(w)) for x in w]
    sizes[0] += n - sum(sizes)
    return sizes


def generate(root: Path, n: int) -> dict[str, Any]:
    """Write the N-row mixture; returns the curation map (sources -> category, file)."""
    sources = {}
    i = 0
    for s, size in enumerate(source_sizes(n)):
        name = f"src{s:02d}"
        path = root / f"{name}.jsonl"
        with open(path, "w") as f:
            buf = []
            for k in range(size):
                i += 1
                dup = k % 33 == 32  # ~3% repeat the previous row's (image, question)
                j = i - 1 if dup else i
                noun = _NOUNS[j % len(_NOUNS)]
                q = _Q[j % 4].format(noun) + f" #{j % 99991}"
                img = f"{name}/{j:09d}.jpg" if j % 10 else None
                a = "Yes." if j % 2 else _LONG.format(noun, _NOUNS[(j * 7) % len(_NOUNS)])
                human = ("<image>\\n" if img else "") + q
                row = f'{{"id": "{name}-{k}", "conversations": [{{"from": "human", "value": "{human}"}}, {{"from": "gpt", "value": "{a}"}}]'
                buf.append(row + (f', "image": "{img}"}}\n' if img else "}\n"))
                if len(buf) >= 100_000:
                    f.writelines(buf)
                    buf.clear()
            f.writelines(buf)
        sources[name] = {"category": CATS[s % len(CATS)], "files": [str(path)]}
    return {"sources": sources, "cap": max(1, round(350_000 * n / 10_000_000))}


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run_ours(spec: dict[str, Any], out: Path, q: Any) -> None:
    from cambrian.curation.curate import CurateConfig, curate
    from cambrian.utils.config import from_dict

    t = time.perf_counter()
    cfg = from_dict(CurateConfig, spec)
    res = curate(cfg, out, console=Console(quiet=True))
    q.put({"seconds": time.perf_counter() - t, "rows": res.rows, "peak_mb": _peak_mb()})


def run_baseline(spec: dict[str, Any], out: Path, limit_gb: float, q: Any) -> None:
    import random

    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        for name, s in spec["sources"].items():
            with open(s["files"][0]) as f:
                for line in f:
                    r = json.loads(line)
                    r["_source"], r["_category"] = name, s["category"]
                    rows.append(r)
        seen: set[tuple[str, str]] = set()
        kept = []
        for r in rows:
            key = (r.get("image") or "", r["conversations"][0]["value"].replace("<image>\n", "").strip())
            if key not in seen:
                seen.add(key)
                kept.append(r)
        rng = random.Random(0)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for r in kept:
            by_source.setdefault(r["_source"], []).append(r)
        capped = [
            r for v in by_source.values() for r in (rng.sample(v, spec["cap"]) if len(v) > spec["cap"] else v)
        ]
        by_cat: dict[str, list[dict[str, Any]]] = {}
        for r in capped:
            by_cat.setdefault(r["_category"], []).append(r)
        share = {c: PAPER_RATIOS[c] / sum(PAPER_RATIOS[k] for k in by_cat) for c in by_cat}
        scale = min(len(by_cat[c]) / share[c] for c in by_cat)
        final = [r for c, v in by_cat.items() for r in rng.sample(v, min(len(v), int(share[c] * scale)))]
        rng.shuffle(final)
        with open(out, "w") as f:
            for r in final:
                src = r.pop("_source"), r.pop("_category")
                del src
                if all(len(t["value"].split()) <= 3 for t in r["conversations"] if t["from"] == "gpt"):
                    r["system"] = SHORT_ANSWER_PROMPT
                f.write(json.dumps(r) + "\n")
        q.put({"seconds": time.perf_counter() - t, "rows": len(final), "peak_mb": _peak_mb()})
    except MemoryError:
        loaded = len(rows)
        rows.clear()
        q.put({"seconds": time.perf_counter() - t, "oom": loaded, "peak_mb": _peak_mb()})


def in_fresh_process(target, *args) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--baseline-limit-gb", type=float, default=12.0)
    ap.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    args = ap.parse_args()
    table = Table(
        "rows", "what", "seconds", "rows/s", "peak MB", "rows out", title="curation: ours vs plain Python"
    )
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="curate-bench-")) if args.keep is None else args.keep / str(n)
        root.mkdir(parents=True, exist_ok=True)
        try:
            t = time.perf_counter()
            spec = generate(root, n)
            gen_s = time.perf_counter() - t
            size_gb = sum(p.stat().st_size for p in root.glob("*.jsonl")) / 2**30
            console.print(
                f"{n:,} rows, {size_gb:.2f} GB in {N_SOURCES} files, written in {gen_s:.0f} s", markup=False
            )
            ours = in_fresh_process(run_ours, spec, root / "ours.jsonl")
            base = in_fresh_process(run_baseline, spec, root / "base.jsonl", args.baseline_limit_gb)
            for name, r in (("ours (polars, 2 workers)", ours), ("baseline (json + dicts)", base)):
                if "oom" in r:
                    out = f"out of memory (> {args.baseline_limit_gb:g} GB) after loading {r['oom']:,} rows"
                    table.add_row(f"{n:,}", name, f"{r['seconds']:.1f}", "-", f"{r['peak_mb']:,.0f}", out)
                else:
                    table.add_row(f"{n:,}", name, f"{r['seconds']:.1f}", f"{n / r['seconds']:,.0f}",
                                  f"{r['peak_mb']:,.0f}", f"{r['rows']:,}")  # fmt: skip
            if "oom" not in base:
                table.add_row(f"{n:,}", "ratio (baseline / ours)", f"{base['seconds'] / ours['seconds']:.2f}x", "",
                              f"{base['peak_mb'] / ours['peak_mb']:.2f}x", "")  # fmt: skip
        finally:
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    console.print(table)


if __name__ == "__main__":
    main()
