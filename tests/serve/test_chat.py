"""``ChatSession`` and ``repl``: answers equal direct generation, history and images carry over turns,
commands work and fail in one line, a failed or interrupted turn leaves a consistent conversation."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from cambrian.serve import chat as chat_module
from cambrian.serve.chat import ChatError, ChatSession, check_settings, repl


@pytest.fixture
def red(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(path)
    return path


@pytest.fixture
def blue(tmp_path):
    path = tmp_path / "blue.png"
    Image.new("RGB", (24, 48), (10, 90, 220)).save(path)
    return path


def _pil(path):
    return Image.open(path).convert("RGB")


def _run(session, lines):
    """Drive ``repl`` with ``lines``; returns (writes to stdout, one string per write; stderr text)."""
    feed, out, err = iter(lines), [], []

    def read_line(prompt):
        out.append(prompt)
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    repl(session, read_line, out.append, err.append)
    return out, "".join(err)


def test_answer_equals_generate_replies_and_images_get_placeholders(tiny, red, blue):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=8)
    session.add_image(red)
    session.add_image(blue)
    reply = "".join(session.ask("compare them"))
    messages = [{"role": "user", "content": "<image>\n<image>\ncompare them"}]
    assert session.messages[0] == messages[0]
    assert reply == proc.generate_replies(model, [messages], [_pil(red), _pil(blue)], 8)[0]
    assert session.turn_images == [[str(red.resolve()), str(blue.resolve())], []]
    assert session.pending == []


def test_typed_placeholders_are_kept_and_checked(tiny, red):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=4)
    session.add_image(red)
    with pytest.raises(ChatError, match=r"2 <image> placeholder.*1 image"):
        session.ask("<image> and <image>?")
    assert session.messages == [] and len(session.pending) == 1  # nothing changed
    assert session.user_content("look: <image> what?") == "look: <image> what?"
    with pytest.raises(ChatError, match="0 image"):
        ChatSession(model, proc, "tiny").ask("<image> with no image")


def test_history_is_kept_across_turns(tiny, red, monkeypatch):
    model, proc = tiny
    prompts = []
    template = proc.apply_chat_template
    monkeypatch.setattr(
        proc, "apply_chat_template", lambda m, *a, **k: prompts.append(template(m)) or prompts[-1]
    )
    session = ChatSession(model, proc, "tiny", max_new_tokens=6, images=[chat_module.load_image(red)])
    first = "".join(session.ask("what colour?"))
    second = "".join(session.ask("and now?"))
    assert first and first in prompts[1] and "what colour?" in prompts[1]
    history = [
        {"role": "user", "content": "<image>\nwhat colour?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "and now?"},
    ]
    monkeypatch.undo()
    assert second == proc.generate_replies(model, [history], [_pil(red)], 6)[0]
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]


def test_images_of_a_later_turn_follow_the_earlier_ones(tiny, red, blue):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=5, images=[chat_module.load_image(red)])
    first = "".join(session.ask("one"))
    session.add_image(blue)
    second = "".join(session.ask("two"))
    history = [
        {"role": "user", "content": "<image>\none"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "<image>\ntwo"},
    ]
    assert second == proc.generate_replies(model, [history], [_pil(red), _pil(blue)], 5)[0]
    saved = session.to_dict()["messages"]
    assert [m.get("images") for m in saved] == [[str(red.resolve())], None, [str(blue.resolve())], None]


def test_generated_token_count_matches_generate(tiny):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=7)
    "".join(session.ask("hello"))
    text = proc.apply_chat_template([{"role": "user", "content": "hello"}])
    inputs = proc(text=[text])
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=7, do_sample=False, eos_token_id=proc.stop_token_ids(),
            pad_token_id=proc.tokenizer.pad_token_id,
        )  # fmt: skip
    result = session.result()
    assert result["generated_tokens"] == out.shape[1] - inputs["input_ids"].shape[1]
    assert result["prompt"] == "hello" and result["images"] == [] and result["model"] == "tiny"
    assert result["settings"] == {"max_new_tokens": 7, "temperature": 0.0, "do_sample": False}


def test_temperature_samples(tiny):
    model, proc = tiny
    conv = [{"role": "user", "content": "hello"}]
    greedy = proc.generate_replies(model, [conv], None, 12)[0]
    torch.manual_seed(11)
    want = proc.generate_replies(model, [conv], None, 12, do_sample=True, temperature=3.0)[0]
    torch.manual_seed(11)
    got = "".join(ChatSession(model, proc, "tiny", max_new_tokens=12, temperature=3.0).ask("hello"))
    assert got == want != greedy
    assert "".join(ChatSession(model, proc, "tiny", max_new_tokens=12, temperature=0).ask("hello")) == greedy


def test_settings_are_checked():
    with pytest.raises(ChatError, match="max-new-tokens must be >= 1"):
        check_settings(0, 0.0)
    with pytest.raises(ChatError, match="temperature must be >= 0"):
        check_settings(8, -0.5)
    with pytest.raises(ChatError, match="temperature"):
        check_settings(8, float("nan"))


def test_repl_streams_and_handles_commands(tiny, red, tmp_path):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny-id", max_new_tokens=12)
    save = tmp_path / "conv.json"
    out, err = _run(
        session,
        ["/help", "/bogus x", f"/image {red}", "/image", "what colour?", f"/save {save}",
         "/reset", "again", "/save", f"/save {tmp_path / 'no-dir' / 'c.json'}", "/quit", "never read"],
    )  # fmt: skip
    text = "".join(out)
    assert all(usage in text for usage in ("/image PATH", "/reset", "/save FILE", "/help", "/quit"))
    unknown = [line for line in err.splitlines() if "/bogus" in line]
    assert unknown == ["unknown command /bogus; valid: /image PATH, /reset, /save FILE, /help, /quit"]
    assert "usage: /image PATH" in err and "usage: /save FILE" in err
    assert f"cannot write {tmp_path / 'no-dir' / 'c.json'}" in err
    # The first answer arrived in several writes between "cambrian> " and its newline: streamed.
    start = out.index("cambrian> ")
    pieces = out[start + 1 : out.index("\n", start)]
    assert len(pieces) >= 2
    first = "".join(pieces)
    assert (
        first
        == proc.generate_replies(
            model, [[{"role": "user", "content": "<image>\nwhat colour?"}]], [_pil(red)], 12
        )[0]
    )
    data = json.loads(save.read_text())
    assert data["model"] == "tiny-id"
    assert data["settings"] == {"max_new_tokens": 12, "temperature": 0.0, "do_sample": False}
    assert data["messages"] == [
        {"role": "user", "content": "<image>\nwhat colour?", "images": [str(red.resolve())]},
        {"role": "assistant", "content": first},
    ]
    assert save.read_text().startswith('{\n  "model"')  # pretty-printed
    # After /reset the second question is answered with no history and no image; /quit ended the loop.
    assert session.messages[0] == {"role": "user", "content": "again"} and len(session.messages) == 2
    assert out.count("you> ") == 11 and "never read" not in json.dumps(session.messages)


def test_repl_bad_image_is_one_line_and_chat_goes_on(tiny, tmp_path):
    model, proc = tiny
    (tmp_path / "notes.png").write_text("not a picture")
    session = ChatSession(model, proc, "tiny", max_new_tokens=4)
    out, err = _run(
        session, [f"/image {tmp_path / 'missing.png'}", f"/image {tmp_path / 'notes.png'}", "hi", ""]
    )
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: ") and "missing.png: no such file" in lines[0]
    assert "notes.png: not an image" in lines[1]
    assert session.pending == [] and session.messages[0] == {"role": "user", "content": "hi"}
    assert "".join(out).count("cambrian> ") == 1


def test_slash_escape_sends_a_message(tiny):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=3)
    _run(session, ["//etc/hosts?", ""])
    assert session.messages[0]["content"] == "/etc/hosts?"


def test_stopping_early_keeps_what_was_shown(tiny, red):
    model, proc = tiny
    session = ChatSession(model, proc, "tiny", max_new_tokens=40, images=[chat_module.load_image(red)])
    gen = session.ask("what colour?")
    shown = next(gen)
    gen.close()  # the consumer went away (Ctrl-C in the chat)
    full = proc.generate_replies(model, [[session.messages[0]]], [_pil(red)], 40)[0]
    assert full.startswith(shown) and len(shown) < len(full)
    assert session.messages == [
        {"role": "user", "content": "<image>\nwhat colour?"},
        {"role": "assistant", "content": shown},
    ]


def test_failed_generation_undoes_the_turn(tiny, red, monkeypatch):
    model, proc = tiny
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        yield "partial"
        raise RuntimeError("out of memory")

    session = ChatSession(model, proc, "tiny", max_new_tokens=4, images=[chat_module.load_image(red)])
    monkeypatch.setattr(chat_module, "stream_reply", broken)
    _, err = _run(session, ["what colour?", ""])
    assert err.strip() == "error: generation failed (RuntimeError: out of memory)"
    assert session.messages == [] and session.images == [] and len(session.pending) == 1
    monkeypatch.undo()
    assert "".join(session.ask("what colour?"))  # the image is still there for the retry
    assert session.turn_images[0] == [str(red.resolve())] and len(calls) == 1
