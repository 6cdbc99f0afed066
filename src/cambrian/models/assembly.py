"""Assembling a model to train from paths: a saved Cambrian model, or a preset filled with pretrained parts.

``assemble_model`` is the one place that puts a ``CambrianForCausalLM`` together from an architecture
(preset + config overrides) and local weights for its parts: the LLM (and its tokenizer), each vision
tower, and a stage-1 connector export (``load_connector``). Nothing is downloaded, and a tower that
names pretrained weights it cannot find locally is an error: never train on top of a randomly
initialised stand-in. For inference from a model directory or preset id see ``models.loading``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONNECTOR_FILE = "connector.safetensors"  # what stage 1 exports next to its final model


class AssemblyError(ValueError):
    """A path given to ``assemble_model`` is unusable; ``arg`` names the argument (``tower_paths[1]``)."""

    def __init__(self, arg: str, message: str):
        super().__init__(message)
        self.arg = arg


def assemble_model(
    preset: str | None = None,
    *,
    path: str | Path | None = None,
    llm_path: str | Path | None = None,
    tower_paths: Sequence[str | Path | None] = (),
    connector_path: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    config_overrides: Mapping[str, Any] | None = None,
):
    """``(model, processor)``: the saved model at ``path``, else preset ``preset`` (random init) with
    the LLM weights of ``llm_path``, the tower weights of ``tower_paths`` (one directory or None per
    tower, in order; None keeps the tower's own local ``source``) and, either way, the connector of
    ``connector_path`` (a ``connector.safetensors`` file or the stage-1 run directory holding it).

    The tokenizer comes from ``tokenizer_path``, else ``path`` / ``llm_path``, else the tiny
    in-process one. Parameters are float32; random parts draw from torch's global generator.
    """
    from cambrian import CambrianForCausalLM, CambrianProcessor, preset_config

    if path is not None:
        model = CambrianForCausalLM.from_pretrained(path)
        processor = CambrianProcessor.from_pretrained(tokenizer_path or path)
    else:
        config = preset_config(preset, **(config_overrides or {}))
        if llm_path is not None:
            from transformers import AutoConfig

            config.text_config = AutoConfig.from_pretrained(llm_path)
        sources = _tower_sources(config.tower_configs, tower_paths)  # before building a large model
        processor = CambrianProcessor.from_config(config, _tokenizer(tokenizer_path or llm_path, config))
        model = CambrianForCausalLM(config)
        if llm_path is not None:
            from transformers import AutoModelForCausalLM

            llm = AutoModelForCausalLM.from_pretrained(llm_path, dtype=torch.float32)
            model.language_model.load_state_dict(llm.state_dict(), strict=True)
            del llm
        from cambrian.models.vision.resolve import load_tower_weights

        for tower, source in zip(model.vision_towers, sources):
            if source:
                load_tower_weights(tower, source)
    if connector_path is not None:
        try:
            load_connector(model, connector_path)
        except (FileNotFoundError, ValueError) as e:
            raise AssemblyError("connector_path", str(e)) from None
    return model, processor


def _tower_sources(tower_configs: list, tower_paths: Sequence[str | Path | None]) -> list[str | Path | None]:
    """The weights directory of each tower: its ``tower_paths`` entry, else its config's ``source``."""
    if len(tower_paths) > len(tower_configs):
        raise AssemblyError("tower_paths", f"{len(tower_paths)} entries for {len(tower_configs)} towers")
    sources = []
    for k, tc in enumerate(tower_configs):
        source = tower_paths[k] if k < len(tower_paths) and tower_paths[k] else tc.source
        if source and not Path(source).is_dir():
            raise AssemblyError(
                f"tower_paths[{k}]",
                f"tower {k} ({source}) has no local weights; give a saved vision model directory at "
                f"position {k} of tower_paths",
            )
        sources.append(source)
    return sources


def _tokenizer(path: str | Path | None, config):
    if path is None:
        from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from cambrian.models.tokenization import load_tokenizer_with_image_token

    tokenizer, _ = load_tokenizer_with_image_token(path, config.image_token)
    return tokenizer


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
