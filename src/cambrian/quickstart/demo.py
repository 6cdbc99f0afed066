"""The pre-training quickstart: build the tiny preset and show one image + question flowing through it.

Everything is built offline from configs (random weights, an in-process tokenizer), so this runs on
any machine in seconds and shows the shapes at each stage of the Cambrian pipeline.
"""

from __future__ import annotations

import time

import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table


def demo_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A small synthetic scene (coloured shapes on a ground plane); wide, so unpadding shows."""
    g = torch.Generator().manual_seed(seed)
    img = Image.new("RGB", (width, height), (200, 220, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, height // 2, width, height], fill=(120, 160, 90))
    colours = [(220, 40, 40), (40, 40, 220), (240, 200, 30)]
    r = max(2, min(width, height) // 8)
    for k, c in enumerate(colours):
        x = int(torch.randint(0, max(1, width - 2 * r), (1,), generator=g))
        y = min(height - 2 * r, height // 2 + k * r)
        draw.ellipse([x, y, x + 2 * r, y + 2 * r], fill=c)
    return img


def run_demo(console: Console, seed: int = 0) -> None:
    from cambrian import build_tiny

    t0 = time.perf_counter()
    model, proc = build_tiny("tiny", seed=seed)
    cfg = model.config
    image = demo_image(seed=seed)
    prompt = proc.apply_chat_template([{"role": "user", "content": "<image>\nHow many red balls are there?"}])
    inputs = proc(text=[prompt], images=[image])
    n_slots = int((inputs["input_ids"] == cfg.image_token_id).sum())

    table = Table("stage", "shape / value", title="Token flow through the tiny Cambrian")
    table.add_row("image", f"{image.size[0]}x{image.size[1]} (w x h)")
    table.add_row("prompt", repr(prompt))
    for tower, px in zip(model.vision_towers, inputs["pixel_values"]):
        with torch.no_grad():
            feats = tower(px)
        table.add_row(f"tower {tower.cfg.family}", f"pixels {tuple(px.shape)} -> tokens {tuple(feats.shape)}")
    rows, cols = proc.num_image_tokens(inputs["image_sizes"]).item() // (proc.side + 1), proc.side
    table.add_row(
        "SVA connector",
        f"{cfg.image_token_len} queries on a {proc.side}x{proc.side} grid, depth {cfg.connector_depth}",
    )
    table.add_row(
        "unpadding", f"keeps {rows} of {proc.side} rows -> {rows}x({cols}+newline) = {n_slots} image slots"
    )
    table.add_row(
        "input_ids",
        f"{tuple(inputs['input_ids'].shape)}: {inputs['input_ids'].shape[1] - n_slots} text tokens + {n_slots} image slots",
    )
    table.add_row("in-LLM SVA", f"after decoder layers {cfg.sva_layer_indices}")
    with torch.no_grad():
        out = model(**inputs)
        gen = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    table.add_row("logits", f"{tuple(out.logits.shape)} (aligned with input_ids)")
    new = gen[0, inputs["input_ids"].shape[1] :]
    table.add_row("generated (random weights)", repr(proc.decode(new, skip_special_tokens=True)))
    console.print(table)
    console.print(
        f"done in {time.perf_counter() - t0:.1f}s — untrained weights, so the answer is noise; "
        "training comes with `cambrian train`."
    )
