"""The training recipe (torchtune style): ``setup`` builds model, data, optimizer and schedule and
restores a checkpoint, ``train`` runs the optimizer steps, ``cleanup`` closes the logs, ``export``
writes the final model. ``train.trainer.train`` runs it; see there for how the loss is normalised.
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
from torch import nn

from cambrian.data.dataset import Collator, SupervisedDataset, model_inputs
from cambrian.data.index import RowIndex
from cambrian.models.assembly import CONNECTOR_FILE
from cambrian.train.batches import (
    ZERO_IMAGE_ID,
    ZeroImageCollate,
    to_device,
    token_loss_sum,
    zero_image_example,
)
from cambrian.train.checkpoint import latest_checkpoint, load_checkpoint, remove_incomplete, save_checkpoint
from cambrian.train.config import TrainConfig
from cambrian.train.distributed import DistContext, unwrap, wrap_model
from cambrian.train.metrics import MetricsWriter, plot_loss
from cambrian.train.preflight import check_resume, clear_run
from cambrian.train.sampler import GlobalBatchSampler
from cambrian.train.setup import build_model, group_lrs, lr_lambda, param_groups, set_trainable
from cambrian.utils.config import ConfigError, save_yaml, to_dict

StepCallback = Callable[[int, nn.Module, dict[str, Any]], None]


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (too many bad samples); finished checkpoints are kept."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    losses: list[float]
    final_dir: Path | None


class TrainRecipe:
    """One run of either stage on one process of a (possibly single-process) job."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, console, callbacks: Sequence[StepCallback] = ()):
        self.cfg, self.ctx, self.console, self.callbacks = cfg, ctx, console, callbacks
        self.mode = cfg.distributed if cfg.distributed != "auto" else ("ddp" if ctx.enabled else "none")
        self.grad_accum, self.global_batch = cfg.batch_plan(ctx.world_size)
        self.scale = cfg.lr_scale(self.global_batch)
        self.lrs = group_lrs(cfg, self.scale)
        self.run_dir = cfg.run_dir
        self.start_step, self.counters = 0, {"samples": 0, "skipped": 0, "tokens": 0}
        self.losses: list[float] = []
        self.metrics: MetricsWriter | None = None
        self.skipped_log = None
        self.progress = self.task = None

    def _log(self, text: str) -> None:
        if self.ctx.is_main:
            self.console.print(text)

    # ------------------------------------------------------------------------------------- setup
    def setup(self, resume: bool, overwrite: bool) -> None:
        self._setup_run_dir(resume, overwrite)
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._resume(resume)
        self._announce()
        self._setup_loader()

    def _setup_run_dir(self, resume: bool, overwrite: bool) -> None:
        if resume:
            check_resume(self.cfg, self.run_dir, self.global_batch)
        if self.ctx.is_main:
            if overwrite:
                removed = clear_run(self.run_dir)
                if removed:
                    self._log(
                        f"[yellow]--overwrite: deleted the earlier run's {', '.join(p.name for p in removed)}"
                    )
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ctx.barrier()

    def _setup_model(self) -> None:
        """Same random init on every process, then freezing and placement."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model, self.processor = build_model(cfg)
        self.trainable = set_trainable(self.model, cfg)
        if cfg.gradient_checkpointing:
            self.model.language_model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.model.to(self.ctx.device)
        self.model.train()
        if not self.trainable["towers"]:
            self.model.vision_towers.eval()  # frozen towers run as at inference (no dropout, fixed norms)

    def _setup_data(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.data_path = data_path = Path(cfg.data.path)
        if ctx.is_main:  # the main process builds (and caches) the row index, the others then read it
            rows = RowIndex.open(data_path, cache_dir=cfg.data.index_cache_dir)
        ctx.barrier()
        if not ctx.is_main:
            rows = RowIndex.open(data_path, cache_dir=cfg.data.index_cache_dir)
        if len(rows) < self.global_batch:  # the sampler needs one full global batch
            raise ConfigError(
                f"data.path: {data_path} has {len(rows)} rows, fewer than one global batch of {self.global_batch} "
                f"(per_device_batch {cfg.per_device_batch} x grad_accum {self.grad_accum} x processes "
                f"{ctx.world_size})"
            )
        self.rows = rows
        image_root = Path(cfg.data.image_root) if cfg.data.image_root else data_path.parent
        self.dataset = SupervisedDataset(
            rows, self.processor, image_root=image_root, template=cfg.data.template,
            max_length=cfg.data.max_length, system=cfg.data.system,
        )  # fmt: skip
        self.sampler = GlobalBatchSampler(
            len(rows), cfg.per_device_batch, self.grad_accum, ctx.world_size, ctx.rank, cfg.seed,
            lengths=rows.lengths, has_image=rows.has_image,
            group_by_modality_length=cfg.data.group_by_modality_length,
        )  # fmt: skip
        self.total_steps = cfg.max_steps or int(cfg.epochs * self.sampler.steps_per_epoch)
        if self.total_steps < 1:
            raise ConfigError(
                f"epochs: {cfg.epochs} of {len(rows)} rows and global batch {self.global_batch} give no "
                "optimizer step"
            )
        self.warmup = math.ceil(cfg.optim.warmup_ratio * self.total_steps)

    def _setup_optimizer(self) -> None:
        """Distribution, optimizer, schedule (FSDP2 swaps parameters, so the optimizer comes after)."""
        o = self.cfg.optim
        self.wrapped = wrap_model(self.model, self.mode, self.ctx)
        groups = param_groups(self.model, self.lrs, o.weight_decay)
        if not groups:
            raise ConfigError(
                "model: nothing to train: every parameter is frozen (check model.freeze_* and stage)"
            )
        self.optimizer = torch.optim.AdamW(groups, betas=o.betas, eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, self.warmup, o.schedule, o.min_lr_ratio)
        )
        self.trainable_params = [p for g in groups for p in g["params"]]

    def _resume(self, resume: bool) -> None:
        ctx = self.ctx
        if ctx.is_main:
            removed = remove_incomplete(self.run_dir)
            if removed:
                self._log(f"[yellow]removed unfinished checkpoint(s): {', '.join(d.name for d in removed)}")
        ctx.barrier()
        latest = latest_checkpoint(self.run_dir) if resume else None
        if resume and latest is None:
            self._log(
                f"[yellow]--resume: no complete checkpoint in {self.run_dir}/checkpoints; starting fresh"
            )
        if latest is not None:
            state = load_checkpoint(latest, self.wrapped, self.optimizer, ctx)
            self.scheduler.load_state_dict(state["scheduler"])
            self.start_step, self.counters = state["step"], state["counters"]
            self._log(f"resumed from {latest} at step {self.start_step}")

    def _announce(self) -> None:
        """What the run is, printed and saved (``run.json``, ``config.yaml``)."""
        cfg, ctx, lrs, trainable, model = self.cfg, self.ctx, self.lrs, self.trainable, self.model
        summary = {
            "processes": ctx.world_size, "distributed": self.mode, "device": str(ctx.device),
            "grad_accum": self.grad_accum, "global_batch": self.global_batch, "lr_scale": self.scale,
            "lrs": {g: lrs[g] for g in lrs if trainable[g]}, "trainable": trainable,
            "total_steps": self.total_steps, "warmup_steps": self.warmup, "rows": len(self.rows),
            "data_file": str(self.data_path.resolve()),  # what a --resume must match (preflight.check_resume)
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        }  # fmt: skip
        if not ctx.is_main:
            return
        save_yaml(cfg, self.run_dir / "config.yaml")
        (self.run_dir / "run.json").write_text(json.dumps(summary, indent=1))
        base = cfg.optim.base_global_batch
        if base and base != self.global_batch:
            # The Cambrian README's rule: lr = base_lr * sqrt(bs / base_bs); show both.
            rates = ", ".join(
                f"{g} {lrs[g] / self.scale:.3g} -> {lr:.3g}" for g, lr in summary["lrs"].items()
            )
            rates = f"learning rates scaled by sqrt({self.global_batch}/{base}) = {self.scale:.3f}: {rates}"
        else:
            rates = "learning rates: " + ", ".join(f"{g} {lr:.3g}" for g, lr in summary["lrs"].items())
        self.console.print(
            f"stage {cfg.stage}: global batch {self.global_batch} = {cfg.per_device_batch} per device x "
            f"{self.grad_accum} accumulation x {ctx.world_size} processes ({self.mode}); {self.total_steps} "
            f"steps, warmup {self.warmup}"
        )
        frozen = ", ".join(g for g, t in trainable.items() if not t) or "nothing"
        self.console.print(f"{rates} | frozen: {frozen}")

    def _setup_loader(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.sampler.set_range(self.start_step, self.total_steps)
        dummy = zero_image_example(self.processor) if ctx.enabled else None
        collate = ZeroImageCollate(Collator(pad_token_id=self.processor.tokenizer.pad_token_id), dummy)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
            pin_memory=ctx.device.type == "cuda", persistent_workers=False,
        )  # fmt: skip
        if ctx.is_main:
            self.metrics = MetricsWriter(
                self.run_dir, self.start_step, cfg.tensorboard, cfg.wandb, cfg.wandb_project, to_dict(cfg)
            )
        self.skipped_log = open(self.run_dir / f"skipped.rank{ctx.rank}.jsonl", "a")
        self.progress = _progress(ctx, cfg, self.console)
        if self.progress is not None:
            self.task = self.progress.add_task(
                "training", total=self.total_steps, completed=self.start_step, info=""
            )

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> None:
        it = iter(self.loader)
        t_last = time.perf_counter()
        for step in range(self.start_step, self.total_steps):
            micro = [next(it) for _ in range(self.grad_accum)]
            tokens, skipped, samples = self._count(step, micro)
            loss_sum = self._forward_backward(micro, tokens)
            grad_norm, lr_now = self._optimizer_step()
            loss = self.ctx.all_reduce_sum([float(loss_sum)])[0] / max(tokens, 1.0)
            self.losses.append(loss)
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            if self.ctx.is_main:
                record = {
                    "step": step + 1, "loss": loss, "lr": lr_now, "grad_norm": grad_norm,
                    "samples_per_s": samples / dt, "tokens": int(tokens), "skipped": int(skipped),
                    "epoch": (step + 1) / self.sampler.steps_per_epoch, "time": time.time(),
                }  # fmt: skip
                self._report(record)
                t_last = time.perf_counter()  # callback time (evaluation) is not training throughput
            cfg = self.cfg
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == self.total_steps:
                self.save_checkpoint(step + 1)

    def _count(self, step: int, micro: list[dict[str, Any]]) -> tuple[float, float, float]:
        """Global (label tokens, skipped, samples) of this step; logs skipped rows, stops on too many."""
        local = [
            float(sum(b["num_label_tokens"] for b in micro)),
            float(sum(len(b["skipped"]) for b in micro)),
            float(sum(1 for b in micro for i in b.get("ids", []) if i != ZERO_IMAGE_ID)),
        ]
        for b in micro:
            for s in b["skipped"]:
                self.skipped_log.write(
                    json.dumps({"step": step, "id": s.id, "line": s.line, "reason": s.reason}) + "\n"
                )
        self.skipped_log.flush()
        tokens, skipped, samples = self.ctx.all_reduce_sum(local)
        c, d = self.counters, self.cfg.data
        c["tokens"] += int(tokens)
        c["skipped"] += int(skipped)
        c["samples"] += int(samples)
        seen = c["samples"] + c["skipped"]
        if (
            c["skipped"]
            and c["skipped"] > d.max_bad_fraction * seen
            and (seen >= d.bad_check_after or c["samples"] == 0)
        ):
            raise TrainingStopped(
                f"{c['skipped']} of {seen} samples so far were skipped (missing/corrupt images or bad "
                f"rows), more than data.max_bad_fraction={d.max_bad_fraction}; see "
                f"{self.run_dir}/skipped.rank*.jsonl and run `cambrian data validate {d.path}`"
            )
        return tokens, skipped, samples

    def _forward_backward(self, micro: list[dict[str, Any]], tokens: float) -> torch.Tensor:
        """Backward of every micro-batch's token loss sum over the global token count; the local loss sum."""
        ctx = self.ctx
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for k, b in enumerate(micro):
            if "input_ids" not in b:
                continue  # every sample of this micro-batch was skipped (single process)
            inputs = to_device(model_inputs(b), ctx.device)
            labels = inputs.pop("labels")  # the loss is ours (a sum, see train.trainer)
            with _sync_context(self.wrapped, k == self.grad_accum - 1), _autocast(self.cfg, ctx.device):
                logits = self.wrapped(**inputs, use_cache=False).logits
                part = token_loss_sum(logits, labels)
            if part.requires_grad:  # a text-only batch with a frozen LLM has nothing to train
                (part * (ctx.world_size / max(tokens, 1.0))).backward()
            loss_sum += part.detach().double()
        return loss_sum

    def _optimizer_step(self) -> tuple[float | None, float]:
        """Clip, step, schedule; returns (grad norm before clipping or None, the lr this step used)."""
        if not self.ctx.enabled:  # what the all-reduce gives a parameter no process touched
            for p in self.trainable_params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        grad_norm = None
        if self.cfg.optim.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_params, self.cfg.optim.max_grad_norm)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        lr_now = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, lr_now

    def _report(self, record: dict[str, Any]) -> None:
        """Main process: metrics, callbacks, progress bar."""
        step = record["step"]
        if step % self.cfg.log_every == 0 or step == self.total_steps:
            self.metrics.log(record)
        for fn in self.callbacks:
            fn(step, unwrap(self.model), record)
        if self.progress is not None:
            info = f"loss {record['loss']:.4f} lr {record['lr']:.2e} {record['samples_per_s']:.1f} samples/s"
            self.progress.update(self.task, advance=1, info=info)

    def save_checkpoint(self, step: int) -> None:
        save_checkpoint(
            self.run_dir, step, self.wrapped, self.optimizer,
            {"scheduler": self.scheduler.state_dict(), "counters": self.counters, "total_steps": self.total_steps},
            self.ctx, self.cfg.keep_last,
        )  # fmt: skip

    def cleanup(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.skipped_log is not None:
            self.skipped_log.close()
        if self.metrics is not None:
            self.metrics.close()

    # ------------------------------------------------------------------------------------- export
    def export(self) -> TrainResult:
        """Final model via ``save_pretrained`` (full weights gathered on rank 0), the connector alone
        (the stage-1 export stage 2 starts from) and the loss curve."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        ctx, run_dir = self.ctx, self.run_dir
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.wrapped, options=options)
        final_dir = run_dir / "final"
        if ctx.is_main:
            _save_final(unwrap(self.model), self.processor, full, run_dir)
        ctx.barrier()
        if ctx.is_main:
            png = plot_loss(run_dir, title=f"{self.cfg.name} (stage {self.cfg.stage})")
            self.console.print(
                f"done: {self.total_steps} steps; run directory {run_dir}"
                + (f"; loss curve {png}" if png else "")
            )
            if self.counters["skipped"]:
                self.console.print(
                    f"[yellow]{self.counters['skipped']} samples skipped; ids in {run_dir}/skipped.rank*.jsonl"
                )
        return TrainResult(run_dir=run_dir, steps=self.total_steps, losses=self.losses, final_dir=final_dir)


def _save_final(model: nn.Module, processor, full: dict[str, torch.Tensor], run_dir: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    tmp, final_dir = run_dir / "final.tmp", run_dir / "final"
    model.save_pretrained(tmp, state_dict=full, safe_serialization=True)
    processor.save_pretrained(tmp)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)
    connector = {
        k[len("connector.") :]: v.contiguous() for k, v in full.items() if k.startswith("connector.")
    }
    save_file(connector, str(run_dir / CONNECTOR_FILE))


def _autocast(cfg: TrainConfig, device: torch.device):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _sync_context(model: nn.Module, sync: bool):
    """Gradient all-reduce only on the last micro-batch of a step (DDP ``no_sync`` / FSDP2's switch)."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
    return nullcontext()


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
