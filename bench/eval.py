"""CV-Bench evaluation throughput: batched greedy generation against the original's batch size 1.

Run: ``.venv/bin/python bench/eval.py [--items N] [--new-tokens T]``. Prints a table; asserts nothing.

The original evaluation scripts generate one item at a time. ``cambrian.eval.cvbench.evaluate`` batches
items with left padding; since a sample's outputs do not depend on its batch mates, the answers must be
the same at every batch size, and the table says whether they are. Items are a synthetic CV-Bench-style
test split (``cambrian.data.synthetic``), the model the tiny preset with the quickstart's tokenizer
(random weights: generation runs to ``--new-tokens`` unless it hits a stop token, which is the costly
case).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8,32")
    args = ap.parse_args(argv)
    from cambrian import build_tiny
    from cambrian.data.synthetic import generate
    from cambrian.eval.cvbench import evaluate, load_items

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate(Path(tmp), 8, args.items, seed=0, progress=False)
        items = load_items(gen.test)
        model, processor = build_tiny("tiny", seed=0)
        model.eval()
        table = Table(title=f"CV-Bench evaluate(): {len(items)} items, up to {args.new_tokens} new tokens, "
                      f"tiny preset, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")  # fmt: skip
        for col in ("batch size", "items/s", "vs batch 1", "same answers as batch 1"):
            table.add_column(col, justify="right")
        base_rate, base_preds = None, None
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            t0 = time.perf_counter()
            preds, _ = evaluate(model, processor, items, gen.out_dir, batch_size=bs,
                                max_new_tokens=args.new_tokens, progress=False)  # fmt: skip
            rate = len(items) / (time.perf_counter() - t0)
            if base_rate is None:
                base_rate, base_preds = rate, preds
            same = sum(preds[i] == base_preds[i] for i in preds)
            table.add_row(str(bs), f"{rate:.1f}", f"{rate / base_rate:.2f}x", f"{same}/{len(preds)}")
        console.print(table)


if __name__ == "__main__":
    main()
