"""The HTTP server: an OpenAI-compatible chat-completions API over the batching ``Engine``.

Routes: ``POST /v1/chat/completions`` (JSON or, with ``stream: true``, server-sent events in OpenAI's
chunk format ending with ``data: [DONE]``), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus text) and, when asked, the Gradio page at ``/ui``. Every refusal is an OpenAI-style JSON
error with a 4xx status (503 + Retry-After for a full queue) and the server keeps going; parsing and
image decoding run in worker threads so the event loop keeps streaming other requests meanwhile.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cambrian.serve.engine import Engine, QueueFull, SamplingParams
from cambrian.serve.metrics import CONTENT_TYPE
from cambrian.serve.protocol import APIError, ImageLimits, parse_request, sse, to_conversation


@dataclass
class ServeSettings:
    """What a server accepts; every field is a ``cambrian serve`` option."""

    model_name: str = "cambrian"
    api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_tokens_limit: int = 2048  # largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when a request gives none (capped by the context left)
    retry_after: int = 1  # seconds, in the 503 of a full queue
    images: ImageLimits = field(default_factory=ImageLimits)


def _error(engine: Engine, err: APIError) -> JSONResponse:
    engine.metrics.http_errors.labels(str(err.status)).inc()
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the body is {int(declared):,} bytes, over the limit of {limit:,}",
                       code="body_too_large")  # fmt: skip
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the body is over the limit of {limit:,} bytes", code="body_too_large")
    return bytes(body)


def create_app(engine: Engine, settings: ServeSettings | None = None, ui: bool = False) -> FastAPI:
    """The FastAPI app serving ``engine`` (``ui``: mount the Gradio page at ``/ui``)."""
    s = settings or ServeSettings()
    app = FastAPI(title="Cambrian", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, s
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(engine, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(engine, APIError(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}"))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(engine, APIError(500, f"internal error: {type(exc).__name__}: {exc}"))

    def check_key(request: Request) -> None:
        if s.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        if not secrets.compare_digest(auth.encode(), f"Bearer {s.api_key}".encode()):
            raise APIError(401, "missing or incorrect API key (send Authorization: Bearer KEY)",
                           code="invalid_api_key")  # fmt: skip

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": s.model_name, "queue_length": engine.queue_length,
                "max_batch": engine.max_batch, "max_queue": engine.max_queue}  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list",
                "data": [{"id": s.model_name, "object": "model", "created": created, "owned_by": "cambrian"}]}  # fmt: skip

    def prepare(raw: bytes):
        """Body -> (request, prepared inputs, sampling params); runs in a worker thread."""
        req = parse_request(raw)
        system, turns, images = to_conversation(req, engine.processor.image_token, s.images)
        try:
            prepared = engine.prepare(turns, images, system=system)
        except ValueError as e:  # the template refuses the conversation (e.g. turns out of order)
            raise APIError(400, f"messages: {e}", "messages") from None
        n_prompt = len(prepared.input_ids)
        room = engine.context_len - n_prompt
        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None and asked > s.max_tokens_limit:
            name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise APIError(400, f"{name}={asked} is over this server's limit of {s.max_tokens_limit}", name)
        if room < 1 or (asked is not None and asked > room):
            raise APIError(
                400, f"this model's maximum context length is {engine.context_len} tokens; the messages "
                f"take {n_prompt} and {asked or 1} were asked for the completion",
                "messages", code="context_length_exceeded",
            )  # fmt: skip
        params = SamplingParams(
            max_tokens=asked or min(s.default_max_tokens, room),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=tuple([req.stop] if isinstance(req.stop, str) else req.stop or ()),
        )
        return req, prepared, params

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        raw = await _read_body(request, s.max_body_bytes)
        req, prepared, params = await run_in_threadpool(prepare, raw)
        try:
            job = engine.submit(prepared, params)
        except QueueFull as e:
            raise APIError(503, f"the server is busy: {e}; retry later", code="queue_full",
                           headers={"Retry-After": str(s.retry_after)}) from None  # fmt: skip
        cid, now = f"chatcmpl-{job.id}", int(time.time())
        head = {"id": cid, "created": now, "model": s.model_name, "system_fingerprint": None}
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(_stream(job, head, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
        return await _complete(request, job, head)

    async def _complete(request: Request, job, head: dict[str, Any]) -> JSONResponse:
        pieces: list[str] = []
        try:
            while True:
                # Wake up now and then to notice a client that hung up (then stop its generation).
                ev = await job.next_event(timeout=0.5)
                if ev is None:
                    if await request.is_disconnected():
                        job.cancel()
                        return _error(engine, APIError(499, "client closed the request"))
                    continue
                if ev.kind == "text":
                    pieces.append(ev.text)
                elif ev.kind == "error":
                    raise APIError(500, ev.text)
                else:
                    break
        finally:
            job.cancel()  # no-op once finished; stops the row if this handler was cancelled midway
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                  "finish_reason": ev.finish_reason, "logprobs": None}  # fmt: skip
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice],
                             "usage": _usage(ev)})  # fmt: skip

    async def _stream(job, head: dict[str, Any], include_usage: bool):
        chunk = {**head, "object": "chat.completion.chunk"}

        def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
            extra = {"usage": None} if include_usage else {}
            return sse({**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": finish,
                                              "logprobs": None}], **extra})  # fmt: skip

        try:
            yield delta({"role": "assistant", "content": ""})
            async for ev in job.events():
                if ev.kind == "text":
                    yield delta({"content": ev.text})
                elif ev.kind == "error":
                    engine.metrics.http_errors.labels("500").inc()
                    yield sse(APIError(500, ev.text).body())
                else:
                    yield delta({}, ev.finish_reason)
                    if include_usage:
                        yield sse({**chunk, "choices": [], "usage": _usage(ev)})
            yield b"data: [DONE]\n\n"
        finally:
            job.cancel()  # the client went away mid-stream: its row stops at the next token

    if ui:
        from cambrian.serve.ui import mount_ui

        mount_ui(app, engine, path="/ui", max_tokens_limit=s.max_tokens_limit,
                 max_images=s.images.max_images, max_pixels=s.images.max_pixels)  # fmt: skip
    return app


def _usage(ev) -> dict[str, int]:
    return {"prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
            "total_tokens": ev.prompt_tokens + ev.completion_tokens}  # fmt: skip
