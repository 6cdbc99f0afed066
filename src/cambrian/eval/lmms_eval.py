"""An lmms-eval model adapter: run any lmms-eval task on a Cambrian model.

With the ``eval`` extra installed (``pip install 'cambrian[eval]'``), lmms-eval (>= 0.6) finds the model
through the ``lmms_eval.models`` entry-point group declared in our ``pyproject.toml``::

    lmms-eval --model cambrian --model_args pretrained=RUN/final --tasks mme --batch_size 8
    lmms-eval --model cambrian --model_args "pretrained=DIR,tower_paths=NAME=DIR;NAME2=DIR2,dtype=bfloat16" ...
    lmms-eval --model cambrian --model_args pretrained=tiny,random=True ...   # a preset: random weights

``pretrained`` is a model directory (ours or the released Cambrian-1 layout, loaded exactly like
``cambrian chat``) or, with ``random=True``, a preset id (random weights, to try it out; without it a
preset id is an error, so ``pretrained=cambrian-8b`` never quietly evaluates an untrained model). Other
``model_args``: ``tower_paths`` (``NAME=DIR`` pairs joined by
``;``: local weights for a released tower), ``dtype`` (``bfloat16``, ``float16``, ``float32``),
``device`` (default ``cuda`` when there is one), ``max_new_tokens`` (the default when a task sets none,
128) and ``allow_download`` (hub downloads; off by default). The batch size is lmms-eval's own
``--batch_size N``: its CLI always passes one, so a ``batch_size`` in ``model_args`` clashes with it.

``Cambrian`` is a "simple" lmms-eval model: each request's text is put in the model's own chat template
by ``CambrianProcessor.generate_replies``, after one ``<image>\\n`` per image of the document (unless the
text already has the placeholders). Requests are batched by their generation settings (greedy unless the
task asks for sampling); ``until`` stop strings cut the reply at the first one. Only generation is
supported: ``loglikelihood`` and multi-round tasks raise ``NotImplementedError``. One process only (no
``accelerate launch`` data parallelism).

lmms-eval is optional: without it this module still imports and ``generate_until`` works on any objects
whose ``.args`` have lmms-eval's layout ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``,
with documents in ``task_dict[task][split][doc_id]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cambrian.models.loading import load_model

try:  # lmms-eval is the optional `eval` extra; everything below also works without it
    from lmms_eval.api.model import lmms as _Base
except ImportError:  # pragma: no cover - depends on the environment

    class _Base:  # type: ignore[no-redef]
        """What lmms-eval's ``lmms`` base class provides, for use without lmms-eval."""

        is_simple = True

        def __init__(self) -> None:
            self._rank = 0
            self._world_size = 1
            self.task_dict: dict[str, Any] = {}
            self.cache_hook = _NoCache()

        @property
        def rank(self) -> int:
            return self._rank

        @property
        def world_size(self) -> int:
            return self._world_size

    class _NoCache:
        def add_partial(self, attr: str, req: Any, res: Any) -> None:
            pass


MODEL_ID = "cambrian"
# generate() options a task's generation_kwargs may set besides max_new_tokens/temperature/do_sample/until.
_PASSED_THROUGH = ("top_p", "top_k", "num_beams", "repetition_penalty", "length_penalty")
_SAMPLING_ONLY = ("top_p", "top_k")


def manifest():
    """The ``lmms_eval.models`` entry point: registers ``cambrian`` as a simple model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.Cambrian")


# How load_model's errors name the fixes: in model_args terms.
MODEL_ARGS_HINTS = {
    "random": "random=True",
    "download": "allow_download=True",
    "tower": "tower_paths={name}=DIR",
}


def _flag(value: bool | str) -> bool:
    """A boolean model_arg: lmms-eval passes True/False, a direct caller may pass "true"/"1"."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def parse_tower_paths(value: str | dict[str, str] | None) -> dict[str, str]:
    """``"NAME=DIR;NAME2=DIR2"`` (``model_args`` cannot hold commas) or a dict -> ``{name: dir}``."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    paths = {}
    for part in str(value).split(";"):
        name, sep, path = part.strip().partition("=")
        if not sep or not name or not path:
            raise ValueError(f"tower_paths entry {part!r} is not NAME=DIR (entries are joined by ';')")
        paths[name.strip()] = path.strip()
    return paths


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any non-empty stop string."""
    cut = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:cut]


def generation_settings(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> tuple[int, dict, list]:
    """(max_new_tokens, generate() kwargs, stop strings) from a task's ``generation_kwargs``.

    Sampling happens when ``do_sample`` is true (and ``temperature`` is not 0), or when ``do_sample`` is
    not given and ``temperature > 0``; everything else is greedy.
    """
    until = gen_kwargs.get("until") or []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, (list, tuple)) or not all(isinstance(s, str) for s in until):
        raise ValueError(f"generation_kwargs 'until' must be a string or a list of strings, got {until!r}")
    max_new_tokens = int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens)
    temperature = gen_kwargs.get("temperature")
    temperature = None if temperature is None else float(temperature)
    do_sample = gen_kwargs.get("do_sample")
    if do_sample is None:
        sample = temperature is not None and temperature > 0
    else:
        sample = bool(do_sample) and temperature != 0
    kwargs: dict[str, Any] = {"do_sample": sample}
    if sample and temperature is not None:
        kwargs["temperature"] = temperature
    for key in _PASSED_THROUGH:
        if gen_kwargs.get(key) is not None and (sample or key not in _SAMPLING_ONLY):
            kwargs[key] = gen_kwargs[key]
    return max_new_tokens, kwargs, list(until)


def _as_image(visual: Any, where: str):
    from PIL import Image

    from cambrian.utils.images import to_rgb

    if isinstance(visual, Image.Image):
        return to_rgb(visual, where)
    if isinstance(visual, (str, Path)) and Path(visual).is_file():
        try:
            with Image.open(visual) as im:
                return to_rgb(im, where)
        except OSError as e:  # PIL.UnidentifiedImageError is an OSError
            raise ValueError(f"{where}: {visual} is not an image Cambrian can read (video?): {e}") from e
    raise ValueError(f"{where}: Cambrian takes images only, got a {type(visual).__name__}: {visual!r:.80}")


class Cambrian(_Base):
    """lmms-eval model ``cambrian``: ``--model cambrian --model_args pretrained=DIR_OR_PRESET,...``."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "tiny",
        tower_paths: str | dict[str, str] | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 128,
        allow_download: bool = False,
        random: bool = False,
        max_batch_size: int | None = None,  # lmms-eval passes it; there is no automatic batch size here
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"unknown cambrian model_args: {', '.join(sorted(kwargs))}")
        import torch

        model, processor = load_model(
            str(pretrained), parse_tower_paths(tower_paths), allow_download, dtype, random_ok=_flag(random),
            hints=MODEL_ARGS_HINTS,
        )  # fmt: skip
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._setup(model, processor, batch_size, max_new_tokens, device)
        self.pretrained = str(pretrained)

    @classmethod
    def from_loaded(
        cls, model, processor, batch_size: int | str = 1, max_new_tokens: int = 128, device: str | None = None
    ) -> Cambrian:
        """The adapter around a model and processor already in memory (moved only when ``device`` is given)."""
        self = cls.__new__(cls)
        _Base.__init__(self)
        self._setup(model, processor, batch_size, max_new_tokens, device)
        self.pretrained = getattr(model, "name_or_path", "") or "in-memory"
        return self

    def _setup(self, model, processor, batch_size, max_new_tokens, device) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError(
                "the cambrian lmms-eval adapter runs in one process; start lmms-eval without "
                "accelerate/torchrun data parallelism (WORLD_SIZE > 1)"
            )
        try:
            self.batch_size = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}") from None
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.max_new_tokens = int(max_new_tokens)
        self.model = (model if device is None else model.to(device)).eval()
        self.processor = processor

    @property
    def device(self):
        return self.model.device

    # ------------------------------------------------------------------ lmms interface
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "the cambrian lmms-eval adapter only generates (generate_until); tasks scored by log-likelihood "
            "(output_type: loglikelihood / multiple_choice) are not supported: use a generation task"
        )

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            "the cambrian lmms-eval adapter does not support multi-round tasks (generate_until_multi_round)"
        )

    def generate_until(self, requests) -> list[str]:
        """One reply per request, in request order; requests with equal settings are batched together."""
        from tqdm import tqdm

        args = [r.args for r in requests]
        settings = [generation_settings(dict(a[1] or {}), self.max_new_tokens) for a in args]
        # Batch only requests that generate alike (stop strings are applied afterwards); longest first.
        keys = [json.dumps([n, kw], sort_keys=True, default=repr) for n, kw, _ in settings]
        order = sorted(range(len(args)), key=lambda i: (keys[i], -len(args[i][0])))
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and keys[batches[-1][0]] == keys[i]:
                batches[-1].append(i)
            else:
                batches.append([i])
        out: list[str | None] = [None] * len(args)
        bar = tqdm(total=len(args), desc="Model Responding", disable=self.rank != 0 or len(args) < 2)
        for batch in batches:
            conversations, images = [], []
            for i in batch:
                text, pics = self._prompt(*args[i][:6])
                conversations.append([{"role": "user", "content": text}])
                images.extend(pics)
            max_new_tokens, kwargs, _ = settings[batch[0]]
            replies = self.processor.generate_replies(
                self.model, conversations, images, max_new_tokens, **kwargs
            )
            for i, reply in zip(batch, replies):
                out[i] = cut_at_stops(reply, settings[i][2])
                self.cache_hook.add_partial("generate_until", (args[i][0], args[i][1]), out[i])
            bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ helpers
    def _prompt(
        self,
        context: str,
        gen_kwargs: Any,
        doc_to_visual: Callable | None,
        doc_id: Any,
        task: str,
        split: str,
    ) -> tuple[str, list]:
        """The user turn (``<image>\\n`` per image, then the context) and the document's images."""
        where = f"task {task!r} split {split!r} doc {doc_id}"
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else None
        if visuals is None:
            visuals = []
        elif not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        images = [_as_image(v, where) for v in visuals]
        token = self.processor.image_token
        n = context.count(token)
        if n == 0:
            return f"{token}\n" * len(images) + context, images
        if n != len(images):
            raise ValueError(f"{where}: the text has {n} {token} placeholders but {len(images)} images")
        return context, images
