"""The trainer: one loop for both Cambrian stages, on one CPU or many GPUs (DDP / FSDP2 via torchrun).

``train`` checks the config and run directory, joins the process group and runs ``recipe.TrainRecipe``
(setup -> train -> cleanup -> export); what the config builds lives in ``train.setup``, the model's
parts and their freezing in ``CambrianForCausalLM.set_trainable`` / ``param_groups``.

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

from collections.abc import Sequence

from torch import nn

from cambrian.train.batches import token_loss_sum
from cambrian.train.config import TrainConfig
from cambrian.train.distributed import init_distributed, shutdown_distributed
from cambrian.train.preflight import check_inputs, check_run_dir
from cambrian.train.recipe import StepCallback, TrainingStopped, TrainRecipe, TrainResult
from cambrian.train.setup import build_model, group_lrs, lr_lambda, param_groups, set_trainable

__all__ = [
    "StepCallback",
    "TrainRecipe",
    "TrainResult",
    "TrainingStopped",
    "build_model",
    "group_lrs",
    "lr_lambda",
    "param_groups",
    "set_towers_frozen",
    "set_trainable",
    "token_loss_sum",
    "train",
]


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
        recipe = TrainRecipe(cfg, ctx, console, callbacks)
        try:
            recipe.setup(resume, overwrite)
            recipe.train()
        finally:
            recipe.cleanup()
        return recipe.export()
    finally:
        shutdown_distributed(ctx)


def set_towers_frozen(model: nn.Module, frozen: bool) -> None:
    """``CambrianForCausalLM.set_towers_frozen`` (kept for ``quickstart``, which imports it from here)."""
    model.set_towers_frozen(frozen)
