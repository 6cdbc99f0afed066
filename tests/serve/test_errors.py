"""Bad requests get an OpenAI-style 4xx JSON error naming what is wrong, and the server stays up."""

from __future__ import annotations

import json

import httpx
import pytest

from cambrian.serve.protocol import ImageLimits
from tests.serve.conftest import data_url, png_bytes


def _img(url: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "q"}]}], "max_tokens": 2}  # fmt: skip


def _hi(**kw) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **kw}


TRUNCATED = png_bytes((64, 64))[:-40]
CASES = {  # name: (body (dict, or raw bytes), status, words the message must contain)
    "malformed json": (b'{"messages": [', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "no messages": ({"max_tokens": 2}, 400, "messages"),
    "empty messages": ({"messages": []}, 400, "messages"),
    "wrong type": (_hi(max_tokens="5"), 400, "max_tokens"),
    "bool as int": (_hi(max_tokens=True), 400, "max_tokens"),
    "bad role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    "temperature range": (_hi(temperature=3), 400, "temperature"),
    "top_p range": (_hi(top_p=0), 400, "top_p"),
    "n > 1": (_hi(n=2), 400, "n=2"),
    "tools": (_hi(tools=[{"type": "function"}]), 400, "tools"),
    "json mode": (_hi(response_format={"type": "json_object"}), 400, "response_format"),
    "too many stops": (_hi(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    "max_tokens over limit": (_hi(max_tokens=5000), 400, "limit of 2048"),
    "max_tokens over context": (_hi(max_tokens=1000), 400, "context length"),
    "zero max_tokens": (_hi(max_tokens=0), 400, "max_tokens"),
    "ends with assistant": (
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        400,
        "end with a user message",
    ),
    "late system": (
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
        400,
        "system",
    ),
    "placeholder in text": (_hi(messages=[{"role": "user", "content": "<image> hi"}]), 400, "<image>"),
    "unsupported part": (
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        400,
        "'input_audio'",
    ),
    "text part without text": ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400, "text"),
    "image in assistant": (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}}],
                },
                {"role": "user", "content": "b"},
            ]
        },
        400,
        "only in user",
    ),
    "bad base64": (_img("data:image/png;base64,@@@@"), 400, "base64"),
    "not a data image url": (_img("data:text/plain;base64,aGk="), 400, "data:image/"),
    "not an image": (_img(data_url(b"hello, this is text")), 400, "not an image"),
    "truncated image": (_img(data_url(TRUNCATED)), 400, "unreadable image"),
    "pixel limit": (_img(data_url(png_bytes((400, 300)))), 400, "over the limit"),
    "too many images": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}}] * 3,
                }
            ]
        },
        400,
        "more than 2 images",
    ),
    "unknown scheme": (_img("ftp://example.com/x.png"), 400, "unsupported URL scheme"),
    "http without flag": (_img("http://127.0.0.1:9/x.png"), 400, "--allow-remote-images"),
    "body too large": ({"messages": [{"role": "user", "content": "x" * 300_000}]}, 413, "over the limit"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_is_a_clear_4xx(server, name, tmp_path):
    url, _ = server(max_body_bytes=200_000, images=ImageLimits(max_images=2, max_pixels=100_000))
    body, status, words = CASES[name]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"] == "invalid_request_error"
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_file_urls_only_under_allow_dir(server, tmp_path):
    inside, outside = tmp_path / "ok", tmp_path / "secret"
    inside.mkdir(), outside.mkdir()
    (inside / "a.png").write_bytes(png_bytes())
    (outside / "b.png").write_bytes(png_bytes())
    url, _ = server(images=ImageLimits(allow_dir=inside))
    post = lambda u: httpx.post(f"{url}/v1/chat/completions", json=_img(u))  # noqa: E731
    assert post(f"file://{inside / 'a.png'}").status_code == 200
    escape = post(f"file://{inside}/../secret/b.png")
    assert escape.status_code == 403 and "outside the allowed directory" in escape.json()["error"]["message"]
    assert post(f"file://{inside / 'missing.png'}").status_code == 400
    url2, _ = server()
    r = httpx.post(f"{url2}/v1/chat/completions", json=_img(f"file://{inside / 'a.png'}"))
    assert r.status_code == 400 and "--allow-dir" in r.json()["error"]["message"]


def test_unknown_route_and_method_are_json_errors(server):
    url, _ = server()
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["code"] == "http_404"
    r = httpx.get(f"{url}/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
