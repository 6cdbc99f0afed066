"""`cambrian chat`: streamed one-shot, --json and interactive answers from a saved model equal direct
generation; commands, history, and one-line errors (exit 2) for bad images and settings."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
from cambrian.cli import app
from cambrian.utils import images as images_module

runner = CliRunner()


def _expected(model_dir, image, question: str) -> str:
    model = CambrianForCausalLM.from_pretrained(model_dir).eval()
    proc = CambrianProcessor.from_pretrained(model_dir)
    text = proc.apply_chat_template([{"role": "user", "content": f"<image>\n{question}"}])
    inputs = proc(text=[text], images=[image], padding_side="left")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    return proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


def test_chat_one_shot_and_interactive(tmp_path):
    model, proc = build_tiny("tiny", seed=3)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    image = Image.new("RGB", (40, 30), (200, 40, 40))
    image.save(tmp_path / "x.png")
    want = _expected(tmp_path / "m", image, "what colour?")
    out = runner.invoke(app, ["chat", str(tmp_path / "m"), "-i", str(tmp_path / "x.png"), "-p", "what colour?",
                              "--max-new-tokens", "6"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == want
    repl = runner.invoke(app, ["chat", str(tmp_path / "m"), "-i", str(tmp_path / "x.png"), "--max-new-tokens", "6"],
                         input="what colour?\nand now?\n\n")  # fmt: skip
    assert repl.exit_code == 0, repl.output
    assert want in repl.output and repl.output.count("cambrian>") == 2


def test_chat_unknown_model_names_presets():
    out = runner.invoke(app, ["chat", "no-such-model", "-p", "hi"])
    assert out.exit_code != 0 and "tiny" in out.output


# ---------------------------------------------------------------------------------------------- streaming chat
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved to disk, its reloaded (model, processor) and a red image file."""
    root = tmp_path_factory.mktemp("chat")
    model, proc = build_tiny("tiny", seed=3)
    model.save_pretrained(root / "m")
    proc.save_pretrained(root / "m")
    Image.new("RGB", (40, 30), (200, 40, 40)).save(root / "red.png")
    loaded = (
        CambrianForCausalLM.from_pretrained(root / "m").eval(),
        CambrianProcessor.from_pretrained(root / "m"),
    )
    return root, loaded


def _greedy(loaded, messages, images, n):
    model, proc = loaded
    return proc.generate_replies(model, [messages], images, n)[0]


def _red():
    return Image.new("RGB", (40, 30), (200, 40, 40))


def test_chat_json_is_one_object_with_the_greedy_reply(saved):
    root, loaded = saved
    out = runner.invoke(app, ["chat", str(root / "m"), "-i", str(root / "red.png"), "-p", "what colour?",
                              "--max-new-tokens", "9", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)  # the whole of stdout is one JSON document
    want = _greedy(loaded, [{"role": "user", "content": "<image>\nwhat colour?"}], [_red()], 9)
    assert record["reply"] == want and want
    assert record["prompt"] == "what colour?"
    assert record["images"] == [str((root / "red.png").resolve())]
    assert record["model"] == str(root / "m")
    assert record["settings"] == {"max_new_tokens": 9, "temperature": 0.0, "do_sample": False}
    assert 1 <= record["generated_tokens"] <= 9
    sampled = runner.invoke(app, ["chat", str(root / "m"), "-p", "hi", "--json", "--temperature", "1.5"])
    assert sampled.exit_code == 0, sampled.output
    assert json.loads(sampled.stdout)["settings"]["do_sample"] is True


def test_chat_interactive_commands(saved, tmp_path):
    root, loaded = saved
    save = tmp_path / "conv.json"
    lines = ["/help", "/colour", f"/image {root / 'red.png'}", "what colour?", f"/save {save}", "/reset",
             "hello", "/quit", "never sent"]  # fmt: skip
    out = runner.invoke(
        app, ["chat", str(root / "m"), "--max-new-tokens", "8"], input="\n".join(lines) + "\n"
    )
    assert out.exit_code == 0, out.output
    first = _greedy(loaded, [{"role": "user", "content": "<image>\nwhat colour?"}], [_red()], 8)
    second = _greedy(loaded, [{"role": "user", "content": "hello"}], None, 8)  # after /reset: no history
    assert f"cambrian> {first}\n" in out.stdout and f"cambrian> {second}\n" in out.stdout
    assert out.stdout.count("cambrian> ") == 2
    assert "/save FILE" in out.stdout and "/reset" in out.stdout  # /help
    assert (
        out.stderr.strip() == "unknown command /colour; valid: /image PATH, /reset, /save FILE, /help, /quit"
    )
    data = json.loads(save.read_text())
    assert data["model"] == str(root / "m")
    assert data["settings"] == {"max_new_tokens": 8, "temperature": 0.0, "do_sample": False}
    assert data["messages"] == [
        {"role": "user", "content": "<image>\nwhat colour?", "images": [str((root / "red.png").resolve())]},
        {"role": "assistant", "content": first},
    ]


def test_chat_multi_turn_keeps_history(saved):
    root, loaded = saved
    out = runner.invoke(
        app,
        ["chat", str(root / "m"), "-i", str(root / "red.png"), "--max-new-tokens", "6"],
        input="what colour?\nand now?\n",
    )  # fmt: skip  (ends with Ctrl-D)
    assert out.exit_code == 0, out.output
    first = _greedy(loaded, [{"role": "user", "content": "<image>\nwhat colour?"}], [_red()], 6)
    history = [
        {"role": "user", "content": "<image>\nwhat colour?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "and now?"},
    ]
    second = _greedy(loaded, history, [_red()], 6)
    assert out.stdout.count("cambrian> ") == 2
    assert f"cambrian> {first}\n" in out.stdout and f"cambrian> {second}\n" in out.stdout


def _png(path, size=(40, 30)):
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return path


def _png_claiming(path, width, height):
    """A real small PNG whose IHDR (with a valid CRC) claims ``width`` x ``height``."""
    data = bytearray(_png(path).read_bytes())
    # signature (8) | length (4) | b"IHDR" (4) | width, height (4 + 4) ... | CRC of type + 13 data bytes
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _truncated(path):
    noise = torch.randint(0, 256, (64, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "no such file"),
        ("text", "not an image"),
        ("truncated", "unreadable image"),
        ("huge", "9000x8000 is 72,000,000 pixels, over the limit of 64,000,000"),
        ("bomb", "decompression bomb"),
        ("limit", "40x30 is 1,200 pixels, over the limit of 1,000"),
    ],
)
def test_chat_bad_image_is_one_line_exit_2_before_loading(tmp_path, monkeypatch, kind, reason):
    path = tmp_path / "x.png"
    if kind == "text":
        path.write_text("hello, I am not a picture\n")
    elif kind == "truncated":
        _truncated(path)
    elif kind == "huge":
        _png_claiming(path, 9000, 8000)
    elif kind == "bomb":
        _png_claiming(path, 100_000, 100_000)
    elif kind == "limit":
        _png(path)
        monkeypatch.setattr(images_module, "DEFAULT_MAX_PIXELS", 1_000)
    # The model does not exist: the image error proves images are checked before any model loading.
    out = runner.invoke(app, ["chat", str(tmp_path / "no-model"), "-i", str(path), "-p", "hi"])
    assert out.exit_code == 2, out.output
    assert out.stdout == ""
    err = out.stderr.strip()
    assert "\n" not in err and "Traceback" not in out.output, out.output
    assert err.startswith(f"error: {path}: ") and reason in err, err


def test_chat_bad_image_in_the_chat_is_one_line_and_the_chat_goes_on(saved, tmp_path):
    root, loaded = saved
    (tmp_path / "x.png").write_text("text")
    _truncated(tmp_path / "t.png")
    out = runner.invoke(app, ["chat", str(root / "m"), "--max-new-tokens", "5"],
                        input=f"/image {tmp_path / 'x.png'}\n/image {tmp_path / 't.png'}\nhello\n\n")  # fmt: skip
    assert out.exit_code == 0, out.output
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and "x.png: not an image" in errors[0] and "t.png: unreadable image" in errors[1]
    assert f"cambrian> {_greedy(loaded, [{'role': 'user', 'content': 'hello'}], None, 5)}\n" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--json"], "--json needs --prompt"),
        (["-p", "hi", "--temperature", "-1"], "--temperature must be >= 0"),
        (["-p", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ],
)
def test_chat_bad_settings_exit_2(tmp_path, args, message):
    out = runner.invoke(app, ["chat", str(tmp_path / "no-model"), *args])
    assert out.exit_code == 2 and out.stderr.startswith(f"error: {message}"), out.output
