"""The one evaluation loop: load a benchmark, generate its answers in batches, resume, shard, score.

``evaluate(model, processor, names, data_root, out_dir, ...)`` runs each benchmark and writes

* ``OUT/<bench>/predictions.jsonl``: one record per item, in dataset order (``cambrian.eval.answers``);
* ``OUT/<bench>/score.json``: the benchmark's score dict (``headline``, ``n``, sub-scores);
* ``OUT/<bench>/run.json``: what produced the predictions (model, split, max_new_tokens, prompt format);
* ``OUT/summary.json``: every benchmark's headline, ``n`` and timing.

Finished items are never generated twice: records are appended and fsync'ed batch by batch, and a
rerun reads them back and generates only what is missing (a torn last line from a kill is dropped).
Under ``torchrun`` each process takes every ``world_size``-th missing item, writes its own
``predictions.rank<r>.jsonl`` and rank 0 merges them into ``predictions.jsonl`` in dataset order, so
the files are the same as one process would write (greedy decoding is independent of batch mates).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cambrian.eval.answers import repaired_lines, score_records
from cambrian.eval.benchmark import Benchmark, Item
from cambrian.eval.data import DatasetFormatError, open_images

PREDICTIONS = "predictions.jsonl"
# Settings that change what the model is asked or how long it may answer: a resume must match them.
RUN_KEYS = ("benchmark", "split", "model_id", "max_new_tokens", "prompt_format")
PROMPT_FORMAT = "image-first-v1"  # "<image>\n" per image, then the item's prompt, in the model's template


class RunMismatchError(ValueError):
    """An output directory holds predictions made with other settings (model, split, max_new_tokens)."""


@dataclass
class BenchmarkResult:
    name: str
    score: dict[str, Any]
    items: int
    generated: int  # generated in this call (0 when everything was already there)
    seconds: float
    files: list[str] = field(default_factory=list)


class _Rate(ProgressColumn):
    """Items per second of the task (rich's own speed estimate)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- items/s" if speed is None else f"{speed:.2f} items/s", style="progress.data.speed")


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TimeRemainingColumn(), console=console, disable=disable,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ records on disk
def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Records of a predictions file by ``item_key``; a torn last line (killed mid-write) is cut off."""
    if not path.is_file():
        return {}
    lines = repaired_lines(path)
    done: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[str(record["item_key"])] = record
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{lineno}: not a prediction record of this runner ({e!r})") from None
    return done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _check_run(path: Path, meta: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix predictions of different settings in one directory (unless ``overwrite``)."""
    if not path.is_file() or overwrite:
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in RUN_KEYS if old.get(k) != meta.get(k)]
    if diff:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {meta.get(k)!r} now" for k in diff)
        raise RunMismatchError(
            f"{path.parent} holds predictions made with other settings ({what}); use another --out, "
            "or --overwrite to discard them"
        )


# --------------------------------------------------------------------------------------- generation
def conversation(item: Item, image_token: str) -> list[dict[str, str]]:
    """The single user turn of an item: one ``<image>\\n`` per image, then the prompt."""
    return [{"role": "user", "content": f"{image_token}\n" * len(item.images) + item.prompt}]


def generate_answers(
    model, processor, items: Sequence[Item], max_new_tokens: int, batch_size: int,
    on_batch: Callable[[list[Item], list[str]], None],
) -> None:  # fmt: skip
    """Greedy answers for ``items`` in batches of ``batch_size``; ``on_batch(batch, answers)`` after each.

    Items with ``generate=False`` get ``""`` without a model call. The next batch's images are decoded
    on a worker thread while the current batch generates (PIL decoding releases the GIL).
    """
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]

    def load(batch: list[Item]) -> list[list[Any]]:
        return [open_images(it.images) if it.generate else [] for it in batch]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for b, batch in enumerate(batches):
            images = pending.result()
            pending = pool.submit(load, batches[b + 1]) if b + 1 < len(batches) else None
            asked = [(it, ims) for it, ims in zip(batch, images) if it.generate]
            replies = iter(
                processor.generate_replies(
                    model,
                    [conversation(it, processor.image_token) for it, _ in asked],
                    [im for _, ims in asked for im in ims],
                    max_new_tokens,
                    num_beams=1,
                )
                if asked
                else []
            )
            on_batch(batch, [next(replies) if it.generate else "" for it in batch])


def _record(bench: Benchmark, item: Item, index: int, answer: str, model_id: str) -> dict[str, Any]:
    record = dict(item.record)
    record[bench.answer_field] = answer
    record.setdefault("prompt", item.prompt)
    record["model_id"] = model_id
    record["item_index"] = index
    record["item_key"] = item.key
    return record


def run_benchmark(
    model,
    processor,
    bench: Benchmark,
    items: Sequence[Item],
    out_dir: Path,
    *,
    split: str,
    model_id: str,
    rules: str = "legacy",
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    overwrite: bool = False,
    ctx=None,
    console: Console | None = None,
    progress: bool = True,
) -> BenchmarkResult:
    """Generate (what is missing of) ``items`` into ``out_dir``, merge, score; see the module docstring."""
    from cambrian.train.distributed import DistContext

    ctx = ctx or DistContext()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    keys: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.key in keys:
            raise ValueError(f"{bench.name}: item key {it.key!r} repeats (items {keys[it.key]} and {i})")
        keys[it.key] = i
    max_new = max_new_tokens or bench.max_new_tokens
    meta = {"benchmark": bench.name, "split": split, "model_id": model_id, "max_new_tokens": max_new,
            "prompt_format": PROMPT_FORMAT, "items": len(items)}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = out_dir / PREDICTIONS
    # Every process checks (same file, same verdict) before anyone writes, so a refusal stops all of
    # them instead of leaving the others waiting at a barrier.
    _check_run(out_dir / "run.json", meta, overwrite)
    ctx.barrier()
    if ctx.is_main:
        if overwrite:
            for p in [merged, *out_dir.glob("predictions.rank*.jsonl")]:
                p.unlink(missing_ok=True)
        write_json(out_dir / "run.json", meta)
    ctx.barrier()

    done: dict[str, dict[str, Any]] = {}
    for path in [merged, *sorted(out_dir.glob("predictions.rank*.jsonl"))]:
        done.update(read_done(path))
    pending = [i for i, it in enumerate(items) if it.key not in done]
    mine = pending[ctx.rank :: ctx.world_size]
    own = merged if ctx.world_size == 1 else out_dir / f"predictions.rank{ctx.rank}.jsonl"

    if mine:
        was_training = model.training
        model.eval()
        with ExitStack() as stack:
            stack.callback(model.train, was_training)
            f = stack.enter_context(own.open("a", encoding="utf-8"))
            bar = stack.enter_context(progress_bar(console, disable=not (progress and ctx.is_main)))
            stack.enter_context(torch.inference_mode())
            task = bar.add_task(bench.name, total=len(mine))

            def write(batch: list[Item], answers: list[str]) -> None:
                for it, text in zip(batch, answers):
                    rec = _record(bench, it, keys[it.key], text, model_id)
                    done[it.key] = rec
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.advance(task, len(batch))

            generate_answers(model, processor, [items[i] for i in mine], max_new, batch_size, write)
    generated = int(ctx.all_reduce_sum([float(len(mine))])[0])  # over every process

    result_score: dict[str, Any] = {}
    files: list[str] = []
    if ctx.is_main:
        # Merge every rank's records (and the earlier merged file) into dataset order, then score.
        for path in [merged, *sorted(out_dir.glob("predictions.rank*.jsonl"))]:
            done.update(read_done(path))
        missing = [it.key for it in items if it.key not in done]
        if missing:
            raise RuntimeError(f"{bench.name}: {len(missing)} items have no prediction after generation")
        records = [done[it.key] for it in items]
        _write_atomic(merged, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        for path in out_dir.glob("predictions.rank*.jsonl"):
            path.unlink()
        result_score = score_records(bench, records, rules)
        write_json(out_dir / "score.json", result_score)
        files = [str(merged), str(out_dir / "score.json")]
        for name, obj in bench.submission(records).items():
            write_json(out_dir / name, obj)
            files.append(str(out_dir / name))
    ctx.barrier()
    elapsed = time.perf_counter() - start
    return BenchmarkResult(bench.name, result_score, len(items), generated, elapsed, files)


def evaluate(
    model,
    processor,
    names: Sequence[str],
    data_root: Path,
    out_dir: Path,
    *,
    model_id: str,
    rules: str = "legacy",
    batch_size: int = 8,
    limit: int | None = None,
    splits: dict[str, str] | None = None,
    max_new_tokens: int | None = None,
    overwrite: bool = False,
    ctx=None,
    console: Console | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every benchmark of ``names``; returns (and, on rank 0, writes) ``summary.json``'s content."""
    from cambrian.eval.benchmarks import BENCHMARKS
    from cambrian.train.distributed import DistContext

    ctx = ctx or DistContext()
    console = console or Console(stderr=True)
    splits = dict(splits or {})
    benches = [BENCHMARKS.get(n) for n in names]  # unknown ids fail before any work
    for name, split in splits.items():
        bench = BENCHMARKS.get(name)
        if split not in bench.splits:
            raise ValueError(f"--split {name}={split}: valid splits of {name}: {', '.join(bench.splits)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    absent = [b.name for b in benches if not (data_root / b.name).is_dir()]
    if absent:  # fail before hours of generation, not after
        raise DatasetFormatError(
            f"no snapshot directory for {', '.join(absent)} under {data_root} (expected "
            f"{data_root / absent[0]}/ holding the benchmark's downloaded files)"
        )
    summary: dict[str, Any] = {"model_id": model_id, "rules": rules, "benchmarks": {}}
    for bench in benches:
        split = splits.get(bench.name, bench.splits[0])
        items = bench.load(data_root / bench.name, split)
        expected = bench.expected_n.get(split)
        if ctx.is_main:
            note = "" if expected in (None, len(items)) else f" [yellow](documented: {expected:,})[/yellow]"
            console.print(f"{bench.name} ({split}): {len(items):,} items{note}")
        if limit is not None:
            items = items[:limit]
        res = run_benchmark(
            model, processor, bench, items, out_dir / bench.name, split=split, model_id=model_id,
            rules=rules, batch_size=batch_size, max_new_tokens=max_new_tokens, overwrite=overwrite,
            ctx=ctx, console=console, progress=progress,
        )  # fmt: skip
        if ctx.is_main:
            summary["benchmarks"][bench.name] = {
                "split": split, "items": res.items, "headline_name": bench.headline_name,
                "headline": res.score.get("headline"), "n": res.score.get("n"),
                "generated": res.generated, "seconds": round(res.seconds, 3),
            }  # fmt: skip
    if ctx.is_main:
        old = out_dir / "summary.json"
        if old.is_file():  # keep benchmarks of earlier calls into the same directory
            previous = json.loads(old.read_text(encoding="utf-8")).get("benchmarks", {})
            summary["benchmarks"] = {**previous, **summary["benchmarks"]}
        write_json(old, summary)
    return summary
