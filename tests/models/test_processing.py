"""CambrianProcessor as a standard Hugging Face processor: ProcessorMixin save/load, the Jinja chat template,
padding / truncation / max_length, and the Auto classes (registered, and via auto_map + trust_remote_code)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from cambrian import CambrianConfig, CambrianForCausalLM, CambrianProcessor, build_tiny, preset_config
from cambrian.models.conversation import build_prompt
from cambrian.models.image_processing_cambrian import CambrianImageProcessor
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

TOL = 1e-5
FIXED_TEMPLATES = ("llama_3", "vicuna_v1", "chatml_direct", "phi3")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny", seed=0)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """The tiny model and its processor saved to one directory (the layout `cambrian train` writes)."""
    model, proc = tiny
    path = tmp_path_factory.mktemp("saved")
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def _img(w: int, h: int, seed: int = 0) -> Image.Image:
    return demo_image(w, h, seed=seed)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _proc(conv_mode: str | None, system: str | None = None) -> CambrianProcessor:
    proc = CambrianProcessor.from_config(preset_config("tiny", conv_mode=conv_mode), build_tiny_tokenizer())
    proc.system = system
    return proc


def _real_logits(model, batch, i):
    with torch.no_grad():
        out = model(**batch).logits
    return out[i][batch["attention_mask"][i].bool()]


CONVERSATIONS = [
    _user("<image>\nHow many balls?"),
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "<image>\nAnd <image>\ncompare."},
    ],
    [{"role": "system", "content": ""}, {"role": "user", "content": "No system text."}],
]


# ------------------------------------------------------------------ chat template
@pytest.mark.parametrize("system", [None, "Answer in French."])
@pytest.mark.parametrize("conv_mode", FIXED_TEMPLATES)
def test_jinja_chat_template_renders_what_the_builtin_renderer_does(conv_mode, system):
    proc = _proc(conv_mode, system)
    for conv in CONVERSATIONS:
        for gen in (True, False):
            want = build_prompt(proc.template(), conv, add_generation_prompt=gen)
            assert proc.apply_chat_template(conv, add_generation_prompt=gen) == want
            jinja = proc.apply_chat_template(
                conv, chat_template=proc.chat_template, add_generation_prompt=gen
            )
            assert jinja == want
    # content blocks (transformers / OpenAI style): an image block is "<image>\n"
    blocks = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many balls?"}]}]
    want = proc.apply_chat_template(CONVERSATIONS[0])
    assert proc.apply_chat_template(blocks) == want
    assert proc.apply_chat_template(blocks, chat_template=proc.chat_template) == want
    with pytest.raises(Exception, match="alternate"):
        proc.apply_chat_template(_user("a") + _user("b"), chat_template=proc.chat_template)


def test_tokenizer_template_with_processor_system_matches(tmp_path):
    """conv_mode "chat_template" defers to the tokenizer's template; the processor's system becomes the
    default system message of the saved Jinja template, and reloading does not stack it twice."""
    tok = build_tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    proc = CambrianProcessor.from_config(preset_config("tiny", conv_mode="chat_template"), tok, system="Sys.")
    conv = _user("Hi?")
    want = proc.apply_chat_template(conv)
    assert want.startswith("<|im_start|>system\nSys.<|im_end|>")
    assert proc.apply_chat_template(conv, chat_template=proc.chat_template) == want
    assert "Sys." not in proc.apply_chat_template(conv, system="")
    proc.save_pretrained(tmp_path)
    loaded = CambrianProcessor.from_pretrained(tmp_path)
    assert loaded.tokenizer.chat_template == tok.chat_template
    assert loaded.chat_template == proc.chat_template
    assert loaded.apply_chat_template(conv) == want
    assert "Sys." not in loaded.apply_chat_template(conv, system="")


def test_apply_chat_template_tokenize_and_batches(tiny):
    _, proc = tiny
    im = _img(40, 30)
    conv = [
        {"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "Colour?"}]}
    ]
    out = proc.apply_chat_template(conv, tokenize=True, return_dict=True)
    want = proc(text=[proc.apply_chat_template(conv)], images=[im])
    assert out.keys() == want.keys()
    assert torch.equal(out["input_ids"], want["input_ids"])
    assert torch.equal(proc.apply_chat_template(conv, tokenize=True), want["input_ids"])
    assert proc.apply_chat_template([_user("a?"), _user("b?")]) == [
        proc.apply_chat_template(_user("a?")),
        proc.apply_chat_template(_user("b?")),
    ]
    # LLaVA rows still work
    assert proc.apply_chat_template([{"from": "human", "value": "a?"}]) == proc.apply_chat_template(
        _user("a?")
    )


# ------------------------------------------------------------------ save / load
def test_processor_round_trip(tiny, tmp_path):
    _, proc = tiny
    proc.save_pretrained(tmp_path)
    names = set(os.listdir(tmp_path))
    assert {"processor_config.json", "chat_template.jinja", "tokenizer_config.json"} <= names
    assert {
        "configuration_cambrian.py",
        "modeling_cambrian.py",
        "image_processing_cambrian.py",
        "processing_cambrian.py",
    } <= names
    d = json.loads((tmp_path / "processor_config.json").read_text())
    assert d["processor_class"] == "CambrianProcessor"
    assert d["auto_map"] == {"AutoProcessor": "processing_cambrian.CambrianProcessor"}
    assert d["image_processor"]["image_processor_type"] == "CambrianImageProcessor"
    assert d["image_processor"]["auto_map"] == {
        "AutoImageProcessor": "image_processing_cambrian.CambrianImageProcessor"
    }
    assert (tmp_path / "chat_template.jinja").read_text() == proc.chat_template

    texts = [
        proc.apply_chat_template(_user("<image>\nHi")),
        proc.apply_chat_template(_user("Longer, no image?")),
    ]
    images = [_img(40, 60)]
    want = proc(text=texts, images=images)
    for loader in (CambrianProcessor.from_pretrained, AutoProcessor.from_pretrained):
        loaded = loader(tmp_path)
        assert type(loaded) is CambrianProcessor
        assert loaded.preprocessors == proc.preprocessors
        for attr in (
            "image_token_len",
            "unpad",
            "image_newline",
            "conv_mode",
            "image_token",
            "image_token_id",
        ):
            assert getattr(loaded, attr) == getattr(proc, attr)
        got = loaded(text=texts, images=images)
        assert got.keys() == want.keys()
        assert torch.equal(got["input_ids"], want["input_ids"])
        assert torch.equal(got["attention_mask"], want["attention_mask"])
        assert all(torch.equal(a, b) for a, b in zip(got["pixel_values"], want["pixel_values"]))
        assert loaded.chat_template == proc.chat_template
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(image_processor, CambrianImageProcessor)
    assert image_processor.towers == proc.image_processor.towers
    # HF / vLLM tools that only use the tokenizer get the same prompts from the saved template
    tok = AutoTokenizer.from_pretrained(tmp_path)
    conv = _user("<image>\nHi")
    assert tok.apply_chat_template(
        conv, tokenize=False, add_generation_prompt=True
    ) == proc.apply_chat_template(conv)


def test_saved_template_follows_system_and_custom_template_survives(tiny, tmp_path):
    _, proc = tiny
    proc.save_pretrained(tmp_path / "a")
    loaded = CambrianProcessor.from_pretrained(tmp_path / "a")
    loaded.system = "Be brief."  # the generated template follows the processor's settings
    assert "Be brief." in loaded.chat_template
    assert loaded.apply_chat_template(_user("Hi")) == loaded.apply_chat_template(
        _user("Hi"), chat_template=loaded.chat_template
    )
    custom = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    loaded.chat_template = custom
    assert loaded.apply_chat_template(_user("Hi")) == "[Hi]"
    loaded.save_pretrained(tmp_path / "b")
    again = CambrianProcessor.from_pretrained(tmp_path / "b")
    assert again.chat_template == custom
    assert again.apply_chat_template(_user("Hi")) == "[Hi]"


def test_processor_saved_by_earlier_versions_still_loads(tiny, tmp_path):
    _, proc = tiny
    proc.tokenizer.save_pretrained(tmp_path)
    legacy = {
        "processor_class": "CambrianProcessor",
        "preprocessors": [
            {
                "image_size": p.image_size,
                "image_mean": list(p.image_mean),
                "image_std": list(p.image_std),
                "pad_fill": list(p.pad_fill),
            }
            for p in proc.preprocessors
        ],
        "image_token_len": proc.image_token_len,
        "unpad": proc.unpad,
        "image_newline": proc.image_newline,
        "conv_mode": proc.conv_mode,
        "image_token": proc.image_token,
        "system": "Old.",
    }
    (tmp_path / "processor_config.json").write_text(json.dumps(legacy))
    for loader in (CambrianProcessor.from_pretrained, AutoProcessor.from_pretrained):
        loaded = loader(tmp_path)
        assert loaded.preprocessors == proc.preprocessors and loaded.system == "Old."
        batch, want = (p(text=["<image>\nx"], images=[_img(30, 50)]) for p in (loaded, proc))
        assert torch.equal(batch["input_ids"], want["input_ids"])


def test_model_directory_without_processor_files(tiny, tmp_path):
    model, proc = tiny
    model.save_pretrained(tmp_path)
    proc.tokenizer.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is CambrianProcessor and loaded.preprocessors == proc.preprocessors


# ------------------------------------------------------------------ padding / truncation
def test_padding_true_masks_and_rows_equal_unbatched(tiny):
    model, proc = tiny
    texts = [
        proc.apply_chat_template(_user("<image>\nWhat is left of the ball?")),
        proc.apply_chat_template(_user("A longer text-only question about nothing in particular?")),
        proc.apply_chat_template(_user("<image>\nand <image>\ncompare them.")),
    ]
    images = [[_img(80, 40, 1)], [], [_img(30, 70, 2), _img(50, 50, 3)]]
    singles = [proc(text=[t], images=im or None) for t, im in zip(texts, images)]
    lengths = [s["input_ids"].shape[1] for s in singles]
    logits = [_real_logits(model, s, 0) for s in singles]
    for side in ("left", "right"):
        batch = proc(text=texts, images=images, return_tensors="pt", padding=True, padding_side=side)
        assert batch["input_ids"].shape == (3, max(lengths))
        for i, n in enumerate(lengths):
            mask = batch["attention_mask"][i]
            assert mask.sum() == n
            real = slice(max(lengths) - n, None) if side == "left" else slice(0, n)
            assert mask[real].all()
            assert torch.equal(batch["input_ids"][i][real], singles[i]["input_ids"][0])
            assert (batch["input_ids"][i][~mask.bool()] == proc.tokenizer.pad_token_id).all()
            torch.testing.assert_close(_real_logits(model, batch, i), logits[i], atol=TOL, rtol=TOL)
    # the padding side as a text kwarg (transformers' nested form) and the tokenizer default
    nested = proc(text=texts, images=images, text_kwargs={"padding_side": "left"})
    assert nested["attention_mask"][0, 0] == 0
    assert proc(text=texts, images=images)["attention_mask"][0, -1] == 0  # the tiny tokenizer pads right


def test_padding_max_length_and_multiple_of(tiny):
    model, proc = tiny
    texts = [proc.apply_chat_template(_user("<image>\nHi")), proc.apply_chat_template(_user("Hello?"))]
    images = [_img(40, 40)]
    longest = proc(text=texts, images=images)["input_ids"].shape[1]
    batch = proc(text=texts, images=images, padding="max_length", max_length=longest + 7, padding_side="left")
    assert batch["input_ids"].shape == (2, longest + 7)
    one = proc(text=texts[:1], images=images)
    torch.testing.assert_close(_real_logits(model, batch, 0), _real_logits(model, one, 0), atol=TOL, rtol=TOL)
    assert proc(text=texts, images=images, pad_to_multiple_of=64)["input_ids"].shape[1] % 64 == 0


def test_no_padding_gives_lists_or_a_clear_error(tiny):
    _, proc = tiny
    texts = ["short", "a much longer text than the first"]
    with pytest.raises(ValueError, match="padding=True"):
        proc(text=texts, padding=False)
    out = proc(text=texts, padding=False, return_tensors=None)
    assert [len(x) for x in out["input_ids"]] == [len(m) for m in out["attention_mask"]]
    assert len(out["input_ids"][0]) < len(out["input_ids"][1])
    assert isinstance(proc(text=texts, return_tensors="np")["input_ids"], np.ndarray)


def test_truncation_cuts_text_and_refuses_to_cut_images(tiny):
    _, proc = tiny
    text = "<image>\nA question with quite a few words after the image, to be cut."
    full = proc(text=[text], images=[_img(40, 30)])["input_ids"][0]
    slots = int((full == proc.image_token_id).sum())
    cut = proc(text=[text], images=[_img(40, 30)], truncation=True, max_length=slots + 3)
    assert torch.equal(cut["input_ids"][0], full[: slots + 3])
    assert int((cut["input_ids"] == proc.image_token_id).sum()) == slots
    with pytest.raises(ValueError, match="would cut image 0"):
        proc(text=[text], images=[_img(40, 30)], truncation=True, max_length=slots - 1)
    # max_length alone neither truncates nor pads (as in transformers)
    assert torch.equal(proc(text=[text], images=[_img(40, 30)], max_length=4)["input_ids"][0], full)
    assert full[0] == proc.image_token_id  # the tiny tokenizer adds no BOS: the image comes first
    proc.tokenizer.truncation_side = "left"
    try:
        left = proc(text=["no image here at all, just text", "x"], truncation=True, max_length=3)
        assert left["input_ids"].shape == (2, 3)
        with pytest.raises(ValueError, match="image 0"):
            proc(text=[text], images=[_img(40, 30)], truncation=True, max_length=len(full) - 1)
    finally:
        proc.tokenizer.truncation_side = "right"


def test_call_styles_and_argument_errors(tiny):
    _, proc = tiny
    im = _img(40, 30)
    want = proc(text=["<image>\nHi"], images=[im])
    for got in (proc(["<image>\nHi"], images=[im]), proc([im], ["<image>\nHi"]), proc("<image>\nHi", im)):
        assert torch.equal(got["input_ids"], want["input_ids"])
    only = proc(images=[im, _img(20, 50)])
    assert only["image_sizes"].tolist() == [[40, 30], [20, 50]] and set(only) == {
        "pixel_values",
        "image_sizes",
    }
    plain = proc(text=["Hi there"], add_special_tokens=False)
    assert plain["input_ids"][0].tolist() == proc.tokenizer("Hi there", add_special_tokens=False).input_ids
    with pytest.raises(TypeError, match="paddingside"):
        proc(text=["Hi"], paddingside="left")
    with pytest.raises(ValueError, match="return_offsets_mapping"):
        proc(text=["Hi"], return_offsets_mapping=True)
    with pytest.raises(ValueError, match="image size"):
        proc(text=["<image>"], images=[im], size={"height": 10, "width": 10})
    with pytest.raises(ValueError, match="1 images were given"):
        proc(text=["<image> <image>"], images=[im])
    mm = proc(text=["<image>\nHi"], images=[im], return_mm_token_type_ids=True)
    assert torch.equal(mm["mm_token_type_ids"].bool(), want["input_ids"] == proc.image_token_id)


def test_num_multimodal_tokens_for_vllm(tiny):
    _, proc = tiny
    sizes_wh = torch.tensor([[64, 48], [30, 70]])
    data = proc._get_num_multimodal_tokens(image_sizes=sizes_wh.flip(-1).tolist())
    assert data.num_image_tokens == proc.num_image_tokens(sizes_wh).tolist()


# ------------------------------------------------------------------ Auto classes
def test_auto_classes_load_the_saved_model(tiny, saved):
    model, proc = tiny
    config = json.loads((saved / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_cambrian.CambrianConfig",
        "AutoModelForCausalLM": "modeling_cambrian.CambrianForCausalLM",
        "AutoModelForImageTextToText": "modeling_cambrian.CambrianForCausalLM",
        "AutoProcessor": "processing_cambrian.CambrianProcessor",
    }
    assert isinstance(AutoConfig.from_pretrained(saved), CambrianConfig)
    batch = proc(text=[proc.apply_chat_template(_user("<image>\nHi"))], images=[_img(40, 60)])
    with torch.no_grad():
        want = model(**batch).logits
    for auto in (AutoModelForCausalLM, AutoModelForImageTextToText):
        loaded = auto.from_pretrained(saved).eval()
        assert type(loaded) is CambrianForCausalLM
        loaded_proc = AutoProcessor.from_pretrained(saved)
        again = loaded_proc(
            text=[loaded_proc.apply_chat_template(_user("<image>\nHi"))], images=[_img(40, 60)]
        )
        with torch.no_grad():
            torch.testing.assert_close(loaded(**again).logits, want, atol=0, rtol=0)


def _run(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_cambrian_registers_and_trust_remote_code_finds_the_classes(tiny, saved, tmp_path):
    model, proc = tiny
    batch = proc(text=[proc.apply_chat_template(_user("<image>\nHi"))], images=[_img(40, 60)])
    torch.save(dict(batch), tmp_path / "batch.pt")
    with torch.no_grad():
        want = model(**batch).logits
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    # 1. `import cambrian` is light and still registers the Auto classes (when transformers loads them).
    r = _run(
        f"""
        import sys
        import cambrian
        assert "torch" not in sys.modules, "import cambrian imported torch"
        from transformers import AutoConfig, AutoProcessor
        print(type(AutoConfig.from_pretrained({str(saved)!r})).__name__)
        print(type(AutoProcessor.from_pretrained({str(saved)!r})).__name__)
        """,
        env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CambrianConfig", "CambrianProcessor"]
    # 2. A tool that never imports cambrian loads everything through auto_map + trust_remote_code; a
    # processor saved before the image processor had its own module (its auto_map names
    # processing_cambrian.CambrianImageProcessor, no image_processing_cambrian.py) still loads.
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    (old / "image_processing_cambrian.py").unlink()
    d = json.loads((old / "processor_config.json").read_text())
    d["image_processor"]["auto_map"] = {"AutoImageProcessor": "processing_cambrian.CambrianImageProcessor"}
    (old / "processor_config.json").write_text(json.dumps(d))
    r = _run(
        f"""
        import sys, torch
        from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoProcessor
        assert "cambrian" not in sys.modules
        model = AutoModelForCausalLM.from_pretrained({str(saved)!r}, trust_remote_code=True).eval()
        proc = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        print(type(model).__module__, type(proc).__module__, type(image_processor).__module__)
        old = [AutoCls.from_pretrained({str(old)!r}, trust_remote_code=True)
               for AutoCls in (AutoProcessor, AutoImageProcessor)]
        print(*(type(x).__name__ for x in old))
        with torch.no_grad():
            torch.save(model(**torch.load({str(tmp_path / "batch.pt")!r})).logits, {str(tmp_path / "out.pt")!r})
        """,
        env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "cambrian.models.modeling_cambrian",
        "cambrian.models.processing_cambrian",
        "cambrian.models.image_processing_cambrian",
        "CambrianProcessor",
        "CambrianImageProcessor",
    ]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), want, atol=0, rtol=0)


@pytest.mark.parametrize(
    "module", ["image_processing_cambrian", "chat_template", "processing_cambrian", "released"]
)
def test_module_imports_first_and_registers(module):
    """Each module of the processor (and released, which shares its tokenizer loading) imports as the first
    import of a fresh interpreter, without an import cycle or a registration warning, and the Auto
    classes know the processor afterwards."""
    r = _run(
        f"""
        import warnings
        warnings.simplefilter("error", RuntimeWarning)
        import cambrian.models.{module}
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
        from cambrian.models.configuration_cambrian import CambrianConfig
        print(PROCESSOR_MAPPING[CambrianConfig].__name__)
        """,
        {"HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CambrianProcessor"]


def test_tokenization_stays_light():
    """The data commands import tokenization (IMAGE_TOKEN): it must not pull in transformers or torch."""
    r = _run(
        """
        import sys
        import cambrian.models.tokenization
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """,
        {},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
