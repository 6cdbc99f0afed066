"""``cambrian serve``: the command-line face of ``cambrian.serve`` (registered in ``cambrian.cli``)."""

from __future__ import annotations

from pathlib import Path

import typer

from cambrian.models.loading import DTYPES


def serve_command(
    model: str = typer.Argument(..., help="model directory (ours or the released layout) or a preset id"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, help="port (0: any free port; the printed URL says which)"),
    max_batch: int = typer.Option(8, min=1, help="most requests run together in one batched generate"),
    max_queue: int = typer.Option(64, min=1, help="most requests waiting; beyond it: 503 + Retry-After"),
    api_key: str = typer.Option(None, envvar="CAMBRIAN_API_KEY", help="require Authorization: Bearer KEY"),
    allow_dir: Path = typer.Option(None, help="serve file:// image URLs from under this directory only"),
    allow_remote_images: bool = typer.Option(False, help="fetch http(s) image URLs (off: data URLs only)"),
    ui: bool = typer.Option(False, help="also serve the web chat page at /ui"),
    name: str = typer.Option(None, help="model id reported by /v1/models (default: the MODEL argument)"),
    max_tokens_limit: int = typer.Option(2048, min=1, help="largest max_tokens a request may ask for"),
    default_max_tokens: int = typer.Option(512, min=1, help="max_tokens when a request gives none"),
    max_body_mb: float = typer.Option(32.0, min=0.001, help="largest request body (MB)"),
    max_images: int = typer.Option(8, min=0, help="most images in one request"),
    max_pixels: int = typer.Option(25_000_000, min=1, help="most pixels in one image (decompression bombs)"),
    max_image_mb: float = typer.Option(20.0, min=0.001, help="largest encoded image (MB)"),
    dtype: str = typer.Option(None, help=f"load the weights in {'|'.join(DTYPES)} (default: as saved)"),
    quantize: str = typer.Option(
        None, help="int8 (CPU/GPU), nf4 or int8-bnb (CUDA): weight-only LLM linears"
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N"),
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads (model id or tower weights)"),
) -> None:
    """Serve a model over HTTP: OpenAI chat completions at /v1, /health, /metrics, and (--ui) a web page.

    `cambrian serve RUN/final --port 8000`, then point any OpenAI client at http://127.0.0.1:8000/v1.
    """
    import torch

    from cambrian.cli import _fail, _load_model, console

    try:
        from cambrian.serve.app import ServeSettings, create_app
        from cambrian.serve.engine import Engine
        from cambrian.serve.protocol import ImageLimits
        from cambrian.serve.server import run
    except ImportError as e:
        _fail(f"cambrian serve needs {e.name}: pip install 'cambrian[serve]'")

    if default_max_tokens > max_tokens_limit:
        _fail(f"--default-max-tokens {default_max_tokens} > --max-tokens-limit {max_tokens_limit}")
    if allow_dir is not None and not allow_dir.is_dir():
        _fail(f"--allow-dir {allow_dir} is not a directory")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        _fail(f"--device {device}: no CUDA device is available; valid here: auto, cpu")
    elif device != "cpu" and not device.startswith("cuda"):
        _fail(f"--device {device!r}: valid: auto, cpu, cuda, cuda:N")
    net, proc = _load_model(model, tower_path, allow_download, dtype, quantize)
    if quantize not in ("nf4", "int8-bnb"):  # bitsandbytes models are placed on CUDA when loaded
        net = net.to(device)
    settings = ServeSettings(
        model_name=name or model,
        api_key=api_key,
        max_body_bytes=int(max_body_mb * 2**20),
        max_tokens_limit=max_tokens_limit,
        default_max_tokens=default_max_tokens,
        images=ImageLimits(
            max_images=max_images,
            max_pixels=max_pixels,
            max_image_bytes=int(max_image_mb * 2**20),
            allow_dir=allow_dir,
            allow_remote=allow_remote_images,
        ),
    )
    engine = Engine(net, proc, max_batch=max_batch, max_queue=max_queue)
    app = create_app(engine, settings, ui=ui)

    def ready(url: str) -> None:
        page = f", web page at {url}/ui" if ui else ""
        console.print(
            f"Serving {settings.model_name} at {url} (OpenAI API at {url}/v1{page})", highlight=False
        )

    try:
        run(app, host, port, on_ready=ready)
    finally:
        engine.close()
