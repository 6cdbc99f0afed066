"""Checks made before a training run touches anything: its inputs exist, its run directory is its own.

Everything here only reads the file system (``clear_run`` aside), so every process of a distributed
run can make the same checks before any of them writes, and all of them stop with the same error.

* ``check_inputs``: the data file, the template and model preset ids, and the local directories the
  config names (tower weights included), so a typo fails in a second with the key named, not after the
  model was built.
* ``check_run_dir``: a run directory that already holds a run (checkpoints, metrics, a saved config) is
  refused unless the caller resumes it or overwrites it. Training over an old run without clearing it
  mixes both: ``keep_last`` deletes the new run's checkpoints while the old run's higher steps survive,
  and a later resume continues the *old* run.
* ``check_resume``: resuming with another data file or global batch than the run was started with is
  refused (the sampler's position is ``step x global batch`` into the data's order: either change
  silently trains on a different sample sequence than both runs describe).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from cambrian.train.checkpoint import list_checkpoints
from cambrian.train.config import TrainConfig
from cambrian.utils.config import ConfigError

RUN_JSON = "run.json"
CONFIG_FILE = "config.yaml"
# What a run writes into its directory (checkpoints/ first: that is what keep_last and resume read).
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", CONFIG_FILE, RUN_JSON, "final", "final.tmp",
               "connector.safetensors", "loss.png", "tensorboard")  # fmt: skip
_SIGNS_OF_A_RUN = ("metrics.jsonl", CONFIG_FILE, RUN_JSON, "final", "connector.safetensors")


def check_inputs(cfg: TrainConfig) -> None:
    """Raise ``ConfigError`` naming the key of the first missing input or unknown id."""
    from cambrian.models.conversation import TEMPLATES
    from cambrian.registry import UnknownIdError

    data = Path(cfg.data.path)
    if not data.is_file():
        what = "is a directory, not" if data.is_dir() else "does not exist; expected"
        raise ConfigError(f"data.path: {data} {what} a .json or .jsonl data file")
    if data.stat().st_size == 0:
        raise ConfigError(f"data.path: {data} is empty (no rows to train on)")
    if cfg.data.image_root is not None and not Path(cfg.data.image_root).is_dir():
        raise ConfigError(f"data.image_root: {cfg.data.image_root} is not a directory")
    if cfg.data.template is not None:
        try:
            TEMPLATES.get(cfg.data.template)
        except UnknownIdError as e:
            raise ConfigError(f"data.template: {e}") from None
    m = cfg.model
    if m.path is None:
        _check_towers(cfg)
    if m.path is not None and not (Path(m.path) / "config.json").is_file():
        what = "has no config.json" if Path(m.path).is_dir() else "does not exist"
        raise ConfigError(f"model.path: {m.path} {what}; expected a saved model directory")
    if m.llm_path is not None and not Path(m.llm_path).is_dir():
        raise ConfigError(f"model.llm_path: {m.llm_path} is not a directory (a saved HF causal LM)")
    if m.connector_path is not None and not Path(m.connector_path).exists():
        raise ConfigError(
            f"model.connector_path: {m.connector_path} does not exist (a stage-1 run directory or its "
            "connector.safetensors)"
        )


def _check_towers(cfg: TrainConfig) -> None:
    """The preset exists, and every tower that names pretrained weights has them locally: never train on
    top of a randomly initialised stand-in (nor build an 8B model first to find that out)."""
    from cambrian.models.presets import preset_config
    from cambrian.registry import UnknownIdError

    m = cfg.model
    try:
        towers = preset_config(m.preset, **m.config_overrides).tower_configs
    except UnknownIdError as e:
        raise ConfigError(f"model.preset: {e}") from None
    except ValueError as e:
        raise ConfigError(f"model.config_overrides: {e}") from None
    if len(m.tower_paths) > len(towers):
        raise ConfigError(f"model.tower_paths: {len(m.tower_paths)} entries for {len(towers)} towers")
    for k, tc in enumerate(towers):
        given = m.tower_paths[k] if k < len(m.tower_paths) else None
        if given and not Path(given).is_dir():
            raise ConfigError(f"model.tower_paths[{k}]: {given} is not a directory (a saved vision tower)")
        if not given and tc.source and not Path(tc.source).is_dir():
            raise ConfigError(
                f"model.tower_paths[{k}]: tower {k} ({tc.source}) has no local weights; give a saved vision "
                f"model directory at position {k} of model.tower_paths"
            )


def holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds (part of) an earlier run: a checkpoint, metrics or a saved config."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir() and any(root.iterdir()):
        return True
    return any((Path(run_dir) / name).exists() for name in _SIGNS_OF_A_RUN)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a directory holding another one unless resuming or overwriting."""
    if resume and overwrite:
        raise ConfigError(
            "resume and overwrite contradict each other: resume continues the run, overwrite deletes it"
        )
    if not (resume or overwrite) and holds_a_run(run_dir):
        steps = [s for s, _ in list_checkpoints(run_dir)]
        held = f"checkpoints up to step {steps[-1]}" if steps else "an earlier run's files"
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({held}); pass --resume to continue it, "
            "--overwrite to delete it and start over (library: resume=True / overwrite=True), or choose "
            "another name="
        )


def clear_run(run_dir: Path) -> list[Path]:
    """Delete what an earlier run wrote into ``run_dir`` (other files stay); returns what was removed."""
    run_dir = Path(run_dir)
    gone = [run_dir / n for n in RUN_OUTPUTS if (run_dir / n).exists()] + sorted(
        run_dir.glob("skipped.rank*.jsonl")
    )
    for path in gone:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return gone


def check_resume(cfg: TrainConfig, run_dir: Path, global_batch: int) -> None:
    """Refuse to resume a checkpointed run with another data file or global batch than it was run with."""
    run_dir = Path(run_dir)
    if not list_checkpoints(run_dir):
        return  # nothing to resume: the run starts fresh and its old metrics are dropped
    saved: dict = {}
    if (run_dir / RUN_JSON).is_file():
        saved = json.loads((run_dir / RUN_JSON).read_text())
    data_then = saved.get("data_file")
    if data_then is None and (run_dir / CONFIG_FILE).is_file():  # runs from before run.json had it
        data_then = ((yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}).get("data") or {}).get(
            "path"
        )
    data_now = str(Path(cfg.data.path).resolve())
    if data_then is not None and str(Path(data_then).resolve()) != data_now:
        raise ConfigError(
            f"data.path: the run in {run_dir} was trained on {data_then}, not {data_now}; resuming needs "
            "the same data (start a new run with model.path=<its final/ directory> to train on other data)"
        )
    batch_then = saved.get("global_batch")
    if batch_then is not None and batch_then != global_batch:
        raise ConfigError(
            f"global_batch: the run in {run_dir} was trained with global batch {batch_then}, this one would "
            f"use {global_batch} (per_device_batch x grad_accum x processes); resuming needs the same one"
        )
