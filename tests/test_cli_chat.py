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
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr == (
        "error: no-such-model is neither a model directory nor a preset id (cambrian-13b, cambrian-34b, "
        "cambrian-8b, cambrian-phi3-3b, tiny, tiny-mistral, tiny-mlp, tiny-phi3, tiny-qwen2); pass "
        "--allow-download to fetch it as a hub id\n"
    )


def test_chat_preset_needs_random():
    for preset in ("cambrian-8b", "tiny"):  # never a random 8B model unless asked for
        out = runner.invoke(app, ["chat", preset, "-p", "hi"])
        assert out.exit_code == 2, out.output
        assert out.stderr == (
            f"error: {preset} is a preset with random weights; pass --random to build it, or give a model "
            "directory\n"
        )
    out = runner.invoke(app, ["chat", "tiny", "--random", "-p", "hi", "--max-new-tokens", "3", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model"] == "tiny"


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
        (["-p", "hi", "--max-new-tokens", "-5"], "--max-new-tokens must be >= 1, got -5"),
        (["-p", "hi", "--temperature", "nan"], "--temperature must be >= 0"),
    ],
)
def test_chat_bad_settings_exit_2(tmp_path, args, message):
    out = runner.invoke(app, ["chat", str(tmp_path / "no-model"), *args])
    assert out.exit_code == 2 and out.stderr.startswith(f"error: {message}"), out.output
    assert out.stderr.count("\n") == 1, out.stderr


# ------------------------------------------------------------------------------------ bad model arguments
RELEASED_TOWER = "siglip/CLIP-ViT-SO400M-14-384"


def _bad_model(root, kind: str) -> str:
    """A MODEL argument that does not load, built on disk under ``root``; returns it as typed."""
    import shutil

    saved = root / "saved"
    if kind in ("truncated-weights", "no-weights", "no-tokenizer") and not saved.exists():
        model, proc = build_tiny("tiny", seed=0)
        model.save_pretrained(saved)
        proc.save_pretrained(saved)
    d = root / kind
    if kind == "not-a-model":
        (d / "images").mkdir(parents=True)
        (d / "notes.txt").write_text("hello")
    elif kind == "run-dir":  # a quickstart run directory: the model is further down
        (d / "cambrian" / "stage2" / "final").mkdir(parents=True)
        (d / "cambrian" / "stage2" / "final" / "config.json").write_text("{}")
    elif kind in ("empty-config", "garbage-config", "list-config", "llama-config", "keyless-config"):
        d.mkdir()
        text = {
            "empty-config": "",
            "garbage-config": '{"model_type": "cambrian",',
            "list-config": "[1, 2]",
            "llama-config": '{"model_type": "llama", "hidden_size": 8}',
            "keyless-config": '{"model_type": "cambrian"}',
        }[kind]
        (d / "config.json").write_text(text)
    elif kind == "released-no-towers":
        d.mkdir()
        cfg = {"mm_vision_tower_aux_list": [RELEASED_TOWER], "mm_vision_tower_aux_token_len_list": [576],
               "image_token_len": 576, "mm_projector_type": "sva", "model_type": "llava_llama"}  # fmt: skip
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "model.safetensors").write_bytes(b"")
    elif kind == "released-lacks-keys":
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"mm_vision_tower_aux_list": [RELEASED_TOWER]}))
    elif kind == "truncated-weights":
        shutil.copytree(saved, d)
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "no-weights":
        shutil.copytree(saved, d)
        (d / "model.safetensors").unlink()
    elif kind == "a-file":
        d.write_text("not a directory")
    elif kind == "mistyped":
        (root / "runs" / "model").mkdir(parents=True)
        return str(root / "runs" / "mdoel")
    return str(d)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not-a-model", "{m} is not a model directory: no config.json in it (expected a saved Cambrian model "
                        "or the released Cambrian-1 layout)"),
        ("run-dir", "{m} is not a model directory: no config.json in it (expected a saved Cambrian model or the "
                    "released Cambrian-1 layout); model directories below it: {m}/cambrian/stage2/final"),
        ("empty-config", "{m}/config.json is empty; expected a JSON model config"),
        ("garbage-config", "{m}/config.json is not valid JSON (line 1, column 27: Expecting"),
        ("list-config", "{m}/config.json holds a JSON list; expected an object"),
        ("llama-config", "{m}/config.json is not a Cambrian model config (model_type 'llama'); expected "
                         "model_type 'cambrian' with text_config and vision_towers, or mm_vision_tower_aux_list"),
        ("keyless-config", "{m}/config.json lacks text_config, vision_towers"),
        ("released-lacks-keys", "{m}/config.json (released Cambrian-1 layout) lacks image_token_len, "
                                "mm_projector_type, mm_vision_tower_aux_token_len_list"),
        ("released-no-towers", f"{{m}}: vision tower {RELEASED_TOWER!r} has no weights in the checkpoint; pass "
                               f"--tower-path {RELEASED_TOWER}=DIR (a local copy of timm/ViT-SO400M-14-SigLIP-384) "
                               "or --allow-download"),
        ("truncated-weights", "{m}: cannot load the model: Error while deserializing header"),
        ("no-weights", "{m} has a config.json but no weights (looked for model.safetensors.index.json"),
        ("a-file", "{m} is a file, not a model directory"),
        ("mistyped", "no such directory: {m}; did you mean {root}/runs/model?"),
    ],
)  # fmt: skip
def test_chat_bad_model_is_one_line_exit_2(tmp_path, kind, message):
    model = _bad_model(tmp_path, kind)
    out = runner.invoke(app, ["chat", model, "-p", "hi"])
    assert out.exit_code == 2, out.output
    assert out.stdout == "" and "Traceback" not in out.output, out.output
    err = out.stderr
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("error: " + message.format(m=model, root=tmp_path)), err


@pytest.mark.parametrize(
    "model, message",
    [
        ("./runs/mdoel", "no such directory: ./runs/mdoel"),
        ("runs/final/model.safetensors", "no such directory: runs/final/model.safetensors"),
        ("~/no/such/model", "no such directory: ~/no/such/model"),
        ("nyu-visionx/cambrian-8b", "nyu-visionx/cambrian-8b is neither a model directory nor a preset id"),
    ],
)
def test_chat_path_or_hub_id(tmp_path, monkeypatch, model, message):
    monkeypatch.chdir(tmp_path)  # nothing of these exists here
    monkeypatch.setenv("HOME", str(tmp_path))
    out = runner.invoke(app, ["chat", model, "-p", "hi"])
    assert out.exit_code == 2 and out.stderr.startswith(f"error: {message}"), out.output
    assert out.stderr.count("\n") == 1
    if "hub id" in message:
        assert out.stderr.rstrip().endswith("pass --allow-download to fetch it as a hub id")


def test_chat_tower_path_needs_name_equals_dir(tmp_path):
    released = _bad_model(tmp_path, "released-no-towers")
    out = runner.invoke(app, ["chat", released, "--tower-path", "/weights/siglip", "-p", "hi"])
    assert out.exit_code == 2, out.output
    assert out.stderr == (
        f"error: --tower-path '/weights/siglip' is not of the form NAME=DIR; tower names: {RELEASED_TOWER}\n"
    )
    out = runner.invoke(app, ["chat", "tiny", "--random", "--tower-path", "=x", "-p", "hi"])
    assert out.exit_code == 2 and "is not of the form NAME=DIR; tower names: clip-convnext" in out.stderr
    out = runner.invoke(app, ["chat", released, "--tower-path", f"siglip={tmp_path}", "-p", "hi"])
    assert out.exit_code == 2
    assert (
        out.stderr == f"error: tower path 'siglip': {released} has no such tower; valid: {RELEASED_TOWER}\n"
    )
    out = runner.invoke(
        app, ["chat", released, "--tower-path", f"{RELEASED_TOWER}={tmp_path}/nope", "-p", "hi"]
    )
    assert out.exit_code == 2
    assert (
        out.stderr
        == f"error: tower path {RELEASED_TOWER}={tmp_path}/nope: no such directory: {tmp_path}/nope\n"
    )


def test_chat_bad_image_is_checked_before_a_bad_model(tmp_path):
    (tmp_path / "x.png").write_text("not a picture")
    out = runner.invoke(app, ["chat", "cambrian-8b", "-i", str(tmp_path / "x.png"), "-p", "hi"])
    assert out.exit_code == 2
    assert out.stderr == f"error: {tmp_path / 'x.png'}: not an image (PIL does not recognise the data)\n"
