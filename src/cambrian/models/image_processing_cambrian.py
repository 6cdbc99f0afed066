"""`CambrianImageProcessor`: every vision tower's image preprocessing as one Hugging Face image processor.

The image half of ``CambrianProcessor`` (``cambrian.models.processing_cambrian``), laid out as in
transformers (``image_processing_<model>.py``). It is registered with ``AutoImageProcessor`` and saved
inside ``processor_config.json`` with an ``auto_map`` entry pointing at this module's remote-code file
(``cambrian.models.auto``). ``flatten_images`` and ``load_images`` are shared with the processor, which
accepts the same image arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from cambrian.models.auto import IMAGE_PROCESSOR_AUTO_MAP, register_auto_classes
from cambrian.models.vision.base import ImagePreprocessor

_TOWER_FIELDS = ("image_size", "image_mean", "image_std", "pad_fill")
# Standard image kwargs that change nothing here (every image is converted to RGB anyway).
_NEUTRAL_IMAGE_KWARGS = {"do_convert_rgb": True}


def flatten_images(images: Any) -> list[Image.Image]:
    """``images`` as one flat list: None, one image, a flat list over the batch, or one list per sample
    (a None entry stands for a sample without images). Anything but PIL images is a TypeError."""
    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    out: list[Image.Image] = []
    for item in images:
        if isinstance(item, Image.Image):
            out.append(item)
        elif item is None:
            continue
        elif isinstance(item, (list, tuple)):
            out.extend(item)
        else:
            out.append(item)
    bad = [type(x).__name__ for x in out if not isinstance(x, Image.Image)]
    if bad:
        raise TypeError(f"images must be PIL images (got {', '.join(sorted(set(bad)))})")
    return out


def load_images(images: Any) -> Any:
    """``images`` with every path or URL string replaced by its image (transformers' ``load_image``),
    nesting kept."""
    if isinstance(images, str):
        from transformers.image_utils import load_image

        return load_image(images)
    if isinstance(images, (list, tuple)):
        return [load_images(x) for x in images]
    return images


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


class CambrianImageProcessor(BaseImageProcessor):
    """Every tower's image preprocessing as one Hugging Face image processor.

    ``towers`` holds one dict per vision tower (``image_size``, ``image_mean``, ``image_std``,
    ``pad_fill``); each image is padded to a square with the tower's fill colour, resized (bicubic) to
    its size and normalised, exactly as ``ImagePreprocessor``. Returns ``pixel_values`` (a list: one
    (B_img, 3, R_i, R_i) float32 tensor per tower) and ``image_sizes`` (B_img, 2) long as (w, h).
    The standard resize / crop / normalise kwargs are not supported (each tower fixes its own).
    """

    model_input_names = ["pixel_values", "image_sizes"]  # noqa: RUF012 (Hugging Face convention)

    def __init__(self, towers: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.towers = []
        for i, t in enumerate(towers or []):
            missing = [k for k in _TOWER_FIELDS if k not in t]
            if missing:
                raise ValueError(f"towers[{i}] lacks {', '.join(missing)}; each tower needs {_TOWER_FIELDS}")
            self.towers.append(
                {
                    "image_size": int(t["image_size"]),
                    "image_mean": [float(x) for x in t["image_mean"]],
                    "image_std": [float(x) for x in t["image_std"]],
                    "pad_fill": [int(x) for x in t["pad_fill"]],
                }
            )

    @classmethod
    def from_preprocessors(cls, preprocessors: Sequence[ImagePreprocessor]) -> CambrianImageProcessor:
        return cls([dataclasses.asdict(p) for p in preprocessors])

    @property
    def preprocessors(self) -> list[ImagePreprocessor]:
        """One ``ImagePreprocessor`` per tower, in tower order."""
        return [
            ImagePreprocessor(
                t["image_size"], tuple(t["image_mean"]), tuple(t["image_std"]), tuple(t["pad_fill"])
            )
            for t in self.towers
        ]

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        unsupported = sorted(
            k for k, v in kwargs.items() if v is not None and _NEUTRAL_IMAGE_KWARGS.get(k, object()) != v
        )
        if unsupported:
            raise ValueError(
                f"CambrianImageProcessor does not take {', '.join(unsupported)}: each tower fixes its own "
                "image size, padding and normalisation"
            )
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; valid: 'pt', 'np', None")
        flat = flatten_images(load_images(images))
        sizes = torch.tensor([im.size for im in flat], dtype=torch.long).reshape(-1, 2)  # (B_img, 2) (w, h)
        pixel_values = [
            torch.stack([p(im) for im in flat]) if flat else torch.zeros(0, 3, p.image_size, p.image_size)
            for p in self.preprocessors
        ]
        data: dict[str, Any] = {"pixel_values": pixel_values, "image_sizes": sizes}
        if return_tensors == "np":
            data = {k: _to_numpy(v) for k, v in data.items()}
        return BatchFeature(data=data)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["auto_map"] = {**(d.get("auto_map") or {}), **IMAGE_PROCESSOR_AUTO_MAP}
        return d


register_auto_classes()  # last: the class above must exist (see ``cambrian.models.auto``)
