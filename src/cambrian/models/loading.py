"""One way to get ``(model, processor)`` from what a user types: a model directory or a preset id.

Used by the CLI (``chat``, ``eval run``, ``serve``) and the lmms-eval adapter. A directory is ours or the
released Cambrian-1 layout (towers from ``tower_paths``); a registered preset id builds random weights,
but only when asked for (``random_ok=True``, the CLI's ``--random``), so a typo or a released name such
as ``cambrian-8b`` never quietly builds an untrained model; a hub id is fetched only when downloads were
explicitly allowed. Everything a user can get wrong is a ``ModelLoadError``: one line naming the
directory, file or id, what was expected and the valid choices, worded with the caller's option names
(``hints``), never a traceback from deep inside the loaders.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DTYPES = ("bfloat16", "float16", "float32")

# How a fix is worded, per front end: "random" builds a preset, "download" allows the hub, "tower"
# ({name} filled in) gives a released tower's local weights.
PYTHON_HINTS = {
    "random": "random_ok=True",
    "download": "allow_download=True",
    "tower": "tower_paths={{'{name}': DIR}}",
}
CLI_HINTS = {"random": "--random", "download": "--allow-download", "tower": "--tower-path {name}=DIR"}

# Suffixes of files, never of a model directory or a hub id: a name ending in one is a mistyped path.
_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".yaml", ".yml", ".txt")
_EXPECTED = "a saved Cambrian model or the released Cambrian-1 layout"


def _load_errors() -> tuple[type[BaseException], ...]:
    """What the loaders raise for files that are truncated, garbage or of another model (never bugs of
    ours: AttributeError, NameError, ... stay tracebacks)."""
    import pickle

    from safetensors import SafetensorError

    return (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    )


class ModelLoadError(ValueError):
    """What the user gave does not load as a model; the message is one line saying what and why."""


def _one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line, at most ``limit`` characters (some list every HF model type)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a preset or hub id: it starts with ``.``,
    ``/`` or ``~``, has a backslash or more than one ``/``, ends in a file suffix, or is ``DIR/NAME``
    where ``DIR`` exists locally (``runs/mdoel``)."""
    seps = {os.sep, os.altsep or os.sep, "/"}
    if name.startswith((".", "~", *seps)) or "\\" in name or name.count("/") > 1:
        return True
    if name.lower().endswith(_FILE_SUFFIXES):
        return True
    head = name.split("/", 1)[0] if "/" in name else None
    return head is not None and Path(head).is_dir()


def _missing(path: Path, shown: str | None = None) -> str:
    """``no such directory: SHOWN`` (the path as typed), plus the closest existing sibling when one is
    close, spelled the way the path was typed."""
    shown = shown or str(path)
    try:
        names = [p.name for p in path.parent.iterdir() if p.is_dir()]
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.7)
    if not close:
        return f"no such directory: {shown}"
    typed = shown.rstrip("/\\")
    near = (
        typed[: len(typed) - len(path.name)] + close[0]
        if typed.endswith(path.name)
        else path.parent / close[0]
    )
    return f"no such directory: {shown}; did you mean {near}?"


def _read_config(path: Path) -> dict[str, Any]:
    """``path/config.json`` as a dict; ``ModelLoadError`` naming the file when it is missing or garbage."""
    file = path / "config.json"
    if not file.is_file():
        below = sorted(str(p.parent) for pattern in ("*/config.json", "*/*/config.json", "*/*/*/config.json")
                       for p in path.glob(pattern))[:3]  # fmt: skip
        hint = f"; model directories below it: {', '.join(below)}" if below else ""
        raise ModelLoadError(
            f"{path} is not a model directory: no config.json in it (expected {_EXPECTED}){hint}"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{file}: cannot be read ({_one_line(e)})") from None
    if not text.strip():
        raise ModelLoadError(f"{file} is empty; expected a JSON model config ({_EXPECTED})")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelLoadError(
            f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    if not isinstance(d, dict):
        raise ModelLoadError(f"{file} holds a JSON {type(d).__name__}; expected an object ({_EXPECTED})")
    return d


def _check_config(file: Path, d: dict[str, Any]) -> str:
    """``"ours"`` or ``"released"`` for a model config; ``ModelLoadError`` naming what is wrong."""
    from cambrian.models.released import is_released_config

    if is_released_config(d):
        missing = [k for k in ("image_token_len", "mm_projector_type") if k not in d]
        if not any(k in d for k in ("mm_vision_tower_aux_token_len_list", "vision_tower_aux_token_len_list")):
            missing.append("mm_vision_tower_aux_token_len_list")
        if missing:
            raise ModelLoadError(f"{file} (released Cambrian-1 layout) lacks {', '.join(missing)}")
        towers = d["mm_vision_tower_aux_list"]
        if not isinstance(towers, list) or not towers or not all(isinstance(t, str) for t in towers):
            raise ModelLoadError(f"{file}: mm_vision_tower_aux_list must be a non-empty list of tower names")
        return "released"
    if d.get("model_type") != "cambrian":
        raise ModelLoadError(
            f"{file} is not a Cambrian model config (model_type {d.get('model_type')!r}); expected model_type "
            "'cambrian' with text_config and vision_towers, or mm_vision_tower_aux_list (the released layout)"
        )
    missing = [k for k in ("text_config", "vision_towers") if not isinstance(d.get(k), (dict, list))]
    if missing:
        raise ModelLoadError(f"{file} lacks {', '.join(missing)} (expected {_EXPECTED})")
    return "ours"


def tower_names(pretrained: str | Path) -> list[str]:
    """The released tower names a model directory needs local weights for (``tower_paths`` keys); for a
    directory that is not in the released layout (or unreadable), every released tower name."""
    from cambrian.models.vision import RELEASED_TOWERS

    try:
        d = json.loads((Path(pretrained).expanduser() / "config.json").read_text(encoding="utf-8"))
        names = d["mm_vision_tower_aux_list"]
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return list(names)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return sorted(RELEASED_TOWERS)


def _check_towers(path: Path, d: dict, tower_paths: dict[str, str], allow_download: bool, hints) -> None:
    """Released layout: every ``tower_paths`` name is one of the checkpoint's towers and a directory, and
    every released tower name has weights to come from (a local copy or a download)."""
    from cambrian.models.vision import RELEASED_TOWERS

    names = d["mm_vision_tower_aux_list"]
    for name, local in tower_paths.items():
        if name not in names:
            raise ModelLoadError(f"tower path {name!r}: {path} has no such tower; valid: {', '.join(names)}")
        if not Path(local).expanduser().is_dir():
            raise ModelLoadError(f"tower path {name}={local}: {_missing(Path(local).expanduser())}")
    for name in names:
        if name in RELEASED_TOWERS and name not in tower_paths and not allow_download:
            source = RELEASED_TOWERS[name](1, -2).source
            raise ModelLoadError(
                f"{path}: vision tower {name!r} has no weights in the checkpoint; pass "
                f"{hints['tower'].format(name=name)} (a local copy of {source}) or {hints['download']}"
            )


def _check_weights(path: Path) -> None:
    from cambrian.utils.weights import HF_WEIGHT_FILES

    if not any((path / name).is_file() for name in HF_WEIGHT_FILES):
        raise ModelLoadError(
            f"{path} has a config.json but no weights (looked for {', '.join(HF_WEIGHT_FILES)})"
        )


def load_model(
    pretrained: str,
    tower_paths: dict[str, str] | None = None,
    allow_download: bool = False,
    dtype: str | None = None,
    quantize: str | None = None,
    random_ok: bool = False,
    hints: Mapping[str, str] | None = None,
):
    """(model in eval mode, processor); ``dtype`` one of ``DTYPES`` (or None/"auto": as saved).

    ``quantize``: None, or a ``cambrian.models.quantize.QUANTIZE_MODES`` mode applied to the LLM's
    linears after loading in ``dtype`` (``nf4``/``int8-bnb`` also move the model to CUDA).
    ``random_ok``: a preset id builds that architecture with random weights (otherwise it is an error).
    ``hints``: how messages name the fixes (``PYTHON_HINTS`` by default, ``CLI_HINTS`` for the CLI).
    Raises ``ModelLoadError`` (a ``ValueError``, one line) for anything the caller gave that does not load.
    """
    import torch

    from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
    from cambrian.models.presets import PRESETS
    from cambrian.models.quantize import check_mode, quantize_model

    hints = {**PYTHON_HINTS, **(hints or {})}
    if dtype not in (None, "auto", *DTYPES):
        raise ModelLoadError(f"dtype {dtype!r} is not supported; valid: {', '.join(DTYPES)}")
    if quantize is not None:
        check_mode(quantize)  # before the (possibly long) load
    torch_dtype = getattr(torch, dtype) if dtype in DTYPES else None
    paths = dict(tower_paths or {})
    path = Path(pretrained).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file, not a model directory (expected {_EXPECTED})")
        d = _read_config(path)
        if _check_config(path / "config.json", d) == "released":
            _check_towers(path, d, paths, allow_download, hints)
        _check_weights(path)
        source = str(path)
    elif pretrained in PRESETS:
        if not random_ok:
            raise ModelLoadError(
                f"{pretrained} is a preset with random weights; pass {hints['random']} to build it, "
                "or give a model directory"
            )
        model, processor = build_tiny(pretrained)
        model = model if torch_dtype is None else model.to(torch_dtype)
        return (model if quantize is None else quantize_model(model, quantize)), processor
    elif looks_like_path(pretrained):
        raise ModelLoadError(_missing(path, pretrained))
    elif not allow_download:
        raise ModelLoadError(
            f"{pretrained} is neither a model directory nor a preset id ({', '.join(PRESETS.names())}); "
            f"pass {hints['download']} to fetch it as a hub id"
        )
    else:
        source = pretrained
    from transformers.utils import logging as hf_logging

    load_errors = _load_errors()
    hf_logging.disable_progress_bar()  # the weight-loading bar would mix into answers and progress bars
    kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
    try:
        model = CambrianForCausalLM.from_pretrained(
            source, tower_paths=paths, allow_download=allow_download, **kwargs
        )
        processor = CambrianProcessor.from_pretrained(source, tower_paths=paths)
    except load_errors as e:  # a file holds something else than its name promises
        raise ModelLoadError(f"{source}: cannot load the model: {_one_line(e)}") from e
    model = model.eval() if quantize is None else quantize_model(model.eval(), quantize)
    return model, processor
