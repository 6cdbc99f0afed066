"""The `cambrian` command line: a thin Typer layer over the library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Cambrian-1 multimodal LLMs: run, inspect, train and evaluate.", no_args_is_help=True)
console = Console()


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@app.command()
def presets() -> None:
    """List the named model presets with their sizes (counted on the meta device, no memory used)."""
    import torch

    from cambrian import CambrianForCausalLM, preset_config
    from cambrian.models.presets import PRESETS

    table = Table("preset", "LLM", "towers", "connector", "in-LLM SVA after layers", "params (no towers)")
    for name in PRESETS.names():
        cfg = preset_config(name)
        with torch.device("meta"):
            model = CambrianForCausalLM(cfg)
        n = _count(model) - _count(model.vision_towers)
        table.add_row(
            name,
            cfg.text_config.model_type,
            ", ".join(t.family for t in cfg.tower_configs),
            cfg.mm_projector_type,
            str(cfg.sva_layer_indices) if cfg.sva_layer_indices else "-",
            f"{n:,}",
        )
    console.print(table)


@app.command()
def generate(
    model: str = typer.Option(..., help="model directory (our format or the released layout) or preset id"),
    prompt: str = typer.Option(..., help="user message; an <image> is prepended when --image is given"),
    image: list[Path] = typer.Option(None, help="image file(s), one per <image>"),
    max_new_tokens: int = 64,
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads of missing tower weights"),
) -> None:
    """Answer one prompt about one or more images (greedy decoding)."""
    import torch
    from PIL import Image

    from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
    from cambrian.models.presets import PRESETS

    if model in PRESETS and not Path(model).exists():
        net, proc = build_tiny(model)
    else:
        paths = dict(t.split("=", 1) for t in tower_path or [])
        net = CambrianForCausalLM.from_pretrained(model, tower_paths=paths, allow_download=allow_download)
        proc = CambrianProcessor.from_pretrained(model, tower_paths=paths)
    images = []
    for p in image or []:
        if not p.is_file():
            raise typer.BadParameter(f"image file {p} does not exist")
        images.append(Image.open(p).convert("RGB"))
    text = "<image>\n" * len(images) + prompt if "<image>" not in prompt else prompt
    full = proc.apply_chat_template([{"role": "user", "content": text}])
    inputs = proc(text=[full], images=images or None)
    with torch.no_grad():
        out = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    console.print(proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0])


@app.command()
def quickstart(seed: int = 0) -> None:
    """Build the tiny preset, run one image + question through it and show how the tokens flow."""
    from cambrian.demo import run_demo

    run_demo(console, seed=seed)


if __name__ == "__main__":
    app()
