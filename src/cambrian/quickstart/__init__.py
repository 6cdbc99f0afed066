"""`make quickstart` and everything only it needs: synthetic scenes, a tiny in-process tokenizer, the demo.

Nothing here is needed to train, run or evaluate a real Cambrian: it exists so the whole pipeline runs on a
machine with no weights, no GPU and no internet. The modules, lowest first:

- ``scenes``: scene settings, the camera and the scene/object records of the synthetic data;
- ``render``: images, per-pixel labels and per-cell dense targets of a scene;
- ``sampling``: objects placed in cells, random scenes;
- ``questions``: captions, CV-Bench-style questions, their answers and rationales;
- ``dataset``: the files the quickstart trains and evaluates on (``generate``) and their text;
- ``report``: the quickstart's tables, verdict, chat example and figures;
- ``run``: the quickstart itself (``QuickstartConfig``, ``model_config``, ``run_quickstart``);
- ``tiny_tokenizer`` and ``demo``: the in-process tokenizer and the pre-training demo.

The names below load lazily so that importing one piece (say ``cambrian.quickstart.tiny_tokenizer`` from
a test) does not import the training stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QuickstartConfig", "model_config", "run_quickstart"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cambrian.quickstart import run

        return getattr(run, name)
    raise AttributeError(f"module 'cambrian.quickstart' has no attribute {name!r}")
