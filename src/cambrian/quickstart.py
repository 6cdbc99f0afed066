"""`make quickstart`: generate a vision-centric dataset, train a tiny Cambrian that really sees, prove it.

The whole Cambrian pipeline on a machine with no weights, no GPU and no internet, in minutes:

1. render a synthetic CV-Bench-style dataset (``cambrian.data.synthetic``): grounded alignment captions,
   instruction data, and a held-out test split in the CV-Bench item format (Count, Relation, Depth,
   Distance);
2. train a tokenizer on it in-process, build a tiny Cambrian (two tower families, the SVA connector with
   SVA layers inside the LLM, a small Llama), pretrain its towers on dense per-cell targets the renderer
   knows for free ("stage 0") and freeze them; then run the project's own trainer for stage 1
   (alignment on grounded captions) and stage 2 (instruction tuning);
3. evaluate with the project's CV-Bench scorer (legacy answer extraction, official 2D/3D/overall
   formula) and print accuracy per task and type against chance;
4. write a run directory with the resolved configs, loss curves, an accuracy-versus-time curve, a grid
   of test images with the model's answers, metrics JSON, and end with a `cambrian chat` example.

The training budget is given in nominal minutes of this project's 2-core CPU machine and turned into a
fixed number of optimizer steps, so the same seed gives the same numbers on any machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

# Optimizer steps per nominal minute on the reference machine (2 cores), measured with the default
# model and batch below; turns `--minutes` into a deterministic number of steps.
STEPS_PER_MINUTE = {"stage1": 150.0, "stage2": 120.0, "stage0": 600.0}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    seed: int = 0
    minutes: float = 6.0  # nominal training budget (stages 0-2 together)
    train_scenes: int = 3000
    test_items: int = 400
    curve_items: int = 96  # test items evaluated at each point of the accuracy-versus-time curve
    curve_points: int = 6
    batch: int = 16
    stage_split: tuple[float, float, float] = (0.08, 0.32, 0.60)  # share of the budget per stage 0/1/2
    lr: float = 2e-3
    compare: bool = False  # also train a single-tower MLP-projector baseline on the same data and budget
    hidden_size: int = 128
    layers: int = 4
    towers: tuple[str, ...] = ("siglip", "convnext")
    extra: dict[str, Any] = field(default_factory=dict)

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

    grid = {"siglip": 16, "clip": 16, "dinov2": 16, "convnext": 64}  # one token (or 2x2) per 4x4 cell
    towers = [tiny_tower_config(f, token_len=grid[f]) for f in qc.towers]
    for t in towers:
        t.image_size = 64 if t.family == "convnext" else t.image_size
    text = dict(
        model_type="llama", hidden_size=qc.hidden_size, intermediate_size=qc.hidden_size * 3,
        num_hidden_layers=qc.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, vocab_size=vocab_size, tie_word_embeddings=True,
        pad_token_id=2, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    if baseline:
        cfg = tiny_config(
            "llama", connector="mlp2x_gelu", text_config=text, vision_towers=[towers[0].to_dict()],
            num_of_vision_sampler_layers=0, conv_mode="vicuna_v1",
        )  # fmt: skip
    else:
        cfg = tiny_config(
            "llama", text_config=text, vision_towers=[t.to_dict() for t in towers], vision_hidden_size=64,
            connector_depth=2, num_of_vision_sampler_layers=2, start_of_vision_sampler_layers=0,
            stride_of_vision_sampler_layers=2, conv_mode="vicuna_v1",
        )  # fmt: skip
    for key, value in qc.extra.items():
        setattr(cfg, key, value)
    cfg.validate()
    return cfg


def pretrain_towers(model, data_dir: Path, images: list[Path], steps: int, batch: int, seed: int, progress) -> list[float]:
    """Stage 0: train each tower (plus throw-away per-cell heads) to predict the renderer's dense targets.

    Targets per grid cell: object kind (0 = empty), colour and depth bin. Tower tokens are pooled to the
    target grid; the heads are discarded afterwards and the towers frozen.
    """
    import numpy as np
    from PIL import Image

    from cambrian.models.vision.base import ImagePreprocessor
    from cambrian.train.trainer import set_towers_frozen

    targets = np.load(data_dir / "dense_targets.npz")
    keys = sorted(targets.files)
    g = targets[keys[0]].shape[-1]
    n_classes = {k: int(targets[k].max()) + 1 for k in keys}
    towers = list(model.vision_towers)
    heads = torch.nn.ModuleList(
        torch.nn.ModuleDict({k: torch.nn.Linear(t.hidden_size, n_classes[k]) for k in keys}) for t in towers
    )
    preps = [ImagePreprocessor.from_tower_config(t.cfg) for t in towers]
    pixels = [
        torch.stack([p(Image.open(path).convert("RGB")) for path in images]) for p in preps
    ]  # (N, 3, R, R) per tower
    tgt = {k: torch.from_numpy(targets[k][: len(images)]).long() for k in keys}  # (N, G, G)
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
                loss = loss + torch.nn.functional.cross_entropy(head[k](cells).flatten(0, 1), tgt[k][idx].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        progress.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
    set_towers_frozen(model, True)
    for t in towers:
        t.eval()
    return losses


# ---------------------------------------------------------------------------------------- pipeline
def _train_cfg(qc: QuickstartConfig, run: Path, name: str, stage: int, data: Path, model_path: Path, steps: int):
    from cambrian.train.config import resolve_config

    return resolve_config(
        None,
        [
            f"preset=tiny-stage{stage}", f"name={name}", f"output_dir={run}", f"data.path={data}",
            "data.template=vicuna_v1", "data.system=", "data.max_length=400", "data.num_workers=0",
            f"data.group_by_modality_length=false", f"model.path={model_path}", "model.preset=null",
            "model.freeze_llm=false", f"per_device_batch={qc.batch}", "global_batch=null", "grad_accum=1",
            f"max_steps={steps}", "save_every=0", "keep_last=1", f"seed={qc.seed}", "progress=true",
            f"optim.lr={qc.lr}", "optim.connector_lr=null", "optim.sva_lr=null", "optim.warmup_ratio=0.05",
            "optim.base_global_batch=null",
        ],
    )  # fmt: skip


class CurveRecorder:
    """Accuracy on a fixed subset of the test split at a few steps: the accuracy-versus-time curve."""

    def __init__(self, items, image_root: Path, processor, every: int, offset_minutes: float, start: float):
        self.items, self.image_root, self.processor = items, image_root, processor
        self.every, self.offset, self.start = every, offset_minutes, start
        self.eval_seconds = 0.0
        self.points: list[dict[str, Any]] = []

    def __call__(self, step: int, model, record: dict[str, Any]) -> None:
        if step % self.every:
            return
        self.point(step, model)

    def point(self, step: int, model) -> None:
        from cambrian.eval.cvbench import evaluate

        t0 = time.perf_counter()
        train_minutes = (t0 - self.start - self.eval_seconds) / 60 + self.offset
        model.eval()
        _, sc = evaluate(model, self.processor, self.items, self.image_root, batch_size=32, max_new_tokens=4,
                         progress=False)  # fmt: skip
        model.train()
        model.vision_towers.eval()
        self.eval_seconds += time.perf_counter() - t0
        self.points.append({"step": step, "train_minutes": train_minutes, **_headline(sc)})


def _headline(score) -> dict[str, Any]:
    """Flat accuracies in percent from a ``CVBenchScore``: per task, official 2D / 3D / overall."""
    out = {f"acc_{task}": 100 * g.accuracy for task, g in score.by_task.items()}
    out.update({k: 100 * v for k, v in score.official.items()})
    return out
