"""Serving figures: streaming latency, batching on vs off under concurrent load, a hostile load test,
and int8 weights against fp32.

Run: ``.venv/bin/python bench/serving.py [--model tiny|DIR] [--new-tokens 32] [--skip-quant]``. Prints four
tables; asserts nothing. The server is the real ``cambrian serve`` in its own process (so clients and
server do not share a GIL); the clients are asyncio ``httpx`` on loopback.

1. One streamed request at a time (image + question, greedy, ``--new-tokens``): time to first token and
   tokens/s after it; median of 5.
2. 64 requests from 16 concurrent clients (each an image + question, greedy), with batching on
   (``--max-batch 16``) and off (``--max-batch 1``): wall time, requests/s, generated tokens/s, p50/p95
   latency; the throughput ratio is the figure. Answers of the two runs must be identical.
3. Load test: 200 requests from 32 concurrent clients, a quarter of them malformed (broken JSON, bad
   base64, a non-image, a truncated PNG, an unsupported part, max_tokens over the limit, a wrong type):
   statuses by kind, 5xx count, /health afterwards, and the server's resident memory after a warm-up
   vs after the load.
4. ``--quantize int8`` vs fp32 (bench/quantize.py's ``measure``): memory and decode speed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def _png(i: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (96 + 16 * (i % 5), 96 + 8 * (i % 3)), ((37 * i) % 256, 120, (91 * i) % 256)).save(
        buf, "PNG"
    )
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(i: int, new_tokens: int, stream: bool = False) -> dict:
    content = [{"type": "image_url", "image_url": {"url": _png(i)}},
               {"type": "text", "text": f"How many objects are in image {i}?"}]  # fmt: skip
    return {"messages": [{"role": "user", "content": content}], "max_tokens": new_tokens, "temperature": 0,
            "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}  # fmt: skip


@contextmanager
def server(model: str, *args: str):
    """``cambrian serve MODEL --port 0 ARGS`` in a subprocess; yields (base URL, pid)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    random = [] if Path(model).exists() else ["--random"]  # a preset id: random weights
    cmd = [sys.executable, "-m", "cambrian.cli", "serve", model, *random, "--port", "0", *args]
    log = Path(tempfile.mkdtemp()) / "server.log"  # a file, not a pipe nobody drains once it is up
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not (m := re.search(r"at (http://\S+) ", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {' '.join(cmd)}\n{log.read_text()}")
            time.sleep(0.1)
        yield m.group(1), proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        if "Traceback" in log.read_text():
            print(f"server log ({log}):\n{log.read_text()}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _post(client: httpx.AsyncClient, url: str, body, raw: bool = False):
    t0 = time.perf_counter()
    if raw:
        r = await client.post(
            f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    else:
        r = await client.post(f"{url}/v1/chat/completions", json=body)
    return r, time.perf_counter() - t0


async def _run_clients(url: str, jobs: list, clients: int) -> list:
    """Send ``jobs`` (body, raw) from ``clients`` concurrent workers; results in job order."""
    results: list = [None] * len(jobs)
    queue: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        queue.put_nowait((i, job))
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:

        async def worker() -> None:
            while not queue.empty():
                i, (body, raw) = queue.get_nowait()
                results[i] = await _post(client, url, body, raw)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def bench_streaming(console: Console, url: str, new_tokens: int) -> None:
    ttft, rate = [], []
    with httpx.Client(timeout=600) as client:
        for i in range(6):
            t0 = time.perf_counter()
            first = None
            n = 0
            with client.stream("POST", f"{url}/v1/chat/completions", json=_body(i, new_tokens, True)) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                        first = time.perf_counter()
                    if chunk.get("usage"):
                        n = chunk["usage"]["completion_tokens"]
            end = time.perf_counter()
            if i:  # the first one warms up
                ttft.append((first or end) - t0)
                rate.append((n - 1) / max(end - (first or end), 1e-9))
    t = Table(
        title=f"one streamed request (image + question, greedy, up to {new_tokens} tokens), median of 5"
    )
    for col in ("time to first token (ms)", "tokens/s after the first"):
        t.add_column(col, justify="right")
    t.add_row(f"{statistics.median(ttft) * 1000:.0f}", f"{statistics.median(rate):.1f}")
    console.print(t)


def bench_batching(console: Console, model: str, new_tokens: int, requests: int, clients: int) -> None:
    t = Table(title=f"{requests} requests from {clients} concurrent clients (image + question, greedy, "
              f"up to {new_tokens} tokens)")  # fmt: skip
    for col in ("batching", "wall s", "requests/s", "tokens/s", "p50 latency s", "p95 latency s", "ratio"):
        t.add_column(col, justify="right")
    answers, base = {}, None
    for label, mb in (("off (--max-batch 1)", 1), (f"on (--max-batch {clients})", clients)):
        with server(model, "--max-batch", str(mb)) as (url, _):
            asyncio.run(_run_clients(url, [(_body(0, new_tokens), False)], 1))  # warm-up
            jobs = [(_body(i, new_tokens), False) for i in range(requests)]
            t0 = time.perf_counter()
            res = asyncio.run(_run_clients(url, jobs, clients))
            wall = time.perf_counter() - t0
        lat = sorted(s for _, s in res)
        toks = sum(r.json()["usage"]["completion_tokens"] for r, _ in res)
        answers[mb] = [r.json()["choices"][0]["message"]["content"] for r, _ in res]
        rps = requests / wall
        base = base or rps
        t.add_row(label, f"{wall:.1f}", f"{rps:.2f}", f"{toks / wall:.0f}", f"{lat[len(lat) // 2]:.2f}",
                  f"{lat[int(len(lat) * 0.95) - 1]:.2f}", f"{rps / base:.1f}x")  # fmt: skip
    console.print(t)
    same = answers[1] == answers[clients]
    console.print(f"identical answers with batching on and off: {same}")


def _img_body(url: str) -> bytes:
    part = {"type": "image_url", "image_url": {"url": url}}
    return json.dumps({"messages": [{"role": "user", "content": [part]}]}).encode()


BAD = {  # kind: (raw body, expected status)
    "broken JSON": (b'{"messages": [{"role": "user", "content": "hi"', 400),
    "bad base64": (_img_body("data:image/png;base64,%%%"), 400),
    "not an image": (_img_body("data:image/png;base64," + base64.b64encode(b"plain text").decode()), 400),
    "truncated PNG": (_img_body(_png(3)[:-60]), 400),
    "unsupported part": (
        b'{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}',
        400,
    ),
    "max_tokens over limit": (b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":999999}', 400),
    "wrong type": (b'{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}', 400),
}


def bench_load(console: Console, model: str, new_tokens: int, total: int, clients: int) -> None:
    kinds = list(BAD)
    jobs, labels = [], []
    for i in range(total):
        if i % 4 == 3:
            kind = kinds[(i // 4) % len(kinds)]
            jobs.append((BAD[kind][0], True))
            labels.append(kind)
        else:
            jobs.append((_body(i, new_tokens), False))
            labels.append("valid")
    with server(model, "--max-batch", "16", "--max-queue", "256") as (url, pid):
        asyncio.run(_run_clients(url, [(_body(i, new_tokens), False) for i in range(32)], clients))  # warm-up
        before = _rss_mb(pid)
        t0 = time.perf_counter()
        res = asyncio.run(_run_clients(url, jobs, clients))
        wall = time.perf_counter() - t0
        time.sleep(1)
        after = _rss_mb(pid)
        healthy = httpx.get(f"{url}/health").json()["status"] == "ok"
    t = Table(title=f"load test: {total} requests from {clients} concurrent clients, a quarter malformed "
              f"({wall:.1f} s)")  # fmt: skip
    for col in ("kind", "sent", "answered as expected", "statuses"):
        t.add_column(col, justify="right" if col != "kind" else "left")
    fives = 0
    for kind in ["valid", *kinds]:
        got = [r.status_code for (r, _), lab in zip(res, labels) if lab == kind]
        want = 200 if kind == "valid" else BAD[kind][1]
        fives += sum(s >= 500 for s in got)
        t.add_row(kind, str(len(got)), f"{sum(s == want for s in got)}/{len(got)}",
                  ", ".join(f"{s}x{got.count(s)}" for s in sorted(set(got))))  # fmt: skip
    console.print(t)
    console.print(f"5xx: {fives}; healthy afterwards: {healthy}; server RSS after warm-up {before:.0f} MB, "
                  f"after the load {after:.0f} MB ({after - before:+.0f} MB)")  # fmt: skip


def bench_quant(console: Console, model: str) -> None:
    sys.path.insert(0, str(REPO))
    from bench.quantize import measure

    figures = measure(model)
    console.print(figures if not isinstance(figures, dict) else {k: v for k, v in figures.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="preset id or model directory")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--skip-quant", action="store_true")
    args = ap.parse_args()
    console = Console()
    with server(args.model) as (url, _):
        bench_streaming(console, url, args.new_tokens)
    bench_batching(console, args.model, args.new_tokens, args.requests, args.clients)
    bench_load(console, args.model, args.new_tokens, 200, 32)
    if not args.skip_quant:
        bench_quant(console, args.model)


if __name__ == "__main__":
    main()
