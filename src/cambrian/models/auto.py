"""Cambrian in transformers' Auto classes, and the ``auto_map`` files of saved models and processors.

``register_auto_classes`` registers ``CambrianConfig`` (model type ``cambrian``) with ``AutoConfig``,
``CambrianForCausalLM`` with ``AutoModelForCausalLM`` and ``AutoModelForImageTextToText``,
``CambrianImageProcessor`` with ``AutoImageProcessor`` and ``CambrianProcessor`` with ``AutoProcessor``.
It runs when any of those modules is imported, and ``import cambrian`` arranges for it to run as soon as
transformers' Auto classes are imported (without importing torch itself, so ``cambrian data ...`` stays
fast); it is idempotent.

Saved configs and processor configs also carry ``auto_map`` entries, and ``write_remote_code_files``
puts one small module next to them per ``auto_map`` target (``configuration_cambrian.py``,
``modeling_cambrian.py``, ``image_processing_cambrian.py``, ``processing_cambrian.py``: transformers' file
names) that imports the classes from the installed ``cambrian`` package. So tools that load with
``trust_remote_code=True`` and never import ``cambrian`` (vLLM, lmms-eval, plain transformers scripts) get
the very same classes, and the directory never holds a stale copy of the model code.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_cambrian.CambrianConfig",
    "AutoModelForCausalLM": "modeling_cambrian.CambrianForCausalLM",
    "AutoModelForImageTextToText": "modeling_cambrian.CambrianForCausalLM",
    "AutoProcessor": "processing_cambrian.CambrianProcessor",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_cambrian.CambrianProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_cambrian.CambrianImageProcessor"}

# file name -> (module of the installed package, classes it re-exports). processing_cambrian.py still
# exports CambrianImageProcessor: processor configs saved before the image processor had its own module
# map AutoImageProcessor to "processing_cambrian.CambrianImageProcessor".
REMOTE_CODE_FILES = {
    "configuration_cambrian.py": ("cambrian.models.configuration_cambrian", ("CambrianConfig",)),
    "modeling_cambrian.py": ("cambrian.models.modeling_cambrian", ("CambrianForCausalLM",)),
    "image_processing_cambrian.py": (
        "cambrian.models.image_processing_cambrian",
        ("CambrianImageProcessor",),
    ),
    "processing_cambrian.py": (
        "cambrian.models.processing_cambrian",
        ("CambrianImageProcessor", "CambrianProcessor"),
    ),
}


def write_remote_code_files(directory: str | os.PathLike) -> list[Path]:
    """Write the ``auto_map`` modules (``REMOTE_CODE_FILES``) into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (module, classes) in REMOTE_CODE_FILES.items():
        text = (
            '"""Written by cambrian: lets trust_remote_code loaders find the installed Cambrian classes."""\n\n'
            f"from {module} import {', '.join(classes)}\n\n"
            f"__all__ = {list(classes)!r}\n"
        )
        (directory / name).write_text(text)
        written.append(directory / name)
    return written


# The modules that define the registered classes; each calls ``register_auto_classes`` last.
_CLASS_MODULES = (
    "cambrian.models.configuration_cambrian",
    "cambrian.models.modeling_cambrian",
    "cambrian.models.image_processing_cambrian",
    "cambrian.models.processing_cambrian",
)


def _initializing(module: str) -> bool:
    """Whether ``module`` is being imported right now (in ``sys.modules`` but not done yet)."""
    mod = sys.modules.get(module)
    return bool(getattr(getattr(mod, "__spec__", None), "_initializing", False))


def _defined(module: str, name: str):
    """``module.name``, or None while ``module`` is still being imported and has not defined it yet (it
    registers itself at its end: each Cambrian module calls ``register_auto_classes`` last)."""
    mod = importlib.import_module(module)
    value = getattr(mod, name, None)
    if value is None and not _initializing(module):
        raise ImportError(f"{module} has no {name}")
    return value


def register_auto_classes() -> None:
    """Register the Cambrian classes with transformers' Auto classes (idempotent; the classes of a module
    that is still being imported are skipped, that module registers them when it is done)."""
    try:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
        )
    except ImportError:
        # ``import cambrian``'s hook can fire while transformers is itself half imported (e.g. a Cambrian
        # module's first transformers import is ``image_processing_utils``, whose ``processing_utils`` loads
        # the Auto classes midway). That Cambrian module registers everything when it is done.
        if any(_initializing(m) for m in _CLASS_MODULES):
            return
        raise

    config = _defined("cambrian.models.configuration_cambrian", "CambrianConfig")
    if config is None:
        return
    AutoConfig.register("cambrian", config, exist_ok=True)
    model = _defined("cambrian.models.modeling_cambrian", "CambrianForCausalLM")
    if model is not None:
        AutoModelForCausalLM.register(config, model, exist_ok=True)
        AutoModelForImageTextToText.register(config, model, exist_ok=True)
    image_processor = _defined("cambrian.models.image_processing_cambrian", "CambrianImageProcessor")
    processor = _defined("cambrian.models.processing_cambrian", "CambrianProcessor")
    if image_processor is not None:
        # One class serves both backends (it works on PIL images), so no backend falls back with a warning.
        AutoImageProcessor.register(
            config,
            image_processor_classes={"pil": image_processor, "torchvision": image_processor},
            exist_ok=True,
        )
    if processor is not None:
        AutoProcessor.register(config, processor, exist_ok=True)
