"""Shared fixtures of the serving tests: one tiny model, servers on loopback, images as data URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from cambrian import build_tiny


@pytest.fixture(scope="session")
def tiny():
    """(model, processor): the tiny preset, random weights, seed 3."""
    return build_tiny("tiny", seed=3)


def png_bytes(size=(40, 30), colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture
def server(tiny) -> Iterator:
    """A factory: ``server(**settings) -> (base_url, engine)``; all stopped after the test."""
    from contextlib import ExitStack

    from cambrian.serve.app import ServeSettings, create_app
    from cambrian.serve.engine import Engine
    from cambrian.serve.server import background

    stack = ExitStack()

    def start(max_batch: int = 8, max_queue: int = 64, batch_wait: float = 0.002, **settings):
        engine = Engine(*tiny, max_batch=max_batch, max_queue=max_queue, batch_wait=batch_wait)
        stack.callback(engine.close)
        url = stack.enter_context(background(create_app(engine, ServeSettings(**settings))))
        return url, engine

    with stack:
        yield start
