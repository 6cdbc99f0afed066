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


def _load_model(model: str, tower_path: list[str] | None, allow_download: bool):
    """(model, processor) from a model directory (ours or released) or a preset id (random weights)."""
    from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
    from cambrian.models.presets import PRESETS

    if model in PRESETS and not Path(model).exists():
        return build_tiny(model)
    if not Path(model).exists() and not allow_download:
        raise typer.BadParameter(
            f"{model} is neither a model directory nor a preset id ({', '.join(PRESETS.names())}); "
            "pass --allow-download to fetch a hub id"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would mix into the answers
    paths = dict(t.split("=", 1) for t in tower_path or [])
    net = CambrianForCausalLM.from_pretrained(model, tower_paths=paths, allow_download=allow_download)
    return net.eval(), CambrianProcessor.from_pretrained(model, tower_paths=paths)


@app.command()
def chat(
    model: str = typer.Argument(..., help="model directory (ours or the released layout) or preset id"),
    image: list[Path] = typer.Option(None, "--image", "-i", help="image file(s), shown in the first turn"),
    prompt: str = typer.Option(
        None, "--prompt", "-p", help="one message and exit; omit for an interactive chat"
    ),
    max_new_tokens: int = 128,
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads (model id or tower weights)"),
) -> None:
    """Talk to a model about images: `cambrian chat RUN/final -i photo.png -p "What is left of the cube?"`."""
    from PIL import Image

    net, proc = _load_model(model, tower_path, allow_download)
    images = []
    for p in image or []:
        if not p.is_file():
            raise typer.BadParameter(f"image file {p} does not exist")
        images.append(Image.open(p).convert("RGB"))
    messages: list[dict[str, str]] = []

    def reply(text: str) -> str:
        if not messages and images and proc.image_token not in text:
            text = f"{proc.image_token}\n" * len(images) + text
        messages.append({"role": "user", "content": text})
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        answer = proc.generate_replies(net, [messages], images, max_new_tokens, **sampling)[0]
        messages.append({"role": "assistant", "content": answer})
        return answer

    if prompt is not None:
        console.print(reply(prompt), markup=False)
        return
    console.print("[dim]empty line or Ctrl-D to quit[/dim]")
    while True:
        try:
            text = console.input("[bold]you> [/bold]").strip()
        except EOFError:
            break
        if not text:
            break
        console.print("[bold]cambrian>[/bold] " + reply(text), highlight=False)


@app.command()
def quickstart(
    minutes: float = typer.Option(
        7.0, help="training budget in nominal minutes of a 2-core CPU (fixed steps)"
    ),
    compare: bool = typer.Option(False, "--compare", help="also train a single-tower MLP-projector baseline"),
    seed: int = 0,
    out: Path = typer.Option(Path("runs/quickstart"), help="run directory"),
    train_scenes: int = typer.Option(3000, help="rendered training scenes"),
    test_items: int = typer.Option(400, help="held-out CV-Bench-style test items"),
) -> None:
    """Generate a CV-Bench-style dataset, train a tiny Cambrian through stages 0-2, evaluate it, show it."""
    from cambrian.quickstart import QuickstartConfig, run_quickstart

    qc = QuickstartConfig(
        out=str(out), seed=seed, minutes=minutes, compare=compare, train_scenes=train_scenes,
        test_items=test_items,
    )  # fmt: skip
    run_quickstart(qc, console)


@app.command()
def demo(seed: int = 0) -> None:
    """Build the tiny preset (random weights), run one image + question through it, show the token flow."""
    from cambrian.demo import run_demo

    run_demo(console, seed=seed)


data_app = typer.Typer(
    help="Training data (LLaVA/Cambrian .jsonl or .json): check rows and images.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("validate")
def data_validate(
    file: Path = typer.Argument(
        ..., help="data file: .jsonl (one row per line) or .json (one array of rows)"
    ),
    images: Path = typer.Option(
        None, "--images", help="image root directory [default: the data file's directory]"
    ),
    check_images: bool = typer.Option(
        True, "--check-images/--no-check-images", help="open every image with PIL"
    ),
    limit: int = typer.Option(50, help="most bad rows printed"),
    json_out: Path = typer.Option(None, "--json", help="write the full report (every bad row) as JSON here"),
    workers: int = typer.Option(4, help="threads checking rows (image reads release the GIL)"),
) -> None:
    """Check every row (JSON, fields, roles, <image> placeholders vs images, image files); exit 1 if any is bad."""
    import json

    from cambrian.data.index import IndexFormatError
    from cambrian.data.validate import validate_file

    err = Console(stderr=True, soft_wrap=True)
    if not file.is_file():
        err.print(f"error: data file {file} does not exist", markup=False)
        raise typer.Exit(2)
    if check_images and images is not None and not images.is_dir():
        err.print(f"error: image directory {images} does not exist (or pass --no-check-images)", markup=False)
        raise typer.Exit(2)
    try:
        report = validate_file(
            file, images, check_images=check_images, max_report=None if json_out else limit, workers=workers
        )
    except IndexFormatError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    report.print(console, limit=limit)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
        console.print(f"full report written to {json_out}", markup=False)
    raise typer.Exit(0 if report.ok else 1)


@app.command(context_settings={"allow_extra_args": False})
def train(
    config: Path = typer.Argument(
        None, help="training config YAML (may name a `preset:`); optional with preset=..."
    ),
    overrides: list[str] = typer.Argument(
        None, help="key.sub=value overrides, e.g. optim.lr=2e-5 data.path=d.jsonl"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest complete checkpoint"),
    list_presets: bool = typer.Option(False, "--presets", help="list the training presets and exit"),
) -> None:
    """Train either Cambrian stage: `cambrian train CONFIG.yaml [key=value ...]`; torchrun for several processes."""
    from cambrian.train.config import TRAIN_PRESETS, resolve_config
    from cambrian.train.trainer import TrainingStopped
    from cambrian.train.trainer import train as run_training
    from cambrian.utils.config import ConfigError

    if list_presets:
        for name in TRAIN_PRESETS.names():
            console.print(name)
        return
    args = list(overrides or [])
    if config is not None and "=" in str(config) and not config.suffix:  # only overrides were given
        args.insert(0, str(config))
        config = None
    err = Console(stderr=True, soft_wrap=True)
    try:
        cfg = resolve_config(config, args)
    except (ConfigError, KeyError) as e:
        err.print(f"config error: {e}", markup=False)
        raise typer.Exit(2) from None
    try:
        run_training(cfg, resume=resume)
    except TrainingStopped as e:
        err.print(f"training stopped: {e}", markup=False)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
