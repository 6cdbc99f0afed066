"""The serving engine: a bounded request queue and one worker thread running batched ``generate``.

Requests that arrive while the model is busy wait in the queue and are taken together (up to
``max_batch``) into one left-padded ``generate`` call. Each row keeps its own sampling settings
(``RowSampler``), token budget and stop strings (``_Rows``, a stopping criterion that also streams each
row's text), so a request finishes, and its caller gets its answer, as soon as its own row ends, while
the rest of the batch goes on. A cancelled request (its client went away) stops costing compute at the
next token; when every row of a batch is done, ``generate`` returns.

Callers: ``prepare`` (prompt + images -> token ids and pixel tensors, outside the worker), ``submit``
(-> ``Request``, or ``QueueFull``), then iterate the request's events (async in a server, or plain).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from cambrian.serve.metrics import Metrics
from cambrian.serve.sampling import RowSampler
from cambrian.serve.text import TextDeltas


class QueueFull(Exception):
    """The request queue is at its limit: try again later (HTTP 503)."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed
    stop: tuple[str, ...] = ()


@dataclass
class Prepared:
    """One request's model inputs: ``input_ids`` (T,) and its images' tensors (one per tower)."""

    input_ids: list[int]
    pixel_values: list[torch.Tensor] | None = None  # per tower (n_img, 3, R, R)
    image_sizes: torch.Tensor | None = None  # (n_img, 2) as (w, h)


@dataclass
class Event:
    """``kind`` "text" (a new piece), "done" (finish_reason + usage) or "error" (message)."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class Request:
    prepared: Prepared
    params: SamplingParams
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        # Async callers (the server) get events through their loop; others through a thread-safe queue.
        self._aq: asyncio.Queue | None = asyncio.Queue() if self.loop is not None else None
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def push(self, ev: Event) -> None:
        """Deliver ``ev`` (from any thread)."""
        if self._aq is None:
            self._q.put(ev)
            return
        try:
            self.loop.call_soon_threadsafe(self._aq.put_nowait, ev)
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            self.cancel()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            ev = await self._aq.get()
            yield ev
            if ev.kind != "text":
                return

    async def next_event(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds (nothing is lost: a later call gets it)."""
        try:
            return await asyncio.wait_for(self._aq.get(), timeout)
        except TimeoutError:
            return None

    def iter_events(self, timeout: float | None = None) -> Iterator[Event]:
        while True:
            ev = self._q.get(timeout=timeout)
            yield ev
            if ev.kind != "text":
                return


class _Rows(StoppingCriteria):
    """Per-row bookkeeping after each generated token: stream text, apply stop rules, say who is done.

    transformers calls stopping criteria with the ids including the new token (B, T); the returned (B,)
    bool marks finished rows, which ``generate`` pads from then on.
    """

    def __init__(self, requests: Sequence[Request], tokenizer, stop_ids: Sequence[int], metrics: Metrics):
        self.requests, self.tokenizer, self.metrics = list(requests), tokenizer, metrics
        self.stop_ids = set(stop_ids)
        self.tokens: list[list[int]] = [[] for _ in self.requests]
        self.deltas = [TextDeltas(r.params.stop) for r in self.requests]
        self.done = [False] * len(self.requests)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, -1].tolist()
        # Detokenising is per-row string work on the host; the tensors stay batched.
        for i, tok in enumerate(new):
            if not self.done[i]:
                self._step(i, tok)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _step(self, i: int, tok: int) -> None:
        req, tokens = self.requests[i], self.tokens[i]
        tokens.append(tok)  # a stop token too: decoding skips special tokens, as the batch reply does
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
            self.metrics.first_token.observe(req.first_token_at - req.created)
        if req.cancelled.is_set():
            return self.finish(i, "cancelled")
        if tok in self.stop_ids:
            return self.finish(i, "stop")
        piece = self.deltas[i].feed(self.tokenizer.decode(tokens, skip_special_tokens=True))
        if piece:
            req.push(Event("text", piece))
        if self.deltas[i].stopped:
            self.finish(i, "stop")
        elif len(tokens) >= req.params.max_tokens:
            self.finish(i, "length")

    def finish(self, i: int, reason: str) -> None:
        req, tokens = self.requests[i], self.tokens[i]
        self.done[i] = True
        last = self.deltas[i].finish(self.tokenizer.decode(tokens, skip_special_tokens=True))
        if last and reason != "cancelled":
            req.push(Event("text", last))
        req.push(Event("done", "", reason, len(req.prepared.input_ids), len(tokens)))
        self.metrics.requests.labels(reason).inc()
        self.metrics.generated_tokens.inc(len(tokens))
        self.metrics.latency.observe(time.monotonic() - req.created)

    def finish_rest(self, reason: str) -> None:
        for i, done in enumerate(self.done):
            if not done:
                self.finish(i, reason)


class Engine:
    """Batched generation for many concurrent callers over one model (see the module docstring)."""

    def __init__(
        self,
        model,
        processor,
        max_batch: int = 8,
        max_queue: int = 64,
        batch_wait: float = 0.002,
        metrics: Metrics | None = None,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be at least 1")
        self.model, self.processor = model, processor
        self.max_batch, self.max_queue, self.batch_wait = max_batch, max_queue, batch_wait
        self.metrics = metrics or Metrics()
        self.metrics.track_queue(lambda: len(self._queue))
        tc = model.config.text_config
        self.context_len: int = int(getattr(tc, "max_position_embeddings", 0) or 0) or 1 << 30
        self.stop_ids = processor.stop_token_ids()
        self.pad_id = processor.tokenizer.pad_token_id
        self._queue: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="cambrian-engine", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callers
    def prepare(self, messages: Sequence[dict[str, str]], images=(), system: str | None = None) -> Prepared:
        """Chat messages (``{"role", "content"}``, ``<image>`` placeholders) + PIL images -> inputs;
        ``system`` overrides the model's default system text."""
        text = self.processor.apply_chat_template(list(messages), system=system)
        batch = self.processor(text=[text], images=list(images) or None)
        ids = batch["input_ids"][0].tolist()
        if "pixel_values" not in batch:
            return Prepared(ids)
        return Prepared(ids, list(batch["pixel_values"]), batch["image_sizes"])

    def submit(self, prepared: Prepared, params: SamplingParams) -> Request:
        """Queue a request (``QueueFull`` when the queue is at ``max_queue``)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if params.seed is None:
            params = SamplingParams(**{**params.__dict__, "seed": secrets.randbits(63)})
        req = Request(prepared, params, loop=loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (limit {self.max_queue})")
            self._queue.append(req)
            self._cond.notify()
        return req

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=60)

    # ------------------------------------------------------------------ worker
    def _take(self) -> list[Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                for req in self._queue:
                    req.push(Event("error", "the server is shutting down"))
                self._queue.clear()
                return None
        if self.batch_wait and len(self._queue) < self.max_batch:
            time.sleep(self.batch_wait)  # requests sent together arrive a moment apart: let them join
        batch: list[Request] = []
        with self._cond:
            while self._queue and len(batch) < self.max_batch:
                req = self._queue.popleft()
                if req.cancelled.is_set():  # its client left while it waited: no compute at all
                    req.push(Event("done", "", "cancelled", len(req.prepared.input_ids), 0))
                    self.metrics.requests.labels("cancelled").inc()
                else:
                    batch.append(req)
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            self.metrics.running.set(len(batch))
            try:
                self._run(batch)
            except Exception as e:  # a failed batch fails its requests, not the server
                msg = f"generation failed: {type(e).__name__}: {e}"
                for req in batch:
                    req.push(Event("error", msg))
                self.metrics.requests.labels("error").inc(len(batch))
            finally:
                self.metrics.running.set(0)

    def _collate(self, batch: Sequence[Request]) -> dict:
        """Left-padded (B, T) ids and mask; each tower's images of all rows concatenated in row order."""
        lens = [len(r.prepared.input_ids) for r in batch]
        longest = max(lens)
        ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, r in enumerate(batch):  # copying rows into the padded batch: data prep, once per batch
            ids[i, longest - lens[i] :] = torch.tensor(r.prepared.input_ids)
            mask[i, longest - lens[i] :] = 1
        dev = self.model.device
        out = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
        with_images = [r.prepared for r in batch if r.prepared.pixel_values is not None]
        if with_images:
            towers = zip(*(p.pixel_values for p in with_images))
            out["pixel_values"] = [torch.cat(t).to(dev) for t in towers]
            out["image_sizes"] = torch.cat([p.image_sizes for p in with_images]).to(dev)
        return out

    def _run(self, batch: list[Request]) -> None:
        self.metrics.batch_size.observe(len(batch))
        inputs = self._collate(batch)
        self.metrics.prompt_tokens.inc(int(inputs["attention_mask"].sum()))
        rows = _Rows(batch, self.processor.tokenizer, self.stop_ids, self.metrics)
        p = [r.params for r in batch]
        sampler = RowSampler(
            torch.tensor([x.temperature for x in p], dtype=torch.float32),
            torch.tensor([x.top_p for x in p], dtype=torch.float32),
            torch.tensor([x.seed for x in p], dtype=torch.int64),
            prompt_len=inputs["input_ids"].shape[1],
        )
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                self.model.generate(
                    **inputs, max_new_tokens=max(x.max_tokens for x in p), do_sample=False,
                    eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([rows]),
                )  # fmt: skip
        finally:
            rows.finish_rest("length")
        n = sum(len(t) for t in rows.tokens)
        self.metrics.tokens_per_second.set(n / max(time.perf_counter() - start, 1e-9))
