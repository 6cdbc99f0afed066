"""The OpenAI chat-completions request, checked, and turned into our conversation + images.

``parse_request`` validates the JSON body (strict types: ``"max_tokens": "5"`` is an error as with
OpenAI), refuses what this server does not do (tools, logprobs, n > 1, ...) and ``to_conversation``
maps ``messages`` (string content or ``text`` / ``image_url`` parts, several images per message,
multi-turn) onto ``{"role", "content"}`` turns with one ``<image>`` placeholder per image, loading each
image under the server's limits. Every refusal is an ``APIError`` carrying the HTTP status, the
OpenAI error type/code and the ``param`` path (``messages[1].content[0].image_url``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cambrian.utils.images import ImageError, open_image


class APIError(Exception):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    # Unknown fields are ignored (clients send vendor extras); known ones must have the right type.
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Accepted only at their "off" values; anything else is refused rather than silently ignored.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


_OFF = {  # field -> the values that mean "not used"
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "tools": (None, []),
    "n": (None, 1),
}


def _param(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_request(raw: bytes) -> ChatRequest:
    """The request body -> ``ChatRequest`` (``APIError`` 400 naming the field otherwise)."""
    try:
        req = ChatRequest.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON ({err['msg']})", code="invalid_json") from None
        if err["type"] == "model_type" and not err["loc"]:
            raise APIError(400, "the body must be a JSON object", code="invalid_json") from None
        where = _param(tuple(p for p in err["loc"] if not str(p).startswith(("function-", "literal["))))
        raise APIError(400, f"{where}: {err['msg']}", param=where or None, code="invalid_value") from None
    for name, off in _OFF.items():
        if getattr(req, name) not in off:
            raise APIError(400, f"{name}={getattr(req, name)!r} is not supported by this server", param=name)
    fmt = (req.response_format or {}).get("type", "text")
    if fmt != "text":
        raise APIError(400, f"response_format {fmt!r} is not supported; valid: 'text'", "response_format")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop: up to 4 non-empty strings", param="stop")
    return req


@dataclass
class ImageLimits:
    max_images: int = 8
    max_pixels: int = 25_000_000
    max_image_bytes: int = 20 * 1024 * 1024
    allow_dir: Path | None = None  # file:// URLs are served only from under this directory
    allow_remote: bool = False  # http(s) URLs are fetched only when set
    fetch_timeout: float = 10.0


def _fetch(url: str, limits: ImageLimits, param: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=limits.fetch_timeout, follow_redirects=True) as r:
            if r.status_code != 200:
                raise APIError(400, f"{param}: fetching {url} gave HTTP {r.status_code}", param)
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > limits.max_image_bytes:
                    raise APIError(400, f"{param}: over {limits.max_image_bytes:,} bytes", param)
            return data
    except httpx.HTTPError as e:
        raise APIError(400, f"{param}: fetching {url} failed ({type(e).__name__})", param) from None


def load_image_url(url: str, limits: ImageLimits, param: str):
    """A data:, http(s): or file: URL -> RGB PIL image, under ``limits``."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        head, _, payload = url.partition(",")
        if not head.startswith("data:image/") or not head.endswith(";base64"):
            raise APIError(400, f"{param}: a data URL must look like data:image/<type>;base64,<data>", param)
        if len(payload) * 3 // 4 > limits.max_image_bytes:
            raise APIError(400, f"{param}: image over {limits.max_image_bytes:,} bytes", param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{param}: the data URL is not valid base64", param) from None
    elif scheme in ("http", "https"):
        if not limits.allow_remote:
            raise APIError(
                400, f"{param}: http(s) image URLs are off on this server (start it with "
                "--allow-remote-images) ; send the image as a data URL", param,
            )  # fmt: skip
        data = _fetch(url, limits, param)
    elif scheme == "file":
        if limits.allow_dir is None:
            raise APIError(400, f"{param}: file:// URLs need the server started with --allow-dir DIR", param)
        path = Path(unquote(urlparse(url).path)).resolve()
        root = limits.allow_dir.resolve()
        if not path.is_relative_to(root):
            raise APIError(403, f"{param}: {path} is outside the allowed directory {root}", param)
        if not path.is_file():
            raise APIError(400, f"{param}: {path} does not exist", param)
        if path.stat().st_size > limits.max_image_bytes:
            raise APIError(400, f"{param}: {path} is over {limits.max_image_bytes:,} bytes", param)
        data = path.read_bytes()
    else:
        raise APIError(400, f"{param}: unsupported URL scheme {scheme or url[:20]!r}; valid: data, "
                       "http(s) (with --allow-remote-images), file (with --allow-dir)", param)  # fmt: skip
    try:
        return open_image(data, where=param, max_pixels=limits.max_pixels)
    except ImageError as e:
        raise APIError(400, str(e), param, code="invalid_image") from None


def to_conversation(req: ChatRequest, image_token: str, limits: ImageLimits):
    """``(system, turns, images)``: the system text (or None), ``{"role", "content"}`` user/assistant
    turns with ``image_token`` where each image goes, and the PIL images in placeholder order."""
    system: str | None = None
    turns: list[dict[str, str]] = []
    images: list = []
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}]"
        if isinstance(msg.content, str) or msg.content is None:
            if msg.content is None and msg.role != "assistant":
                raise APIError(400, f"{param}.content is required for role {msg.role!r}", f"{param}.content")
            pieces = [msg.content or ""]
            if image_token in pieces[0]:
                raise APIError(400, f"{param}.content contains the reserved text {image_token}; send "
                               "images as image_url parts", f"{param}.content")  # fmt: skip
        else:
            pieces = []
            for j, part in enumerate(msg.content):
                where = f"{param}.content[{j}]"
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    if image_token in part["text"]:
                        raise APIError(400, f"{where}.text contains the reserved text {image_token}", where)
                    pieces.append(part["text"])
                elif kind == "image_url" and msg.role == "user":
                    spec = part.get("image_url")
                    url = spec.get("url") if isinstance(spec, dict) else spec
                    if not isinstance(url, str):
                        raise APIError(400, f"{where}.image_url.url must be a string", f"{where}.image_url")
                    if len(images) >= limits.max_images:
                        raise APIError(400, f"more than {limits.max_images} images in one request", where)
                    images.append(load_image_url(url, limits, f"{where}.image_url"))
                    pieces.append(image_token)
                elif kind in ("text", "image_url"):
                    bad = "text needs a string 'text'" if kind == "text" else "images only in user messages"
                    raise APIError(400, f"{where}: {bad}", where)
                else:
                    raise APIError(400, f"{where}: content part type {kind!r} is not supported; valid: "
                                   "'text', 'image_url'", f"{where}.type")  # fmt: skip
        text = "\n".join(pieces)
        if msg.role in ("system", "developer"):
            if turns:
                raise APIError(400, f"{param}: a system message must come before the conversation", param)
            system = text if system is None else f"{system}\n{text}"
        elif turns and turns[-1]["role"] == msg.role:
            turns[-1]["content"] += "\n" + text  # OpenAI allows consecutive same-role messages: merge them
        else:
            turns.append({"role": msg.role, "content": text})
    if not turns or turns[0]["role"] != "user" or turns[-1]["role"] != "user":
        raise APIError(400, "messages must start (after system) and end with a user message", "messages")
    return system, turns, images


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"
