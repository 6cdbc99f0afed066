"""`cambrian chat`: one-shot and interactive answers from a saved model equal direct generation."""

from __future__ import annotations

import torch
from PIL import Image
from typer.testing import CliRunner

from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
from cambrian.cli import app

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
