"""The trainer: one loop for both Cambrian stages, on one CPU or many GPUs (DDP / FSDP2 via torchrun).

The loss of an optimizer step is the mean over every supervised token of the whole global batch,
whatever the number of processes or accumulation steps: each micro-batch contributes its token
loss *sum* divided by the global token count (one all-reduce of a few counters per step). That makes
1-process and N-process runs of the same global batch give the same losses and updates, and the
loss independent of how samples are split into micro-batches.

Every trainable parameter takes part in every step: on a text-only micro-batch of a multi-process
run a zero-image row with no labels is appended (DDP and FSDP2 need every process to run the same
modules); in a single process, parameters that got no gradient get a zero one, which is what the
all-reduce gives in the distributed case (AdamW then treats both runs alike).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambrian.data.dataset import Collator, SupervisedDataset, model_inputs
from cambrian.data.index import RowIndex
from cambrian.train.checkpoint import latest_checkpoint, load_checkpoint, remove_incomplete, save_checkpoint
from cambrian.train.config import TrainConfig
from cambrian.train.distributed import DistContext, init_distributed, shutdown_distributed, unwrap, wrap_model
from cambrian.train.metrics import MetricsWriter, plot_loss
from cambrian.train.preflight import check_inputs, check_resume, check_run_dir, clear_run
from cambrian.train.sampler import GlobalBatchSampler
from cambrian.utils.config import ConfigError, save_yaml, to_dict

IGNORE_INDEX = -100
CONNECTOR_FILE = "connector.safetensors"


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (too many bad samples); finished checkpoints are kept."""


# ------------------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig):
    """(model, processor) from a saved model, or a preset with optional pretrained LLM / tower / connector weights."""
    from cambrian import CambrianForCausalLM, CambrianProcessor, preset_config

    m = cfg.model
    if m.path is not None:
        model = CambrianForCausalLM.from_pretrained(m.path)
        processor = CambrianProcessor.from_pretrained(m.tokenizer_path or m.path)
    else:
        config = preset_config(m.preset, **m.config_overrides)
        if m.llm_path is not None:
            from transformers import AutoConfig

            config.text_config = AutoConfig.from_pretrained(m.llm_path)
        tok_path = m.tokenizer_path or m.llm_path
        if tok_path is not None:
            from cambrian.models.processing_cambrian import load_tokenizer_with_image_token

            tokenizer, _ = load_tokenizer_with_image_token(tok_path, config.image_token)
        else:
            from cambrian.data.tiny_tokenizer import build_tiny_tokenizer

            tokenizer = build_tiny_tokenizer()
        processor = CambrianProcessor.from_config(config, tokenizer)
        model = CambrianForCausalLM(config)
        if m.llm_path is not None:
            from transformers import AutoModelForCausalLM

            llm = AutoModelForCausalLM.from_pretrained(m.llm_path, dtype=torch.float32)
            model.language_model.load_state_dict(llm.state_dict(), strict=True)
            del llm
        from cambrian.models.vision.resolve import load_tower_weights

        if len(m.tower_paths) > len(model.vision_towers):
            raise ConfigError(
                f"model.tower_paths has {len(m.tower_paths)} entries for {len(model.vision_towers)} towers"
            )
        for k, (tower, tc) in enumerate(zip(model.vision_towers, config.tower_configs)):
            source = m.tower_paths[k] if k < len(m.tower_paths) and m.tower_paths[k] else tc.source
            if source and not Path(source).is_dir():
                # Never train on top of a randomly initialised stand-in for a pretrained tower.
                raise ConfigError(
                    f"model.tower_paths[{k}]: tower {k} ({source}) has no local weights; give a saved vision "
                    f"model directory at position {k} of model.tower_paths"
                )
            if source:
                load_tower_weights(tower, source)
    if m.connector_path is not None:
        try:
            load_connector(model, m.connector_path)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"model.connector_path: {e}") from None
    return model, processor


def load_connector(model: nn.Module, path: str | Path) -> None:
    """Load a stage-1 connector export (file or run directory) strictly into ``model.connector``."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / CONNECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"connector weights {path} not found (stage 1 writes {CONNECTOR_FILE})")
    state = load_file(str(path))
    mine = model.connector.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in mine.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not match this model's connector: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:5]}"
        )
    model.connector.load_state_dict(state)


def _group_of(name: str) -> str:
    """Parameter group of a parameter name of ``CambrianForCausalLM``."""
    if name.startswith("vision_towers."):
        return "towers"
    if name.startswith("connector."):
        rest = name[len("connector.") :]
        if rest.startswith(("samplers.", "llm_layers.")) or rest == "vision_query":
            return "sva"
        return "connector"
    return "llm"


def set_trainable(model: nn.Module, cfg: TrainConfig) -> dict[str, bool]:
    """Freeze/unfreeze by module per stage; returns {group: trainable}."""
    trainable = {
        "towers": not cfg.model.freeze_towers,
        "connector": not cfg.model.freeze_connector,
        "sva": not cfg.model.freeze_connector,
        "llm": not cfg.llm_frozen,
    }
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[_group_of(name)])
    set_towers_frozen(model, not trainable["towers"])
    return trainable


def set_towers_frozen(model: nn.Module, frozen: bool) -> None:
    """A frozen tower runs under no_grad (``VisionTower.forward``); keep that flag and the config in step."""
    for k, tower in enumerate(model.vision_towers):
        tower.cfg.frozen = frozen
        tower.requires_grad_(not frozen)
        if isinstance(model.config.vision_towers[k], dict):
            model.config.vision_towers[k]["frozen"] = frozen


def group_lrs(cfg: TrainConfig, scale: float) -> dict[str, float]:
    o = cfg.optim
    connector = o.lr if o.connector_lr is None else o.connector_lr
    return {
        "llm": o.lr * scale,
        "towers": (o.lr if o.tower_lr is None else o.tower_lr) * scale,
        "connector": connector * scale,
        "sva": (connector if o.sva_lr is None else o.sva_lr) * scale,
    }


def param_groups(model: nn.Module, lrs: dict[str, float], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups by module, and without weight decay for biases, norms and other 1-D parameters."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((_group_of(name), p.ndim >= 2), []).append(p)
    return [
        {
            "params": ps,
            "lr": lrs[g],
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{g}{'' if decay else '/no_decay'}",
        }
        for (g, decay), ps in sorted(groups.items())
    ]


def lr_lambda(total: int, warmup: int, schedule: str, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup  # the first step already trains (HF warms up from 0)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_ratio + (1 - min_ratio) * max(0.0, decay)

    return f


# ------------------------------------------------------------------------------------------- data
class _Collate:
    """The dataset's collator, plus a label-free zero image when a micro-batch has none (see module doc)."""

    def __init__(self, collator, dummy: dict[str, Any] | None):
        self.collator, self.dummy = collator, dummy

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        # Skipped rows are not dicts; text-only examples carry no "image_sizes".
        if self.dummy is not None and not any(isinstance(e, dict) and "image_sizes" in e for e in examples):
            examples = [*examples, self.dummy]
        return self.collator(examples)


def _dummy_example(processor) -> dict[str, Any]:
    from PIL import Image

    ex = processor.training_example(
        [{"from": "human", "value": processor.image_token}, {"from": "gpt", "value": "."}],
        images=[Image.new("RGB", (64, 64))],  # every tower resizes it to its own resolution
    )
    ex["labels"] = torch.full_like(ex["labels"], IGNORE_INDEX)
    ex["id"], ex["index"] = "__zero_image__", -1
    return ex


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over supervised positions; logits (B, T, V), labels (B, T)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


# ------------------------------------------------------------------------------------------- loop
@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    losses: list[float]
    final_dir: Path | None


def _autocast(cfg: TrainConfig, device: torch.device):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _to(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Model inputs on ``device`` (``pixel_values`` is a list with one tensor per tower)."""
    return {
        k: [p.to(device, non_blocking=True) for p in v]
        if isinstance(v, list)
        else v.to(device, non_blocking=True)
        for k, v in inputs.items()
    }


def _sync_context(model: nn.Module, sync: bool):
    if isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
    return nullcontext()


def _log(ctx: DistContext, console, text: str) -> None:
    if ctx.is_main:
        console.print(text)


StepCallback = Callable[[int, nn.Module, dict[str, Any]], None]


def train(
    cfg: TrainConfig, resume: bool = False, callbacks: Sequence[StepCallback] = (), overwrite: bool = False
) -> TrainResult:
    """Run (or resume) a training run; returns where it went and the per-step losses of this process.

    A run directory that already holds a run is refused (``ConfigError``, a ``ValueError``) unless
    ``resume`` continues it or ``overwrite`` first deletes what it wrote (see ``train.preflight``).
    ``callbacks`` run on the main process after every optimizer step as ``fn(step, model, record)``
    (``model`` unwrapped, in train mode; ``record`` the step's metrics): periodic evaluation, say.
    """
    from rich.console import Console

    console = Console(stderr=True)
    cfg.validate()
    check_inputs(cfg)  # both read-only, on every process, before any of them writes
    check_run_dir(cfg.run_dir, resume, overwrite)
    ctx = init_distributed()
    try:
        return _train(cfg, resume, overwrite, ctx, console, callbacks)
    finally:
        shutdown_distributed(ctx)


def _train(
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    ctx: DistContext,
    console,
    callbacks: Sequence[StepCallback],
) -> TrainResult:
    mode = cfg.distributed if cfg.distributed != "auto" else ("ddp" if ctx.enabled else "none")
    grad_accum, global_batch = cfg.batch_plan(ctx.world_size)
    scale = cfg.lr_scale(global_batch)
    lrs = group_lrs(cfg, scale)
    run_dir = cfg.run_dir
    if resume:
        check_resume(cfg, run_dir, global_batch)
    if ctx.is_main:
        if overwrite:
            removed = clear_run(run_dir)
            if removed:
                _log(
                    ctx,
                    console,
                    f"[yellow]--overwrite: deleted the earlier run's {', '.join(p.name for p in removed)}",
                )
        run_dir.mkdir(parents=True, exist_ok=True)
    ctx.barrier()

    # ---- model (same random init on every process), freezing, placement
    torch.manual_seed(cfg.seed)
    model, processor = build_model(cfg)
    trainable = set_trainable(model, cfg)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model.to(ctx.device)
    model.train()
    if not trainable["towers"]:
        model.vision_towers.eval()  # frozen towers run as at inference (no dropout, fixed norms)

    # ---- data
    data_path = Path(cfg.data.path)
    if ctx.is_main:
        rows = RowIndex.open(data_path, cache_dir=cfg.data.index_cache_dir)
    ctx.barrier()
    if not ctx.is_main:
        rows = RowIndex.open(data_path, cache_dir=cfg.data.index_cache_dir)
    if len(rows) < global_batch:  # the sampler needs one full global batch
        raise ConfigError(
            f"data.path: {data_path} has {len(rows)} rows, fewer than one global batch of {global_batch} "
            f"(per_device_batch {cfg.per_device_batch} x grad_accum {grad_accum} x processes "
            f"{ctx.world_size})"
        )
    image_root = Path(cfg.data.image_root) if cfg.data.image_root else data_path.parent
    dataset = SupervisedDataset(
        rows, processor, image_root=image_root, template=cfg.data.template,
        max_length=cfg.data.max_length, system=cfg.data.system,
    )  # fmt: skip
    sampler = GlobalBatchSampler(
        len(rows), cfg.per_device_batch, grad_accum, ctx.world_size, ctx.rank, cfg.seed,
        lengths=rows.lengths, has_image=rows.has_image,
        group_by_modality_length=cfg.data.group_by_modality_length,
    )  # fmt: skip
    total_steps = cfg.max_steps or int(cfg.epochs * sampler.steps_per_epoch)
    if total_steps < 1:
        raise ConfigError(
            f"epochs: {cfg.epochs} of {len(rows)} rows and global batch {global_batch} give no optimizer step"
        )
    warmup = math.ceil(cfg.optim.warmup_ratio * total_steps)

    # ---- distribution, optimizer, schedule (FSDP2 swaps parameters, so the optimizer comes after)
    wrapped = wrap_model(model, mode, ctx)
    groups = param_groups(model, lrs, cfg.optim.weight_decay)
    if not groups:
        raise ConfigError(
            "model: nothing to train: every parameter is frozen (check model.freeze_* and stage)"
        )
    optimizer = torch.optim.AdamW(groups, betas=cfg.optim.betas, eps=cfg.optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, warmup, cfg.optim.schedule, cfg.optim.min_lr_ratio)
    )
    trainable_params = [p for g in groups for p in g["params"]]

    # ---- resume
    start_step, counters = 0, {"samples": 0, "skipped": 0, "tokens": 0}
    if ctx.is_main:
        removed = remove_incomplete(run_dir)
        if removed:
            _log(
                ctx,
                console,
                f"[yellow]removed unfinished checkpoint(s): {', '.join(d.name for d in removed)}",
            )
    ctx.barrier()
    latest = latest_checkpoint(run_dir) if resume else None
    if resume and latest is None:
        _log(
            ctx, console, f"[yellow]--resume: no complete checkpoint in {run_dir}/checkpoints; starting fresh"
        )
    if latest is not None:
        state = load_checkpoint(latest, wrapped, optimizer, ctx)
        scheduler.load_state_dict(state["scheduler"])
        start_step, counters = state["step"], state["counters"]
        _log(ctx, console, f"resumed from {latest} at step {start_step}")

    # ---- what the run is, printed and saved
    summary = {
        "processes": ctx.world_size, "distributed": mode, "device": str(ctx.device),
        "grad_accum": grad_accum, "global_batch": global_batch, "lr_scale": scale,
        "lrs": {g: lrs[g] for g in lrs if trainable[g]}, "trainable": trainable,
        "total_steps": total_steps, "warmup_steps": warmup, "rows": len(rows),
        "data_file": str(data_path.resolve()),  # what a --resume must match (train.preflight.check_resume)
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
    }  # fmt: skip
    if ctx.is_main:
        save_yaml(cfg, run_dir / "config.yaml")
        (run_dir / "run.json").write_text(json.dumps(summary, indent=1))
        base = cfg.optim.base_global_batch
        if base and base != global_batch:
            # The Cambrian README's rule: lr = base_lr * sqrt(bs / base_bs); show both.
            rates = ", ".join(f"{g} {lrs[g] / scale:.3g} -> {lr:.3g}" for g, lr in summary["lrs"].items())
            rates = f"learning rates scaled by sqrt({global_batch}/{base}) = {scale:.3f}: {rates}"
        else:
            rates = "learning rates: " + ", ".join(f"{g} {lr:.3g}" for g, lr in summary["lrs"].items())
        console.print(
            f"stage {cfg.stage}: global batch {global_batch} = {cfg.per_device_batch} per device x {grad_accum} "
            f"accumulation x {ctx.world_size} processes ({mode}); {total_steps} steps, warmup {warmup}"
        )
        frozen = ", ".join(g for g, t in trainable.items() if not t) or "nothing"
        console.print(f"{rates} | frozen: {frozen}")

    # ---- loader
    sampler.set_range(start_step, total_steps)
    dummy = _dummy_example(processor) if ctx.enabled else None
    pad_id = processor.tokenizer.pad_token_id
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=_Collate(Collator(pad_token_id=pad_id), dummy),
        num_workers=cfg.data.num_workers, pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
    )  # fmt: skip
    metrics = (
        MetricsWriter(run_dir, start_step, cfg.tensorboard, cfg.wandb, cfg.wandb_project, to_dict(cfg))
        if ctx.is_main
        else None
    )
    skipped_log = open(run_dir / f"skipped.rank{ctx.rank}.jsonl", "a")
    losses: list[float] = []
    progress = _progress(ctx, cfg, console)
    task = (
        progress.add_task("training", total=total_steps, completed=start_step, info="") if progress else None
    )
    it = iter(loader)
    t_last = time.perf_counter()
    try:
        for step in range(start_step, total_steps):
            micro = [next(it) for _ in range(grad_accum)]
            local = [
                float(sum(b["num_label_tokens"] for b in micro)),
                float(sum(len(b["skipped"]) for b in micro)),
                float(sum(1 for b in micro for i in b.get("ids", []) if i != "__zero_image__")),
            ]
            for b in micro:
                for s in b["skipped"]:
                    skipped_log.write(
                        json.dumps({"step": step, "id": s.id, "line": s.line, "reason": s.reason}) + "\n"
                    )
            skipped_log.flush()
            tokens, skipped, samples = ctx.all_reduce_sum(local)
            counters["tokens"] += int(tokens)
            counters["skipped"] += int(skipped)
            counters["samples"] += int(samples)
            seen = counters["samples"] + counters["skipped"]
            if (
                counters["skipped"]
                and counters["skipped"] > cfg.data.max_bad_fraction * seen
                and (seen >= cfg.data.bad_check_after or counters["samples"] == 0)
            ):
                raise TrainingStopped(
                    f"{counters['skipped']} of {seen} samples so far were skipped (missing/corrupt images or bad "
                    f"rows), more than data.max_bad_fraction={cfg.data.max_bad_fraction}; see "
                    f"{run_dir}/skipped.rank*.jsonl and run `cambrian data validate {cfg.data.path}`"
                )
            loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
            for k, b in enumerate(micro):
                if "input_ids" not in b:
                    continue  # every sample of this micro-batch was skipped (single process)
                inputs = _to(model_inputs(b), ctx.device)
                labels = inputs.pop("labels")  # the loss is ours (a sum, see the module doc)
                with _sync_context(wrapped, k == grad_accum - 1), _autocast(cfg, ctx.device):
                    logits = wrapped(**inputs, use_cache=False).logits
                    part = token_loss_sum(logits, labels)
                if part.requires_grad:  # a text-only batch with a frozen LLM has nothing to train
                    (part * (ctx.world_size / max(tokens, 1.0))).backward()
                loss_sum += part.detach().double()
            if not ctx.enabled:
                for p in trainable_params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
            grad_norm = None
            if cfg.optim.max_grad_norm is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable_params, cfg.optim.max_grad_norm)
                grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            lr_now = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = ctx.all_reduce_sum([float(loss_sum)])[0] / max(tokens, 1.0)
            losses.append(loss)
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            if ctx.is_main:
                record = {
                    "step": step + 1, "loss": loss, "lr": lr_now, "grad_norm": grad_norm,
                    "samples_per_s": samples / dt, "tokens": int(tokens), "skipped": int(skipped),
                    "epoch": (step + 1) / sampler.steps_per_epoch, "time": time.time(),
                }  # fmt: skip
                if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
                    metrics.log(record)
                for fn in callbacks:
                    fn(step + 1, unwrap(model), record)
                t_last = time.perf_counter()  # callback time (evaluation) is not training throughput
                if progress is not None:
                    progress.update(
                        task, advance=1, info=f"loss {loss:.4f} lr {lr_now:.2e} {samples / dt:.1f} samples/s"
                    )
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == total_steps:
                save_checkpoint(
                    run_dir, step + 1, wrapped, optimizer,
                    {"scheduler": scheduler.state_dict(), "counters": counters, "total_steps": total_steps},
                    ctx, cfg.keep_last,
                )  # fmt: skip
    finally:
        if progress is not None:
            progress.stop()
        skipped_log.close()
        if metrics is not None:
            metrics.close()

    final_dir = _export(cfg, model, wrapped, processor, ctx, run_dir)
    if ctx.is_main:
        png = plot_loss(run_dir, title=f"{cfg.name} (stage {cfg.stage})")
        console.print(
            f"done: {total_steps} steps; run directory {run_dir}" + (f"; loss curve {png}" if png else "")
        )
        if counters["skipped"]:
            console.print(
                f"[yellow]{counters['skipped']} samples skipped; ids in {run_dir}/skipped.rank*.jsonl"
            )
    return TrainResult(run_dir=run_dir, steps=total_steps, losses=losses, final_dir=final_dir)


def _progress(ctx: DistContext, cfg: TrainConfig, console):
    if not (ctx.is_main and cfg.progress):
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
    )  # fmt: skip
    progress.start()
    return progress


def _export(
    cfg: TrainConfig, model: nn.Module, wrapped: nn.Module, processor, ctx: DistContext, run_dir: Path
):
    """Final model via ``save_pretrained`` (full weights gathered on rank 0); stage 1 also the connector alone."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    final_dir = run_dir / "final"
    if ctx.is_main:
        from safetensors.torch import save_file

        base = unwrap(model)
        tmp = run_dir / "final.tmp"
        base.save_pretrained(tmp, state_dict=full, safe_serialization=True)
        processor.save_pretrained(tmp)
        if final_dir.exists():
            import shutil

            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
        connector = {
            k[len("connector.") :]: v.contiguous() for k, v in full.items() if k.startswith("connector.")
        }
        save_file(connector, str(run_dir / CONNECTOR_FILE))
    ctx.barrier()
    return final_dir
