"""`make quickstart`: generate a vision-centric dataset, train a tiny Cambrian that really sees, prove it.

The whole Cambrian pipeline on a machine with no weights, no GPU and no internet, in minutes:

1. render a synthetic CV-Bench-style dataset (``cambrian.quickstart.dataset``): grounded alignment captions,
   instruction data, and a held-out test split in the CV-Bench item format (Count, Relation, Depth,
   Distance);
2. train a tokenizer on it in-process, build a tiny Cambrian (two tower families, the SVA connector with
   SVA layers inside the LLM, a small Llama), pretrain its towers on dense per-cell targets the renderer
   knows for free ("stage 0") and freeze them; then run the project's own trainer for stage 1
   (alignment on grounded captions) and stage 2 (instruction tuning);
3. evaluate with the project's CV-Bench scorer (legacy answer extraction, official 2D/3D/overall
   formula) and print accuracy per task and type against chance;
4. write a run directory with the resolved configs, loss curves, an accuracy-versus-time curve, a grid
   of test images with the model's answers, metrics JSON, and end with a `cambrian chat` example (the
   tables, figures and example are drawn by ``cambrian.quickstart.report``).

The training budget is given in nominal minutes of this project's 2-core CPU machine and turned into a
fixed number of optimizer steps, so the same seed gives the same numbers on any machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cambrian.quickstart.report import (
    balanced_subset,
    chat_example,
    compare_table,
    headline,
    plot_answers,
    plot_curve,
    plot_losses,
    print_verdict,
)

# Optimizer steps per nominal minute on the reference machine (2 cores, batch 32), measured with the default
# model and data (stage 0 is a little under its share); turns `--minutes` into a deterministic number of steps.
STEPS_PER_MINUTE = {"stage0": 1800.0, "stage1": 220.0, "stage2": 180.0}
TEMPLATE = "vicuna_v1"  # the conversation template of every quickstart model
# Tower families the quickstart can build, with the token grid of each: one token (or 2x2) per 4x4 cell.
TOWER_GRID = {"siglip": 16, "clip": 16, "dinov2": 16, "convnext": 64}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    seed: int = 0
    minutes: float = 10.0  # nominal training budget (stages 0-2 together)
    # Scenes are cheap (12,000 render in ~30 s) and fresh ones generalise: at 3,000 stage 1 memorises its
    # captions before the budget ends.
    train_scenes: int = 12000
    test_items: int = 400
    curve_items: int = 96  # test items evaluated at each point of the accuracy-versus-time curve
    curve_points: int = 6
    # Batch 32 trains 1.2x more samples a second than 16 and learns as much per sample (measured).
    batch: int = 32
    stage_split: tuple[float, float, float] = (0.1, 0.25, 0.65)  # share of the budget per stage 0/1/2
    lr: float = 2.8e-3  # the LLM's
    # The connector and SVA layers learn 10x slower: at the LLM's rate the connector's output collapses in
    # stage 1 (a linear probe on it reads an object's colour at chance after 300 steps, against 95% at 2e-4
    # and 96% for the random initial connector) and the LLM is left with nothing to read.
    connector_lr: float = 2.8e-4
    reasoning: bool = True  # multiple-choice answers state the grounded facts, then "answer: X"
    max_new_tokens: int = 48  # rationales: facts + answer word + option walk + letter (~30 tokens)
    vocab_size: int = 768
    turns_per_row: int = 1  # stage-2 questions about one image packed into one multi-turn row
    compare: bool = False  # also train a single-tower MLP-projector baseline on the same data and budget
    hidden_size: int = 128
    layers: int = 4
    towers: tuple[str, ...] = ("siglip", "convnext")
    # Default system text saved with the processor (used by training, chat and eval alike). None: Vicuna's
    # own; the quickstart's is empty: Vicuna's is 28 of ~95 tokens a sample, and a step is 16% faster
    # without it.
    system: str | None = ""
    extra: dict[str, Any] = field(default_factory=dict)  # model config overrides
    scene: dict[str, Any] = field(default_factory=dict)  # ``SceneConfig`` overrides

    def __post_init__(self) -> None:
        self.validate()  # bad values fail here, before anything runs or is written

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value, what is allowed and what was given."""
        from cambrian.utils.config import ConfigError

        def positive(key: str, value: float) -> None:
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key}: must be a finite number > 0, got {value}")

        positive("minutes (--minutes)", self.minutes)
        positive("lr", self.lr)
        positive("connector_lr", self.connector_lr)
        if self.seed < 0:
            raise ConfigError(f"seed (--seed): must be >= 0, got {self.seed}")
        for key in ("train_scenes", "test_items", "curve_items", "curve_points", "batch", "max_new_tokens",
                    "turns_per_row", "hidden_size", "layers"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % 4:  # the LLM has 4 attention heads
            raise ConfigError(
                f"hidden_size: must be a multiple of 4 (the attention heads), got {self.hidden_size}"
            )
        if not all(math.isfinite(x) and x >= 0 for x in self.stage_split) or sum(self.stage_split) <= 0:
            raise ConfigError(
                f"stage_split: three shares >= 0 (stages 0, 1, 2), got {list(self.stage_split)}"
            )
        if not self.towers or any(t not in TOWER_GRID for t in self.towers):
            raise ConfigError(f"towers: {list(self.towers)} must be one or more of {', '.join(TOWER_GRID)}")
        self.scene_config()  # bad scene keys

    def scene_config(self):
        """The ``SceneConfig`` the data is rendered with: its defaults plus ``scene``."""
        from dataclasses import fields

        from cambrian.quickstart.scenes import SceneConfig
        from cambrian.utils.config import ConfigError

        valid = sorted(f.name for f in fields(SceneConfig))
        unknown = sorted(set(self.scene) - set(valid))
        if unknown:
            raise ConfigError(f"unknown scene key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        return SceneConfig(**self.scene)

    def steps(self, stage: str) -> int:
        share = self.stage_split[("stage0", "stage1", "stage2").index(stage)]
        return max(1, round(self.minutes * share * STEPS_PER_MINUTE[stage]))


# --------------------------------------------------------------------------------------------- model
def model_config(qc: QuickstartConfig, vocab_size: int, baseline: bool = False):
    """The quickstart Cambrian: two tower families -> SVA (+ in-LLM SVA) -> a small Llama.

    ``baseline``: LLaVA-style, the first tower only and the ``mlp2x_gelu`` projector.
    """
    from cambrian.models.presets import tiny_config
    from cambrian.models.vision import tiny_tower_config

    towers = [tiny_tower_config(f, token_len=TOWER_GRID[f]) for f in qc.towers]
    text = dict(
        model_type="llama", hidden_size=qc.hidden_size, intermediate_size=qc.hidden_size * 3,
        num_hidden_layers=qc.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, vocab_size=vocab_size, tie_word_embeddings=True,
        pad_token_id=2, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    if baseline:
        cfg = tiny_config(
            "llama", connector="mlp2x_gelu", text_config=text, vision_towers=[towers[0].to_dict()],
            num_of_vision_sampler_layers=0, conv_mode=TEMPLATE,
        )  # fmt: skip
    else:
        cfg = tiny_config(
            "llama", text_config=text, vision_towers=[t.to_dict() for t in towers], vision_hidden_size=64,
            connector_depth=2, num_of_vision_sampler_layers=2, start_of_vision_sampler_layers=0,
            stride_of_vision_sampler_layers=2, conv_mode=TEMPLATE,
        )  # fmt: skip
    for key, value in qc.extra.items():
        setattr(cfg, key, value)
    cfg.validate()
    return cfg


def pretrain_towers(model, data_dir: Path, steps: int, batch: int, seed: int, progress) -> list[float]:
    """Stage 0: train each tower (plus throw-away per-cell heads) to predict the renderer's dense targets.

    Targets per grid cell: object kind (0 = empty), colour, depth bin, and the cell's row and column. Tower
    tokens are pooled to the target grid; the heads are discarded afterwards and the towers frozen.
    """
    import numpy as np
    from PIL import Image

    from cambrian.models.vision.base import ImagePreprocessor
    from cambrian.train.trainer import set_towers_frozen

    targets = dict(np.load(data_dir / "dense_targets.npz"))
    g = targets["kind"].shape[-1]
    # Where each cell is: real pretrained towers carry position in their features (ViT position
    # embeddings); ours learn it here, so the LLM can read "which column" off the token it attends to.
    rows, cols = np.indices((g, g))
    targets["row"] = np.broadcast_to(rows, targets["kind"].shape).copy()
    targets["col"] = np.broadcast_to(cols, targets["kind"].shape).copy()
    keys = ("kind", "colour", "depth", "row", "col")
    n_classes = {k: int(targets[k].max()) + 1 for k in keys}
    towers = list(model.vision_towers)
    heads = torch.nn.ModuleList(
        torch.nn.ModuleDict({k: torch.nn.Linear(t.hidden_size, n_classes[k]) for k in keys}) for t in towers
    )
    preps = [ImagePreprocessor.from_tower_config(t.cfg) for t in towers]
    images = [Image.open(data_dir / str(name)).convert("RGB") for name in targets["image"]]
    pixels = [torch.stack([p(im) for im in images]) for p in preps]  # (N, 3, R, R) per tower
    tgt = {k: torch.from_numpy(targets[k]).long() for k in keys}  # (N, G, G)
    set_towers_frozen(model, False)
    params = [p for t in towers for p in t.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for t in towers:
        t.train()
    task = progress.add_task("stage 0: towers", total=steps, info="")
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        loss = 0.0
        for tower, head, px in zip(towers, heads, pixels):
            feats = tower(px[idx])  # (B, N, C)
            side = math.isqrt(feats.shape[1])
            grid = feats.transpose(1, 2).reshape(batch, -1, side, side)
            cells = torch.nn.functional.adaptive_avg_pool2d(grid, g).flatten(2).transpose(1, 2)  # (B, G*G, C)
            for k in keys:
                loss = loss + torch.nn.functional.cross_entropy(
                    head[k](cells).flatten(0, 1), tgt[k][idx].flatten()
                )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
    set_towers_frozen(model, True)
    for t in towers:
        t.eval()
    return losses


# ---------------------------------------------------------------------------------------- pipeline
def _train_cfg(
    qc: QuickstartConfig, run: Path, name: str, stage: int, data: Path, model_path: Path, steps: int
):
    from cambrian.train.config import resolve_config

    return resolve_config(
        None,
        [
            f"preset=tiny-stage{stage}", f"name={name}", f"output_dir={run}", f"data.path={data}",
            f"data.template={TEMPLATE}", "data.max_length=400", "data.num_workers=0",
            "data.group_by_modality_length=false", f"model.path={model_path}", "model.preset=null",
            "model.freeze_llm=false", f"per_device_batch={qc.batch}", "global_batch=null", "grad_accum=1",
            f"max_steps={steps}", "save_every=0", "keep_last=1", f"seed={qc.seed}", "progress=true",
            f"optim.lr={qc.lr}", f"optim.connector_lr={qc.connector_lr}", f"optim.sva_lr={qc.connector_lr}",
            "optim.warmup_ratio=0.05",
            "optim.base_global_batch=null",
        ],
    )  # fmt: skip


class CurveRecorder:
    """Accuracy on a fixed subset of the test split at a few steps: the accuracy-versus-time curve."""

    def __init__(self, items, image_root: Path, processor, max_new_tokens: int, start: float):
        self.items, self.image_root, self.processor = items, image_root, processor
        self.max_new_tokens = max_new_tokens
        self.start = start
        self.eval_seconds = 0.0
        self.points: list[dict[str, Any]] = []

    def point(self, step: int, model) -> None:
        from cambrian.eval.cvbench import evaluate

        t0 = time.perf_counter()
        train_minutes = (t0 - self.start - self.eval_seconds) / 60
        model.eval()
        _, sc = evaluate(model, self.processor, self.items, self.image_root, batch_size=32, max_new_tokens=self.max_new_tokens,
                         progress=False)  # fmt: skip
        model.train()
        model.vision_towers.eval()
        self.eval_seconds += time.perf_counter() - t0
        self.points.append({"step": step, "train_minutes": train_minutes, **headline(sc)})


def pack_turns(src: Path, dst: Path, turns: int) -> int:
    """Rows about the same image merged into multi-turn conversations of up to ``turns`` questions.

    One image encoding then supervises several answers (the image placeholder stays in the first
    turn only); returns the number of rows written.
    """
    by_image: dict[str, list[dict[str, Any]]] = {}
    for line in src.read_text().splitlines():
        row = json.loads(line)
        by_image.setdefault(row["image"], []).append(row)
    out = []
    for image, rows in by_image.items():
        for k in range(0, len(rows), turns):
            group = rows[k : k + turns]
            conv = []
            for j, r in enumerate(group):
                human, gpt = r["conversations"]
                value = human["value"] if j == 0 else human["value"].replace("<image>\n", "", 1)
                conv += [dict(human, value=value), gpt]
            out.append({"id": f"{group[0]['id']}-x{len(group)}", "image": image, "conversations": conv})
    dst.write_text("".join(json.dumps(r) + "\n" for r in out))
    return len(out)


def _progress(console: Console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), console=console,
    )  # fmt: skip


def _train_variant(
    qc, name, baseline, out, data_dir, tokenizer, items, curve_items, console
) -> dict[str, Any]:
    from cambrian import CambrianForCausalLM, CambrianProcessor
    from cambrian.eval.cvbench import evaluate
    from cambrian.train.trainer import train

    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    config = model_config(qc, len(tokenizer), baseline)
    processor = CambrianProcessor.from_config(config, tokenizer)
    processor.system = qc.system  # None: the template's own
    torch.manual_seed(qc.seed)
    model = CambrianForCausalLM(config)
    towers = ", ".join(t.family for t in config.tower_configs)
    console.rule(f"[bold]{name}[/bold]: towers {towers}; connector {config.mm_projector_type}; "
                 f"in-LLM SVA after layers {config.sva_layer_indices or 'none'}")  # fmt: skip
    start = time.perf_counter()
    curve = CurveRecorder(curve_items, data_dir, processor, qc.max_new_tokens, start=start)
    timings = {}

    # stage 0: towers learn the renderer's dense per-cell targets, then are frozen
    t0 = time.perf_counter()
    with _progress(console) as progress:
        s0 = pretrain_towers(model, data_dir, qc.steps("stage0"), 32, qc.seed, progress)
    timings["stage0"] = time.perf_counter() - t0
    console.print(f"stage 0: towers ({towers}) trained on per-cell kind/colour/depth/row/column targets for "
                  f"{len(s0)} steps (loss {s0[0]:.2f} -> {s0[-1]:.2f}), then frozen")  # fmt: skip
    model.save_pretrained(run / "init")
    processor.save_pretrained(run / "init")

    # stages 1 and 2 with the project's trainer; the curve is sampled at a few steps of each
    n1, n2 = qc.steps("stage1"), qc.steps("stage2")
    points = max(2, qc.curve_points)
    marks = {round(n1 * (k + 1) / max(1, points // 3)) for k in range(max(1, points // 3))}
    marks2 = {round(n2 * (k + 1) / (points - len(marks))) for k in range(points - len(marks))}
    curve.point(0, model)
    results = {}
    model_path = run / "init"
    stage2 = "stage2.jsonl" if qc.turns_per_row <= 1 else "stage2_multiturn.jsonl"
    for stage, data, steps, at in ((1, "stage1.jsonl", n1, marks), (2, stage2, n2, marks2)):
        t0 = time.perf_counter()
        cfg = _train_cfg(qc, run, f"stage{stage}", stage, data_dir / data, model_path, steps)

        def on_step(step, m, record, at=at, stage=stage):
            if step in at:
                curve.point(step if stage == 1 else n1 + step, m)

        r = train(cfg, callbacks=[on_step], overwrite=True)  # a rerun into the same --out redoes everything
        timings[f"stage{stage}"] = time.perf_counter() - t0
        results[f"stage{stage}"] = {"steps": steps, "first_loss": r.losses[0], "last_loss": r.losses[-1]}
        model_path = r.final_dir

    # final evaluation on the whole test split
    t0 = time.perf_counter()
    model = CambrianForCausalLM.from_pretrained(model_path).eval()
    processor = CambrianProcessor.from_pretrained(model_path)
    preds, score = evaluate(model, processor, items, data_dir, batch_size=32, max_new_tokens=qc.max_new_tokens,
                            predictions_path=run / "predictions.jsonl")  # fmt: skip
    timings["eval"] = time.perf_counter() - t0
    return {
        "run_dir": str(run), "final_dir": str(model_path), "score": score, "predictions": preds,
        "curve": curve.points, "timings": timings, "stages": results, "stage0_loss": [s0[0], s0[-1]],
        "model": model, "processor": processor,
    }  # fmt: skip


def run_quickstart(qc: QuickstartConfig, console: Console | None = None) -> dict[str, Any]:
    """The whole quickstart; returns the final metrics (also written to ``out/metrics.json``)."""
    import resource

    from transformers.utils import logging as hf_logging

    from cambrian.eval.cvbench import load_items, table
    from cambrian.models.conversation import TEMPLATES
    from cambrian.quickstart.dataset import corpus, generate
    from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer
    from cambrian.utils.config import save_yaml

    hf_logging.disable_progress_bar()  # our own bars say what is happening
    console = console or Console()
    t_start = time.perf_counter()
    out = Path(qc.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(qc, out / "quickstart.yaml")

    t0 = time.perf_counter()
    data_dir = out / "data"
    gen = generate(data_dir, qc.train_scenes, qc.test_items, seed=qc.seed, reasoning=qc.reasoning,
                   cfg=qc.scene_config())  # fmt: skip
    console.print(f"[bold]data[/bold]: {gen.n_train_scenes} training scenes ({gen.n_stage1} captions, "
                  f"{gen.n_stage2} instructions), {gen.n_test_items} test items in {time.perf_counter() - t0:.1f}s")  # fmt: skip
    if qc.turns_per_row > 1:
        pack_turns(gen.stage2, data_dir / "stage2_multiturn.jsonl", qc.turns_per_row)
    items = load_items(gen.test)
    curve_items = balanced_subset(items, qc.curve_items)
    # Every word of the data, of the template's frame and of the system prompt becomes one token: object
    # names and position words are single tokens, which the binding between words and image cells needs,
    # and " USER:" / " ASSISTANT:" are two tokens a turn, not 13 bytes (each text is counted with one frame,
    # so the frame is as frequent as the turns that carry it).
    tpl = TEMPLATES.get(TEMPLATE)
    system = tpl.system if qc.system is None else qc.system
    frame = "".join(f" {role}:" for role in tpl.roles)
    texts = [system, *(text + frame for text in corpus(data_dir))]
    tokenizer = build_tiny_tokenizer(vocab_size=qc.vocab_size, corpus=texts)

    variants = [("cambrian", False)] + ([("baseline-mlp", True)] if qc.compare else [])
    runs = {name: _train_variant(qc, name, b, out, data_dir, tokenizer, items, curve_items, console)
            for name, b in variants}  # fmt: skip
    metrics: dict[str, Any] = {"budget_minutes": qc.minutes, "seed": qc.seed}
    for name, r in runs.items():
        console.print(table(r["score"], title=f"{name}: held-out CV-Bench-style test ({len(items)} items)"))
        metrics[name] = {
            "score": r["score"].to_dict(), "headline": headline(r["score"]), "curve": r["curve"],
            "timings_s": r["timings"], "stages": r["stages"],
        }  # fmt: skip
    first = runs["cambrian"]["score"]
    chance = {t: g.chance for t, g in first.by_task.items()}
    chance["_overall"] = first.official_chance["CV-Bench"]
    figures = {
        "losses": plot_losses(runs, out / "loss_curves.png"),
        "accuracy_vs_time": plot_curve(runs, chance, out / "accuracy_vs_time.png"),
        "answers": plot_answers(items, runs["cambrian"]["predictions"], data_dir, out / "test_answers.png"),
    }
    (out / "accuracy_vs_time.json").write_text(json.dumps({n: r["curve"] for n, r in runs.items()}, indent=1))
    if len(runs) > 1:
        console.print(compare_table(runs))
    print_verdict(console, first)
    metrics["total_seconds"] = time.perf_counter() - t_start
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics["figures"] = {k: str(v) for k, v in figures.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    console.print(f"run directory {out}: metrics.json, loss_curves.png, accuracy_vs_time.png/.json, "
                  f"test_answers.png, */stage*/config.yaml; {metrics['total_seconds'] / 60:.1f} min, "
                  f"peak memory {metrics['peak_rss_mb']:,.0f} MB")  # fmt: skip
    chat_example(console, runs["cambrian"], items[0], data_dir)
    return {"metrics": metrics, "runs": runs, "items": items, "data_dir": data_dir}


__all__ = ["QuickstartConfig", "model_config", "pretrain_towers", "run_quickstart"]
