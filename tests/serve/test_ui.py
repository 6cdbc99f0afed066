"""The Gradio chat page: its handlers directly, then the real page in headless Chromium over a real server.

The browser tests need Chromium (Debian: ``apt-get install chromium``); without it they skip, unless
``CAMBRIAN_REQUIRE_BROWSER=1`` (CI) makes that a failure. A ``Gate`` holds the engine's generation at a
chosen forward call, so "the reply is seen mid-stream" and "Stop arrives before the end" are certain
rather than races against a fast tiny model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import threading
import time

import pytest
from PIL import Image

from cambrian.serve.engine import Engine, QueueFull, SamplingParams
from cambrian.utils.images import ImageError, open_image

QUESTION = "What is in the picture?"
FOLLOW_UP = "And what colour is it?"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_S = 60  # a failure deadline only: every wait below ends as soon as its condition holds


class Gate:
    """Blocks the model's ``hold_at``-th forward call (counted from now) until ``release``; a context
    manager that always releases and unhooks."""

    def __init__(self, model, hold_at: int):
        self.hold_at, self.calls = hold_at, 0
        self.reached, self.opened = threading.Event(), threading.Event()
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1
        if self.calls == self.hold_at:
            self.reached.set()
            self.opened.wait(timeout=WAIT_S)

    def release(self) -> None:
        self.opened.set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.handle.remove()


def _picture(path, size=(64, 48)):
    """A small gradient PNG (not one flat colour)."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([(255 * x // w, 255 * y // h, 120) for y in range(h) for x in range(w)])
    img.save(path)
    return path


def _in_thread(coro_fn):
    """Run an async test body on its own loop in a worker thread (independent of Playwright's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result()


def _requests(engine, reason: str) -> float:
    value = engine.metrics.registry.get_sample_value("cambrian_requests_total", {"finish_reason": reason})
    return value or 0.0


# ------------------------------------------------------------------ handlers, no browser
def test_to_messages_one_placeholder_per_image_and_alternating_roles():
    from cambrian.serve.ui import to_chatbot, to_messages

    conv = [
        {"role": "user", "text": "compare", "images": ["a.png", "b.png"]},
        {"role": "assistant", "text": "", "images": []},  # stopped before its first piece of text
        {"role": "user", "text": "again?", "images": ["c.png"]},
        {"role": "assistant", "text": "yes", "images": []},
    ]
    messages, paths = to_messages(conv, "<image>")
    assert messages == [
        {"role": "user", "content": "<image>\n<image>\ncompare\n<image>\nagain?"},
        {"role": "assistant", "content": "yes"},
    ]
    assert paths == ["a.png", "b.png", "c.png"]
    shown = to_chatbot(conv)
    assert [m["role"] for m in shown] == ["user", "user", "assistant"]  # the empty turn is not shown
    assert shown[0]["content"] == [{"path": "a.png"}, {"path": "b.png"}, {"type": "text", "text": "compare"}]


def test_check_turn_refusals_say_what_is_wrong(tiny, tmp_path):
    from cambrian.serve.ui import ChatPage, _Refused

    engine = Engine(*tiny)
    try:
        page = ChatPage(engine, max_tokens_limit=16, max_images=2, max_pixels=64 * 48)
        good = str(_picture(tmp_path / "good.png"))
        big = str(_picture(tmp_path / "big.png", (65, 48)))
        (tmp_path / "bad.png").write_bytes(b"not an image")
        cases = [
            ({"text": "  ", "files": []}, [], "Type a question or attach an image"),
            ({"text": "see <image> here", "files": []}, [], "reserved text <image>"),
            ({"text": "x", "files": [good]}, [{"role": "user", "text": "", "images": [good, good]}],
             "3 images in this conversation, over this server's limit of 2"),
            ({"text": "x", "files": [str(tmp_path / "bad.png")]}, [], "bad.png: not an image"),
            ({"text": "x", "files": [big]}, [], "big.png: 65x48 is 3,120 pixels, over the limit of 3,072"),
        ]  # fmt: skip
        for message, conv, expected in cases:
            with pytest.raises(_Refused, match=re.escape(expected)):
                page.check_turn(message, conv)
        assert page.check_turn({"text": " hi ", "files": [good]}, []) == {
            "role": "user", "text": "hi", "images": [good],
        }  # fmt: skip
        with pytest.raises(ValueError, match="max_tokens_limit"):
            ChatPage(engine, max_tokens_limit=0, max_images=1, max_pixels=1)
    finally:
        engine.close()


def test_respond_streams_the_greedy_reply_and_undoes_a_refused_turn(tiny, tmp_path):
    """``respond`` as Gradio drives it: the reply grows piece by piece and ends equal to direct greedy
    generation; with the engine's queue full the turn is undone and the message handed back."""
    from cambrian.serve.ui import ChatPage

    model, proc = tiny
    path = str(_picture(tmp_path / "pic.png"))
    expected = proc.generate_replies(
        model, [[{"role": "user", "content": f"{proc.image_token}\n{QUESTION}"}]], [open_image(path)], 24
    )[0]
    engine = Engine(model, proc, max_batch=1, max_queue=1, batch_wait=0)
    try:
        page = ChatPage(engine, max_tokens_limit=24, max_images=4, max_pixels=10**6)
        conv = [page.check_turn({"text": QUESTION, "files": [path]}, [])]

        async def answer(temperature: float, max_tokens: int):
            return [out async for out in page.respond(conv, temperature, 1.0, max_tokens)]

        outs = _in_thread(lambda: answer(0.0, 24))
        texts = [state[-1]["text"] for _, state, _ in outs]
        assert len(set(texts)) >= 2 and texts[-1] == expected  # streamed, then the whole greedy reply
        assert outs[-1][1] == [*conv, {"role": "assistant", "text": expected, "images": []}]

        # Fill the queue for real: one request generating (held by the gate), one waiting.
        with Gate(model, hold_at=1) as gate:
            prepared = engine.prepare([{"role": "user", "content": "hold"}])
            held = engine.submit(prepared, SamplingParams(max_tokens=4))
            assert gate.reached.wait(WAIT_S)
            waiting = engine.submit(prepared, SamplingParams(max_tokens=4))
            with pytest.raises(QueueFull):
                engine.submit(prepared, SamplingParams(max_tokens=4))
            with pytest.warns(UserWarning, match="The server is busy"):
                (chat, state, box), *rest = _in_thread(lambda: answer(0.7, 8))
            held.cancel()
            waiting.cancel()
        assert rest == [] and chat == [] and state == []  # the conversation is as before the turn
        assert box.interactive and box.value["text"] == QUESTION  # the message is back in the input box
        assert [f["orig_name"] for f in box.value["files"]] == ["pic.png"]
    finally:
        engine.close()


def test_mount_ui_serves_the_page_with_system_fonts(tiny):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cambrian.serve.ui import mount_ui

    engine = Engine(*tiny)
    try:
        app = mount_ui(FastAPI(), engine, path="/chat", title="Tiny Cambrian", max_tokens_limit=64)
        with TestClient(app) as client:
            page = client.get("/chat/")
            assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
            config = client.get("/chat/config").json()
            assert config["title"] == "Tiny Cambrian" and config["analytics_enabled"] is False
            kinds = {c["type"] for c in config["components"]}
            assert {"chatbot", "multimodaltextbox", "slider", "button", "state"} <= kinds
            sliders = {c["props"]["label"]: c["props"] for c in config["components"] if c["type"] == "slider"}
            assert sliders["Max output tokens"]["maximum"] == 64
            css = client.get("/chat/theme.css").text
            assert "system-ui" in css and "googleapis" not in css
    finally:
        engine.close()


# ------------------------------------------------------------------ the page in a real browser
def _chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )


@pytest.fixture(scope="module")
def browser():
    path, reason = (
        _chromium(),
        "no Chromium at /usr/bin/chromium or on PATH (Debian: apt-get install chromium)",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path, reason = None, "playwright is not installed (pip install playwright)"
    if path is None:
        if os.environ.get("CAMBRIAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}; CAMBRIAN_REQUIRE_BROWSER=1 requires the browser tests to run")
        pytest.skip(reason)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def ui_server(tiny):
    """``(page URL, engine)``: the chat page of an engine over the tiny model, on a loopback port."""
    from fastapi import FastAPI

    from cambrian.serve.server import background
    from cambrian.serve.ui import mount_ui

    engine = Engine(*tiny)
    app = mount_ui(FastAPI(), engine, path="/ui", max_tokens_limit=512)
    try:
        with background(app) as url:
            yield f"{url}/ui/", engine
    finally:
        engine.close()


@pytest.fixture
def page(browser, ui_server):
    """A fresh browser tab on the chat page; at the end, no request may have left the server."""
    url = ui_server[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    origin = url.split("/ui/")[0]
    context.on(
        "request", lambda r: None if r.url.startswith((origin, "data:", "blob:")) else outside.append(r.url)
    )
    tab = context.new_page()
    tab.goto(url)
    tab.locator("#cambrian-input textarea").wait_for()
    yield tab
    context.close()
    assert outside == [], f"the page fetched from outside the server: {outside}"


def _wait(tab, condition, what: str, seen=None):
    """Poll ``condition`` (letting the page run meanwhile) until it is truthy; on timeout the failure
    says what was awaited and, with ``seen``, what the page showed instead."""
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"; the page shows {seen()!r}" if seen else "")
            )
        tab.wait_for_timeout(25)
    return value


def _set_slider(tab, elem_id: str, value) -> None:
    from playwright.sync_api import expect

    number = tab.locator(f"#{elem_id} input[type=number]")
    number.fill(str(value))
    number.press("Enter")
    expect(tab.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))


def _attach(tab, *paths) -> None:
    tab.locator("#cambrian-input input[type=file]").set_input_files([str(p) for p in paths])
    thumbs = tab.locator("#cambrian-input .thumbnail-item img")
    _wait(tab, lambda: thumbs.count() == len(paths), "the upload thumbnails")


def _send(tab, text: str) -> None:
    box = tab.locator("#cambrian-input textarea")
    box.fill(text)
    box.press("Enter")


def _bot_texts(tab) -> list[str]:
    return tab.locator('#cambrian-chat [data-testid="bot"] .message-content').all_inner_texts()


def _letters(text: str) -> str:
    """The ASCII letters and digits of ``text``: what survives the chat window's Markdown rendering of
    the tiny model's noise (stray ``*``, ``_``, control characters) unchanged."""
    return re.sub(r"[^0-9A-Za-z]", "", text)


def test_browser_chat_streams_replies_and_keeps_history(browser, tiny, ui_server, page, tmp_path):
    model, proc = tiny
    path = _picture(tmp_path / "gradient.png")
    image = open_image(path)
    first = [{"role": "user", "content": f"{proc.image_token}\n{QUESTION}"}]
    reply1 = proc.generate_replies(model, [first], [image], 40)[0]
    second = [*first, {"role": "assistant", "content": reply1}, {"role": "user", "content": FOLLOW_UP}]
    reply2 = proc.generate_replies(model, [second], [image], 40)[0]

    def replies():
        return _bot_texts(page)

    _set_slider(page, "cambrian-temperature", 0)
    _set_slider(page, "cambrian-max-tokens", 40)
    _attach(page, path)
    with Gate(model, hold_at=12) as gate:  # the prompt pass plus 10 tokens, then hold
        _send(page, QUESTION)
        assert gate.reached.wait(WAIT_S)
        partial = _wait(page, lambda: _letters("".join(replies())), "the first words of the reply")
        gate.release()
        _wait(page, lambda: _letters("".join(replies())) == _letters(reply1),
              f"the whole first reply {reply1!r}", replies)  # fmt: skip
    assert _letters(reply1).startswith(partial) and len(partial) < len(_letters(reply1))

    shown = page.locator('#cambrian-chat [data-testid="user"] img')
    assert shown.count() == 1 and shown.evaluate("img => img.complete && img.naturalWidth") == image.width
    page.locator("#cambrian-input textarea:not([disabled])").wait_for()  # unlocked for the next turn
    _send(page, FOLLOW_UP)  # no new image: the first one stays with its turn
    _wait(page, lambda: len(replies()) == 2 and _letters(replies()[1]) == _letters(reply2),
          f"the follow-up's reply {reply2!r} (to the whole conversation)", replies)  # fmt: skip

    page.locator("#cambrian-input textarea:not([disabled])").wait_for()
    toasts = page.locator('[data-testid="toast-close"]')  # the "stopped at the token limit" notes
    if toasts.count():
        toasts.first.click()  # closes the group
        _wait(page, lambda: toasts.count() == 0, "the notes to close")
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as png:
        assert png.format == "PNG" and png.size == (1280, 900)
        assert png.convert("RGB").getcolors(maxcolors=64) is None  # a rendered page, not a blank one


def test_browser_stop_cancels_the_request_and_clear_resets(browser, tiny, ui_server, page, monkeypatch):
    model, _ = tiny
    engine = ui_server[1]
    submitted, real_submit = [], engine.submit

    def submit(*args, **kwargs):  # the page's requests, to see the one Stop must cancel
        submitted.append(real_submit(*args, **kwargs))
        return submitted[-1]

    monkeypatch.setattr(engine, "submit", submit)
    before = {r: _requests(engine, r) for r in ("cancelled", "stop", "length")}

    _set_slider(page, "cambrian-temperature", 0)
    _set_slider(page, "cambrian-max-tokens", 512)
    with Gate(model, hold_at=8) as gate:
        _send(page, "Tell me a long story.")
        assert gate.reached.wait(WAIT_S), "generation never reached its 7th token"
        page.locator("#cambrian-stop").click()
        # The page's generator is closed, which cancels the engine request; only then does the model go on.
        _wait(page, lambda: submitted and submitted[-1].cancelled.is_set(), "Stop to cancel the request")
    _wait(
        page, lambda: _requests(engine, "cancelled") == before["cancelled"] + 1, "the engine to stop the row"
    )
    assert len(submitted) == 1 and submitted[0].params.max_tokens > 8
    assert {r: _requests(engine, r) for r in ("stop", "length")} == {r: before[r] for r in ("stop", "length")}
    page.locator("#cambrian-input textarea:not([disabled])").wait_for()  # the input box is back

    page.locator("#cambrian-clear").click()
    messages = page.locator("#cambrian-chat .message-row")
    _wait(page, lambda: messages.count() == 0, "Clear to empty the conversation")


def test_browser_bad_upload_shows_an_error_and_keeps_the_message(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but then nothing an image decoder could use")
    with pytest.raises(ImageError) as refused:
        open_image(bad, where=bad.name)
    _attach(page, bad)
    _send(page, QUESTION)
    toast = page.locator('[data-testid="toast-text"]')
    _wait(page, lambda: toast.count() > 0, "an error toast")
    assert toast.first.inner_text() == str(refused.value)  # "broken.png: ...", as open_image says it
    assert page.locator("#cambrian-chat .message-row").count() == 0  # nothing was sent
    assert page.locator("#cambrian-input textarea").input_value() == QUESTION  # the message is still there
