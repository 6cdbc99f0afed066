"""``cambrian chat`` and ``cambrian serve``: the command-line faces of ``cambrian.serve`` (registered in
``cambrian.cli``). Every bad option, image or model is one ``error: ...`` line on stderr and exit 2, checked
before the (slow) model load where it can be."""

from __future__ import annotations

from pathlib import Path

import typer

from cambrian.models.loading import DTYPES


def chat_command(
    model: str = typer.Argument(
        ..., help="model directory (ours or the released layout); a preset id with --random"
    ),
    image: list[Path] = typer.Option(
        None, "--image", "-i", help="image file for the first message (repeatable); later: /image PATH"
    ),
    prompt: str = typer.Option(
        None, "--prompt", "-p", help="one message, print the answer and exit; omit for an interactive chat"
    ),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="most tokens per answer (>= 1)"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy; > 0 samples at this value"),
    as_json: bool = typer.Option(
        False, "--json", help="with -p: print one JSON object (prompt, images, reply, settings, tokens)"
    ),
    quantize: str = typer.Option(
        None, help="int8 (CPU/GPU), nf4 or int8-bnb (CUDA): weight-only LLM linears"
    ),
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads (model id or tower weights)"),
    random: bool = typer.Option(False, "--random", help="MODEL is a preset id: build it with random weights"),
) -> None:
    """Talk to a model about images, answers streamed: `cambrian chat RUN/final -i photo.png -p "What is left?"`;
    without -p an interactive chat with /image, /reset, /save, /help, /quit."""
    import json
    import sys

    from cambrian.cli import _fail, _load_model
    from cambrian.serve.chat import ChatError, ChatSession, ImageError, check_settings, load_image, repl

    def write(text: str) -> None:  # plain text, flushed: pieces show as they are generated
        sys.stdout.write(text)
        sys.stdout.flush()

    def write_error(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    if as_json and prompt is None:
        _fail("--json needs --prompt/-p (one message, one JSON answer)")
    try:  # settings and images are checked before the (slow) model load
        check_settings(max_new_tokens, temperature)
        images = [load_image(p) for p in image or []]
    except (ChatError, ImageError) as e:
        _fail(str(e))
    net, proc = _load_model(model, tower_path, allow_download, quantize=quantize, random=random)
    session = ChatSession(net, proc, model, max_new_tokens, temperature, images)
    if prompt is not None:
        try:
            pieces = session.ask(prompt)
        except ChatError as e:
            _fail(str(e))
        if as_json:
            "".join(pieces)  # run the answer to its end; session.result() holds it
            write(json.dumps(session.result(), ensure_ascii=False) + "\n")
        else:
            for piece in pieces:
                write(piece)
            write("\n")
        return
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    repl(session, input, write, write_error)


def serve_command(
    model: str = typer.Argument(
        ..., help="model directory (ours or the released layout); a preset id with --random"
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, help="port (0: any free port; the printed URL says which)"),
    max_batch: int = typer.Option(8, help="most requests run together in one batched generate"),
    max_queue: int = typer.Option(64, help="most requests waiting; beyond it: 503 + Retry-After"),
    api_key: str = typer.Option(None, envvar="CAMBRIAN_API_KEY", help="require Authorization: Bearer KEY"),
    allow_dir: Path = typer.Option(None, help="serve file:// image URLs from under this directory only"),
    allow_remote_images: bool = typer.Option(False, help="fetch http(s) image URLs (off: data URLs only)"),
    ui: bool = typer.Option(False, help="also serve the web chat page at /ui"),
    name: str = typer.Option(None, help="model id reported by /v1/models (default: the MODEL argument)"),
    max_tokens_limit: int = typer.Option(2048, help="largest max_tokens a request may ask for"),
    default_max_tokens: int = typer.Option(512, help="max_tokens when a request gives none"),
    max_body_mb: float = typer.Option(32.0, help="largest request body (MB)"),
    max_images: int = typer.Option(8, help="most images in one request"),
    max_pixels: int = typer.Option(25_000_000, help="most pixels in one image (decompression bombs)"),
    max_image_mb: float = typer.Option(20.0, help="largest encoded image (MB)"),
    dtype: str = typer.Option(None, help=f"load the weights in {'|'.join(DTYPES)} (default: as saved)"),
    quantize: str = typer.Option(
        None, help="int8 (CPU/GPU), nf4 or int8-bnb (CUDA): weight-only LLM linears"
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N"),
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads (model id or tower weights)"),
    random: bool = typer.Option(False, "--random", help="MODEL is a preset id: build it with random weights"),
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

    for option, value, low in (
        ("--max-batch", max_batch, 1),
        ("--max-queue", max_queue, 1),
        ("--max-tokens-limit", max_tokens_limit, 1),
        ("--default-max-tokens", default_max_tokens, 1),
        ("--max-body-mb", max_body_mb, 0.001),
        ("--max-images", max_images, 0),
        ("--max-pixels", max_pixels, 1),
        ("--max-image-mb", max_image_mb, 0.001),
    ):  # checked here: one error line each, not Typer's boxed usage error
        if not value >= low:  # NaN too
            _fail(f"{option} must be >= {low}, got {value}")
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
    net, proc = _load_model(model, tower_path, allow_download, dtype, quantize, random=random)
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
