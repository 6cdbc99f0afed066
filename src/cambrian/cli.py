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
    """List the named model presets with their sizes (counted on the meta device, no memory used); `chat`,
    `serve` and `eval run` build one with random weights only when given `--random`."""
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


def _load_model(
    model: str,
    tower_path: list[str] | None,
    allow_download: bool,
    dtype: str | None = None,
    quantize: str | None = None,
    random: bool = False,
):
    """(model, processor) from a model directory (ours or released), or a preset id with ``random``
    (random weights); ``quantize``: a ``cambrian.models.quantize`` mode for the LLM's linears. Anything
    that does not load is one ``error:`` line and exit 2."""
    from cambrian.models.loading import CLI_HINTS, load_model, tower_names

    paths = {}
    for entry in tower_path or []:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            _fail(
                f"--tower-path {entry!r} is not of the form NAME=DIR; tower names: {', '.join(tower_names(model))}"
            )
        paths[name] = path
    try:
        return load_model(model, paths, allow_download, dtype, quantize, random_ok=random, hints=CLI_HINTS)
    except ValueError as e:  # ModelLoadError, and bad dtype / quantize values
        _fail(str(e))


@app.command()
def quickstart(
    overrides: list[str] = typer.Argument(
        None, help="QuickstartConfig key=value overrides, e.g. train_scenes=3000 batch=16 scene.max_objects=4"
    ),
    minutes: float = typer.Option(
        None, help="training budget in nominal minutes of a 2-core CPU (fixed steps; default 10)"
    ),
    compare: bool = typer.Option(False, "--compare", help="also train a single-tower MLP-projector baseline"),
    seed: int = typer.Option(None, help="data, initialisation and order seed (default 0)"),
    out: Path = typer.Option(None, help="run directory (default runs/quickstart)"),
) -> None:
    """Generate a CV-Bench-style dataset, train a tiny Cambrian through stages 0-2, evaluate it, show it."""
    from cambrian.quickstart import QuickstartConfig, run_quickstart
    from cambrian.utils.config import from_dict, with_overrides

    options = {
        "minutes": minutes,
        "seed": seed,
        "out": None if out is None else str(out),
        "compare": compare or None,
    }
    try:  # ConfigError (bad key, value or override syntax) is a ValueError, and so is a bad SceneConfig
        data = with_overrides({}, None, overrides)
        qc = from_dict(QuickstartConfig, {**data, **{k: v for k, v in options.items() if v is not None}})
    except ValueError as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    run_quickstart(qc, console)


@app.command()
def demo(seed: int = 0) -> None:
    """Build the tiny preset (random weights), run one image + question through it, show the token flow."""
    from cambrian.quickstart.demo import run_demo

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
        None, "--images", help="image root directory (default: the data file's directory)"
    ),
    check_images: bool = typer.Option(
        True, "--check-images/--no-check-images", help="open every image with PIL"
    ),
    limit: int = typer.Option(50, help="most bad rows printed"),
    json_out: Path = typer.Option(None, "--json", help="write the full report (every bad row) as JSON here"),
    workers: int = typer.Option(4, help="threads checking rows (image reads release the GIL)"),
    decode: bool = typer.Option(
        True,
        "--decode/--no-decode",
        help="decode every image fully, as training does (default); --no-decode only reads headers/checksums",
    ),
) -> None:
    """Check every row (JSON, fields, turn order, <image> placeholders vs images, image files and modes) with
    the check training uses, so a row that passes trains; exit 1 if any is bad."""
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
            file,
            images,
            check_images=check_images,
            max_report=None if json_out else limit,
            workers=workers,
            decode=decode,
        )
    except IndexFormatError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    report.print(console, limit=limit)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
        console.print(f"full report written to {json_out}", markup=False)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("engine")
def data_engine(
    config: Path = typer.Argument(
        ..., help="engine config YAML/JSON: `fields` (field -> subfields) + options"
    ),
    overrides: list[str] = typer.Argument(
        None, help="key.sub=value overrides, e.g. topics_per_subfield=5 llm.rps=2 wiki.concurrency=1"
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="output directory: engine.jsonl, images/, stats.json, cache/"
    ),
    llm_url: str = typer.Option(
        None, help="OpenAI-compatible base URL (env: CAMBRIAN_ENGINE_LLM_URL, else OPENAI_BASE_URL)"
    ),
    llm_model: str = typer.Option(None, help="model name (env: CAMBRIAN_ENGINE_LLM_MODEL)"),
    wiki_url: str = typer.Option(None, help="MediaWiki api.php URL (default: English Wikipedia)"),
    wiki_dump: Path = typer.Option(
        None, help="local dump directory (pages.jsonl + images/) instead of the API"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar per stage"),
) -> None:
    """Internet Data Engine: fields -> LLM topics -> wiki pages -> figures -> LLM Q&A -> VQA rows (resumable)."""
    from cambrian.curation.engine import EngineAbort, OutputOverlapError, resolve_config, run_engine
    from cambrian.utils.config import ConfigError

    err = Console(stderr=True, soft_wrap=True)
    try:
        cfg = resolve_config(
            config,
            overrides or [],
            llm_url=llm_url,
            llm_model=llm_model,
            wiki_url=wiki_url,
            wiki_dump=wiki_dump,
        )
    except ConfigError as e:
        err.print(f"config error: {e}", markup=False)
        raise typer.Exit(2) from None
    try:
        result = run_engine(cfg, out, console=err, progress=progress, config_path=config)
    except OutputOverlapError as e:
        _fail(str(e))
    except EngineAbort as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(1) from None
    st = result.stats["stages"]
    skipped = st["topics"]["malformed_skipped"] + st["qa"]["malformed_skipped"]
    console.print(
        f"{result.rows:,} rows -> {out / 'engine.jsonl'} ({st['images']['kept']:,} images from "
        f"{st['pages']['pages']:,} pages on {st['topics']['topics']:,} topics; {skipped:,} malformed LLM "
        f"answers skipped); stats: {out / 'stats.json'}",
        markup=False,
        soft_wrap=True,
    )
    if not result.complete:
        for line in result.failures[:10]:
            err.print(f"failed: {line}", markup=False)
        err.print(
            f"{len(result.failures)} units failed after retries; rerun the same command to retry them",
            markup=False,
        )
        raise typer.Exit(1)


@data_app.command("curate")
def data_curate(
    config: Path = typer.Argument(
        None,
        help="curation map YAML/JSON: sources (category, files), inputs, cap, ratios, budget, ... (optional: "
        "`--input X --out Y ratios=null` needs none)",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. cap=100000 budget=7000000"),
    out: Path = typer.Option(..., "--out", "-o", help="curated JSONL to write"),
    inputs: list[Path] = typer.Option(
        None, "--input", "-i", help="data file whose rows carry `source` (and `category`); repeatable"
    ),
    images: Path = typer.Option(None, "--images", help="image root: drop rows whose images are missing"),
    report: Path = typer.Option(None, "--report", help="report directory (default: OUT.report/)"),
    work: Path = typer.Option(None, "--work", help="scan cache for resuming (default: OUT.work/)"),
    seed: int = typer.Option(None, help="sampling and order seed (default: the config's, 0)"),
) -> None:
    """Curate a mixture: per-source cap, category ratios, dedup, short-answer system prompt; JSONL + report."""
    from cambrian.curation.curate import CurateConfig, curate
    from cambrian.curation.outputs import OutputOverlapError
    from cambrian.data.index import IndexFormatError
    from cambrian.utils.config import ConfigError, from_dict, with_overrides

    err = Console(stderr=True, soft_wrap=True)
    overrides = list(overrides or [])
    # Without a config file the first key=value lands in `config`: an argument with "=" that is not a file
    # is an override.
    if config is not None and "=" in str(config) and not config.is_file():
        overrides.insert(0, str(config))
        config = None
    try:
        cfg = from_dict(CurateConfig, with_overrides({}, config, overrides))
        base = config.parent if config is not None else Path(".")
        cfg.inputs = [*cfg.inputs, *(str(p.resolve()) for p in inputs or [])]
        if images is not None:
            cfg.images = str(images.resolve())
        if seed is not None:
            cfg.seed = seed
        result = curate(cfg, out, report, work, base=base, console=console)
    except (ConfigError, OutputOverlapError, IndexFormatError) as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    table = Table("step", "rows in", "rows out", "what", title=f"{result.out}: {result.rows:,} rows")
    for s in result.steps:
        table.add_row(s.name, f"{s.rows_in:,}", f"{s.rows_out:,}", s.detail)
    console.print(table)
    bad = result.report["bad_examples"]
    for line in bad[:10]:
        err.print(line, markup=False)
    if result.report["bad_rows"]:
        err.print(f"{result.report['bad_rows']:,} bad rows skipped (all in {result.report_dir}/bad_rows.jsonl)",
                  markup=False)  # fmt: skip
    console.print(f"report: {result.report_dir}/report.md (+ report.json, sources.png, categories.png, "
                  "answer_lengths.png)", markup=False)  # fmt: skip


eval_app = typer.Typer(
    help="Benchmarks: generate and score (`run`), rescore answer files (`score`), tabulate (`report`).",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


def _fail(message: str, code: int = 2):
    Console(stderr=True, soft_wrap=True).print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def _rules_option() -> str:
    return typer.Option(
        "legacy", "--rules", help="legacy (the original scorers, quirks included) | recommended"
    )


@eval_app.command("run")
def eval_run(
    model: str = typer.Argument(
        ..., help="model directory (ours or the released layout); a preset id with --random"
    ),
    benchmarks: str = typer.Option(
        ..., "--benchmarks", "-b", help="comma-separated ids, 'paper' (the 16 of Table 4) or 'all'"
    ),
    data: Path = typer.Option(
        ..., "--data", help="ROOT: ROOT/<bench>/ holds each benchmark's local snapshot"
    ),
    out: Path = typer.Option(None, "--out", "-o", help="output directory (default runs/eval/<model name>)"),
    batch_size: int = typer.Option(8, "--batch-size", help="items generated together (left padding)"),
    limit: int = typer.Option(None, "--limit", help="only the first N items of each benchmark"),
    rules: str = _rules_option(),
    split: list[str] = typer.Option(
        None, "--split", help="BENCH=SPLIT, e.g. docvqa=test (default: each one's)"
    ),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="override every benchmark's default"),
    overwrite: bool = typer.Option(False, "--overwrite", help="discard predictions made with other settings"),
    dtype: str = typer.Option(None, "--dtype", help="bfloat16 | float16 | float32 (default: as saved)"),
    tower_path: list[str] = typer.Option(None, help="NAME=DIR: local weights for a released tower name"),
    allow_download: bool = typer.Option(False, help="allow hub downloads (model id or tower weights)"),
    random: bool = typer.Option(False, "--random", help="MODEL is a preset id: build it with random weights"),
) -> None:
    """Generate answers for benchmarks and score them; resumable; `torchrun -m cambrian.cli eval run` shards."""
    from cambrian.eval.benchmark import RULES, ScoreError, resolve_names
    from cambrian.eval.data import DatasetFormatError
    from cambrian.eval.runner import RunMismatchError, evaluate
    from cambrian.registry import UnknownIdError
    from cambrian.train.distributed import init_distributed, shutdown_distributed

    if rules not in RULES:
        _fail(f"--rules {rules!r} is not one of {', '.join(RULES)}")
    if max_new_tokens is not None and max_new_tokens < 1:
        _fail(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    splits = {}
    for entry in split or []:
        if "=" not in entry:
            _fail(f"--split {entry!r} is not of the form BENCH=SPLIT")
        bench, value = entry.split("=", 1)
        splits[bench] = value
    try:
        names = resolve_names(benchmarks)
    except (UnknownIdError, ValueError) as e:
        _fail(str(e))
    ctx = init_distributed()
    try:
        net, proc = _load_model(model, tower_path, allow_download, dtype, random=random)
        net = net.to(ctx.device)
        out_dir = out or Path("runs/eval") / Path(model.rstrip("/")).name
        summary = evaluate(
            net, proc, names, data, out_dir, model_id=Path(model.rstrip("/")).name, rules=rules,
            batch_size=batch_size, limit=limit, splits=splits, max_new_tokens=max_new_tokens,
            overwrite=overwrite, ctx=ctx,
        )  # fmt: skip
    except (DatasetFormatError, ScoreError, RunMismatchError, UnknownIdError, ValueError) as e:
        _fail(str(e))
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        table = Table("benchmark", "split", "items", "headline", "n", "generated", "seconds",
                      title=f"{out_dir} ({rules} rules)")  # fmt: skip
        for name, res in summary["benchmarks"].items():
            if name in names:
                head = "-" if res["headline"] is None else f"{res['headline']:.2f} ({res['headline_name']})"
                table.add_row(name, res["split"], f"{res['items']:,}", head, str(res["n"]), f"{res['generated']:,}",
                              f"{res['seconds']:.1f}")  # fmt: skip
        console.print(table)
        console.print(f"predictions and scores under {out_dir}/<bench>/; summary: {out_dir / 'summary.json'}")


@eval_app.command("score")
def eval_score(
    bench: str = typer.Argument(..., help="benchmark id (the original's eval directory name, or cvbench)"),
    file: Path = typer.Argument(
        ..., help="answers JSONL: ours (predictions.jsonl) or the original release's"
    ),
    rules: str = _rules_option(),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON object on stdout"),
) -> None:
    """Score an answers file; the original release's `<bench>_eval.py` output is detected and scored as its
    `<bench>_test.py` would (headline as `tabulate.py` reports it)."""
    import json

    from cambrian.eval.answers import score_file
    from cambrian.eval.benchmark import RULES, ScoreError
    from cambrian.eval.benchmarks import BENCHMARKS
    from cambrian.registry import UnknownIdError

    if rules not in RULES:
        _fail(f"--rules {rules!r} is not one of {', '.join(RULES)}")
    try:
        result = score_file(BENCHMARKS.get(bench), file, rules)
    except (UnknownIdError, ScoreError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    table = Table("score", "value", title=f"{bench} ({result['format']} answers file, {rules} rules)")
    for key, value in result.items():
        if key in ("benchmark", "rules", "format"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else json.dumps(value, ensure_ascii=False)
        table.add_row(key, shown if len(shown) < 200 else shown[:197] + "...")
    console.print(table)


@eval_app.command("report")
def eval_report(
    runs: list[Path] = typer.Argument(..., help="run directories written by `cambrian eval run`"),
    published: list[str] = typer.Option(
        None,
        "--published",
        help="published Table 4 rows to add: gpt-4v, cambrian-8b, cambrian-13b, cambrian-34b",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="where report.md/.json/.png go (default: the first run)"
    ),
) -> None:
    """The paper's Table 4 (category averages with MME-P/20, overall) for runs, beside published rows."""
    from cambrian.eval.report import ReportError, build_report, markdown

    try:
        rows = build_report(runs, published or [], out or runs[0])
    except ReportError as e:
        _fail(str(e))
    console.print(markdown(rows), markup=False, soft_wrap=True)
    console.print(f"written: {(out or runs[0]) / 'report.md'} (+ report.json, report.png)", markup=False)


@app.command(context_settings={"allow_extra_args": False})
def train(
    config: Path = typer.Argument(
        None, help="training config YAML (may name a `preset:`); optional with preset=..."
    ),
    overrides: list[str] = typer.Argument(
        None, help="key.sub=value overrides, e.g. optim.lr=2e-5 data.path=d.jsonl"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest complete checkpoint"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="delete the run already in the run directory (checkpoints, metrics) first"
    ),
    list_presets: bool = typer.Option(False, "--presets", help="list the training presets and exit"),
) -> None:
    """Train either Cambrian stage: `cambrian train [CONFIG.yaml] [key=value ...]`; torchrun for several
    processes. A run directory holding a run is refused unless --resume or --overwrite is given."""
    from cambrian.data.index import IndexFormatError
    from cambrian.registry import UnknownIdError
    from cambrian.train.config import TRAIN_PRESETS, resolve_config
    from cambrian.train.trainer import TrainingStopped
    from cambrian.train.trainer import train as run_training
    from cambrian.utils.config import ConfigError

    if list_presets:
        for name in TRAIN_PRESETS.names():
            console.print(name)
        return
    args = list(overrides or [])
    # `cambrian train key=value ...` has no config file: a first argument with "=" that is not a file is an
    # override (data.path=d.jsonl has a suffix, so the suffix cannot tell).
    if config is not None and "=" in str(config) and not config.is_file():
        args.insert(0, str(config))
        config = None
    try:
        cfg = resolve_config(config, args)
    except (ConfigError, UnknownIdError) as e:
        _fail(str(e))
    try:
        run_training(cfg, resume=resume, overwrite=overwrite)
    except (ConfigError, IndexFormatError) as e:  # bad input found before or while setting the run up
        _fail(str(e))
    except TrainingStopped as e:
        _fail(f"training stopped: {e}", code=1)


# `cambrian chat` and `cambrian serve`: their options fill a screen, so they live with the serving code.
from cambrian.serve.command import chat_command, serve_command  # noqa: E402

app.command("chat")(chat_command)
app.command("serve")(serve_command)


if __name__ == "__main__":
    app()
