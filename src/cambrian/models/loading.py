"""One way to get ``(model, processor)`` from what a user types: a model directory or a preset id.

Used by the CLI (``chat``, ``eval run``) and the lmms-eval adapter. A directory is ours or the released
Cambrian-1 layout (towers from ``tower_paths``); a registered preset id builds random weights (for
trying things out); anything else is an error unless downloads were explicitly allowed.
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")


def load_model(
    pretrained: str,
    tower_paths: dict[str, str] | None = None,
    allow_download: bool = False,
    dtype: str | None = None,
    quantize: str | None = None,
):
    """(model in eval mode, processor); ``dtype`` one of ``DTYPES`` (or None/"auto": as saved).

    ``quantize``: None, or a ``cambrian.models.quantize.QUANTIZE_MODES`` mode applied to the LLM's
    linears after loading in ``dtype`` (``nf4``/``int8-bnb`` also move the model to CUDA).
    """
    import torch

    from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
    from cambrian.models.presets import PRESETS
    from cambrian.models.quantize import check_mode, quantize_model

    if dtype not in (None, "auto", *DTYPES):
        raise ValueError(f"dtype {dtype!r} is not supported; valid: {', '.join(DTYPES)}")
    if quantize is not None:
        check_mode(quantize)  # before the (possibly long) load
    torch_dtype = getattr(torch, dtype) if dtype in DTYPES else None
    if pretrained in PRESETS and not Path(pretrained).exists():
        model, processor = build_tiny(pretrained)
        model = model if torch_dtype is None else model.to(torch_dtype)
        return (model if quantize is None else quantize_model(model, quantize)), processor
    if not Path(pretrained).exists() and not allow_download:
        raise ValueError(
            f"{pretrained} is neither a model directory nor a preset id "
            f"({', '.join(PRESETS.names())}); allow downloads to fetch a hub id"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would mix into answers and progress bars
    kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
    paths = dict(tower_paths or {})
    model = CambrianForCausalLM.from_pretrained(
        pretrained, tower_paths=paths, allow_download=allow_download, **kwargs
    )
    model = model.eval() if quantize is None else quantize_model(model.eval(), quantize)
    return model, CambrianProcessor.from_pretrained(pretrained, tower_paths=paths)
