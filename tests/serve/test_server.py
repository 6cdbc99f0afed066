"""The OpenAI-compatible server over real HTTP on loopback: the official ``openai`` client, streaming,
batching equal to running alone, stop rules, cancellation on disconnect, metrics and auth."""

from __future__ import annotations

import io
import re
import threading
import time

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from tests.serve.conftest import data_url, png_bytes


def _user(text: str, *images: bytes) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def _direct(tiny, text: str, images: list[bytes], max_new_tokens: int) -> str:
    model, proc = tiny
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    content = "".join(f"{proc.image_token}\n" for _ in pil) + text
    return proc.generate_replies(model, [[{"role": "user", "content": content}]], pil, max_new_tokens)[0]


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_openai_client_plain_and_streaming_equal_direct_generation(tiny, server):
    url, _ = server()
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    img = png_bytes()
    want = _direct(tiny, "what colour?", [img], 20)
    r = client.chat.completions.create(model="cambrian", messages=_user("what colour?", img), max_tokens=20,
                                       temperature=0)  # fmt: skip
    assert r.choices[0].message.content == want and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 20 and r.usage.prompt_tokens > 100  # image slots count as prompt
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(client.chat.completions.create(
        model="cambrian", messages=_user("what colour?", img), max_completion_tokens=20, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ))  # fmt: skip
    text = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(text) == want and sum(bool(t) for t in text) >= 3  # streamed in pieces, not one blob
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [c.id for c in chunks] == [chunks[0].id] * len(chunks)
    assert client.models.list().data[0].id == "cambrian"


def test_sse_wire_format_ends_with_done(server):
    url, _ = server()
    body = {"messages": _user("hi"), "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_multi_turn_and_several_images_per_message(tiny, server):
    url, _ = server()
    a, b = png_bytes(colour=(10, 200, 10)), png_bytes((64, 32), (10, 10, 200))
    messages = [
        {"role": "system", "content": "Answer briefly."},
        *_user("compare", a, b),
        {"role": "assistant", "content": "they differ"},
        {"role": "user", "content": "how?"},
    ]
    r = httpx.post(
        f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    model, proc = tiny
    pil = [Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b)]
    turns = [{"role": "user", "content": f"{proc.image_token}\n{proc.image_token}\ncompare"},
             {"role": "assistant", "content": "they differ"}, {"role": "user", "content": "how?"}]  # fmt: skip
    text = proc.apply_chat_template(turns, system="Answer briefly.")
    inputs = proc(text=[text], images=pil)
    assert r.json()["usage"]["prompt_tokens"] == inputs["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=proc.stop_token_ids())
    want = proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()
    assert r.json()["choices"][0]["message"]["content"] == want


def test_concurrent_requests_are_batched_and_answer_as_alone(tiny, server):
    url, _engine = server(max_batch=8, batch_wait=0.05)
    prompts = [(f"question {i}?", png_bytes((30 + 9 * i, 30), (40 * i, 90, 200))) for i in range(6)]
    alone = [_direct(tiny, q, [img], 10 + i) for i, (q, img) in enumerate(prompts)]
    out: dict[int, str] = {}

    def ask(i: int) -> None:
        q, img = prompts[i]
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                       json={"messages": _user(q, img), "max_tokens": 10 + i, "temperature": 0})  # fmt: skip
        out[i] = r.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(len(prompts))] == alone
    batches, requests = _metric(url, "cambrian_batch_size_count"), _metric(url, "cambrian_batch_size_sum")
    assert requests == len(prompts) and batches < len(prompts)  # at least one batch held several requests


def test_seeded_sampling_is_reproducible_alone_and_batched(server):
    url, _ = server(batch_wait=0.05)
    body = {"messages": _user("tell me"), "max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "seed": 7}
    alone = httpx.post(f"{url}/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    out: list[str] = []

    def ask(b: dict) -> None:
        out.append(
            httpx.post(f"{url}/v1/chat/completions", json=b, timeout=60).json()["choices"][0]["message"][
                "content"
            ]
        )

    others = [{**body, "seed": 100 + i, "messages": _user(f"other {i}")} for i in range(3)]
    threads = [threading.Thread(target=ask, args=(b,)) for b in [body, *others]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alone in out and len(set(out)) > 1  # same seed, same text; other seeds differ


def test_stop_string_cuts_the_reply(tiny, server):
    url, _ = server()
    full = _direct(tiny, "hi", [], 24)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    r = httpx.post(f"{url}/v1/chat/completions",
                   json={"messages": _user("hi"), "max_tokens": 24, "temperature": 0, "stop": [stop]}).json()  # fmt: skip
    assert r["choices"][0]["message"]["content"] == full[: full.index(stop)].strip()
    assert r["choices"][0]["finish_reason"] == "stop"


def test_short_request_returns_before_a_long_one_in_its_batch(server):
    url, _ = server(batch_wait=0.2)
    done: dict[str, float] = {}

    def ask(name: str, n: int) -> None:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                       json={"messages": _user(name), "max_tokens": n, "temperature": 0})  # fmt: skip
        if r.status_code == 200:  # the long one runs for seconds: past the handler's disconnect polls
            done[name] = time.monotonic()

    threads = [threading.Thread(target=ask, args=a) for a in (("long", 400), ("short", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _metric(url, "cambrian_batch_size_count") == 1  # both ran in one generate
    assert done.keys() == {"short", "long"} and done["short"] < done["long"]


def test_client_disconnect_stops_generation(server):
    url, _engine = server()
    body = {"messages": _user("go on"), "max_tokens": 700, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 30
    while _metric(url, 'cambrian_requests_total{finish_reason="cancelled"}') < 1:
        assert time.monotonic() < deadline, "the abandoned request kept generating"
        time.sleep(0.05)
    assert _metric(url, "cambrian_generated_tokens_total") < 700


def test_metrics_health_and_api_key(server):
    url, _ = server(api_key="sekret")
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    body = {"messages": _user("hi"), "max_tokens": 2}
    r = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = OpenAI(base_url=f"{url}/v1", api_key="sekret").chat.completions.create(
        model="cambrian", messages=_user("hi"), max_tokens=2
    )
    assert ok.usage.completion_tokens >= 1
    text = httpx.get(f"{url}/metrics").text
    for name in ("cambrian_requests_total", "cambrian_http_errors_total", "cambrian_queue_length",
                 "cambrian_batch_size_bucket", "cambrian_tokens_per_second", "cambrian_generated_tokens_total"):  # fmt: skip
        assert name in text
    assert _metric(url, 'cambrian_http_errors_total{status="401"}') == 2


def test_full_queue_answers_503_with_retry_after(server):
    url, engine = server(max_batch=1, max_queue=1, batch_wait=0)
    long = {"messages": _user("long"), "max_tokens": 600, "temperature": 0}
    threads = [threading.Thread(target=httpx.post, args=(f"{url}/v1/chat/completions",),
                                kwargs={"json": long, "timeout": 120}) for _ in range(2)]  # fmt: skip
    threads[0].start()
    while _metric(url, "cambrian_running_requests") < 1:  # the first one is generating
        time.sleep(0.01)
    threads[1].start()
    while engine.queue_length < 1:  # the second one waits
        time.sleep(0.01)
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": _user("x"), "max_tokens": 2})
    assert (
        r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
    )
    for t in threads:
        t.join()
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


@pytest.mark.parametrize("with_flag", [False, True])
def test_http_image_urls_only_with_the_flag(tiny, server, tmp_path, with_flag):
    import http.server
    import socketserver

    (tmp_path / "x.png").write_bytes(png_bytes())
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        from cambrian.serve.protocol import ImageLimits

        url, _ = server(images=ImageLimits(allow_remote=with_flag))
        img_url = f"http://127.0.0.1:{httpd.server_address[1]}/x.png"
        msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img_url}},
                                            {"type": "text", "text": "what colour?"}]}]  # fmt: skip
        r = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": msg, "max_tokens": 6, "temperature": 0}
        )
        httpd.shutdown()
    if with_flag:
        assert r.json()["choices"][0]["message"]["content"] == _direct(tiny, "what colour?", [png_bytes()], 6)
    else:
        assert r.status_code == 400 and "--allow-remote-images" in r.json()["error"]["message"]
