"""cambrian: Cambrian-1 multimodal LLMs (several vision towers + Spatial Vision Aggregator + any LLM).

Public API:
    CambrianConfig, CambrianForCausalLM, CambrianProcessor   (registered with the Auto classes)
    PRESETS, preset_config, build_tiny                         named model presets

The names load on first use (PEP 562), so ``import cambrian`` and the data commands (``cambrian data
...``) do not pay for torch and transformers. The Auto classes (``AutoConfig``, ``AutoModelForCausalLM``,
``AutoModelForImageTextToText``, ``AutoImageProcessor``, ``AutoProcessor``) know the Cambrian classes
once ``cambrian`` is imported: right away when transformers' Auto classes are already loaded, otherwise
as soon as they are (an import hook; see ``cambrian.models.auto``). Importing any Cambrian model module
registers them too, and ``register_auto_classes()`` does it explicitly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CambrianConfig": "cambrian.models.configuration_cambrian",
    "CambrianForCausalLM": "cambrian.models.modeling_cambrian",
    "CambrianProcessor": "cambrian.models.processing_cambrian",
    "PRESETS": "cambrian.models.presets",
    "preset_config": "cambrian.models.presets",
    "register_auto_classes": "cambrian.models.auto",
}

if TYPE_CHECKING:
    from cambrian.models.auto import register_auto_classes
    from cambrian.models.configuration_cambrian import CambrianConfig
    from cambrian.models.modeling_cambrian import CambrianForCausalLM
    from cambrian.models.presets import PRESETS, preset_config
    from cambrian.models.processing_cambrian import CambrianProcessor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        importlib.import_module("cambrian.models.modeling_cambrian")  # registers the Auto classes
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cambrian' has no attribute {name!r}")


_AUTO_MODULE = "transformers.models.auto"  # where transformers' Auto classes and their registries live


def _register_auto_classes_now() -> None:
    try:
        importlib.import_module("cambrian.models.auto").register_auto_classes()
    except Exception as e:  # never break the user's transformers import; the model modules register too
        warnings.warn(f"cambrian could not register its Auto classes: {e!r}", RuntimeWarning, stacklevel=2)


class _RegisterAfterImport(importlib.abc.Loader):
    """Runs the real loader of ``transformers.models.auto``, then registers the Cambrian classes."""

    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _register_auto_classes_now()


class _AutoRegistrationHook(importlib.abc.MetaPathFinder):
    """Registers the Cambrian Auto classes right after transformers imports its Auto classes, so that
    ``import cambrian`` is enough for ``AutoModelForCausalLM.from_pretrained(dir)`` without importing
    torch and transformers at ``import cambrian`` time. Removes itself on first use."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _AUTO_MODULE:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfterImport(spec.loader)
                return spec
        return None


def _install_auto_registration() -> None:
    if _AUTO_MODULE in sys.modules:
        _register_auto_classes_now()
    elif not any(type(f).__name__ == "_AutoRegistrationHook" for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoRegistrationHook())


_install_auto_registration()


def build_tiny(preset: str = "tiny", seed: int = 0) -> tuple[CambrianForCausalLM, CambrianProcessor]:
    """A tiny randomly initialised model and its processor (tiny in-process tokenizer); no I/O."""
    import torch

    from cambrian.models.modeling_cambrian import CambrianForCausalLM
    from cambrian.models.presets import preset_config
    from cambrian.models.processing_cambrian import CambrianProcessor
    from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

    config = preset_config(preset)
    processor = CambrianProcessor.from_config(config, build_tiny_tokenizer())
    torch.manual_seed(seed)
    model = CambrianForCausalLM(config).eval()
    return model, processor


__all__ = [
    "PRESETS",
    "CambrianConfig",
    "CambrianForCausalLM",
    "CambrianProcessor",
    "build_tiny",
    "preset_config",
    "register_auto_classes",
]
__version__ = "0.1.0"
