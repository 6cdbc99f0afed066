"""The batching engine on a GPU: answers alone vs batched, and the throughput ratio, without HTTP.

Run: ``python bench/serving_gpu.py [--requests 32] [--new-tokens 64] [--dtype float32 bfloat16]`` on a
machine with CUDA (falls back to the CPU otherwise). For each dtype: the tiny preset on the device, the
same ``--requests`` image + question requests run one at a time (``Engine(max_batch=1)``) and all
submitted at once (``Engine(max_batch=requests)``): wall time, generated tokens/s, the ratio, and how
many greedy answers are identical between the two (padding and batch shape change the kernels a GPU
picks, so low-precision answers may legitimately drift). Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from cambrian import build_tiny
from cambrian.serve.engine import Engine, SamplingParams


def run(model, processor, requests: list, new_tokens: int, max_batch: int) -> tuple[float, list[str], int]:
    engine = Engine(model, processor, max_batch=max_batch, max_queue=len(requests) + 1, batch_wait=0.01)
    try:
        prepared = [engine.prepare(msgs, imgs) for msgs, imgs in requests]
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        jobs = [engine.submit(p, SamplingParams(max_tokens=new_tokens, temperature=0.0)) for p in prepared]
        texts, tokens = [], 0
        for job in jobs:
            events = list(job.iter_events(timeout=600))
            texts.append("".join(e.text for e in events if e.kind == "text"))
            tokens += events[-1].completion_tokens
        return time.perf_counter() - t0, texts, tokens
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    requests = [
        ([{"role": "user", "content": f"<image>\nWhat is in picture {i}?"}],
         [Image.new("RGB", (200 + 37 * (i % 7), 150 + 23 * (i % 5)), (40 * i % 256, 90, 200))])
        for i in range(args.requests)
    ]  # fmt: skip
    table = Table(title=f"Engine on {name}: {args.requests} requests, greedy, up to {args.new_tokens} tokens")
    for col in ("dtype", "one at a time s", "batched s", "tokens/s batched", "ratio", "same answers"):
        table.add_column(col, justify="right")
    for dt in args.dtype:
        model, processor = build_tiny("tiny", seed=0)
        model = model.to(device=device, dtype=getattr(torch, dt))
        run(model, processor, requests[:2], 4, 2)  # warm-up (kernels, allocator)
        alone_s, alone, _ = run(model, processor, requests, args.new_tokens, 1)
        batch_s, batched, tokens = run(model, processor, requests, args.new_tokens, args.requests)
        same = sum(a == b for a, b in zip(alone, batched))
        table.add_row(dt, f"{alone_s:.2f}", f"{batch_s:.2f}", f"{tokens / batch_s:.0f}",
                      f"{alone_s / batch_s:.1f}x", f"{same}/{len(alone)}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
