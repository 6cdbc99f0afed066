"""`cambrian data validate` and the training dataset accept exactly the same rows (both directions).

One JSONL file mixes good rows with every kind of row the trainer used to reject after validate passed it
(turns that do not alternate, gpt first, a system turn in the middle, ...) plus image problems (truncated
JPEG, 16-bit PNG). The validator's bad lines and the dataset's skipped rows must be the same set, with the
same reasons for row-structure problems, and the expected bad rows must really be bad.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cambrian import build_tiny
from cambrian.cli import app
from cambrian.data.dataset import ListRows, Skipped, SupervisedDataset
from cambrian.data.index import RowIndex
from cambrian.data.validate import validate_file
from cambrian.quickstart.demo import demo_image


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMBRIAN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def processor():
    return build_tiny("tiny", seed=0)[1]


def conv(*turns):
    return [{"from": f, "value": v} for f, v in turns]


Q, A = ("human", "Which shape?"), ("gpt", "A cube.")
IMG_Q = ("human", "<image>\nWhich shape?")
# id -> (row without id, expected to be rejected by both)
ROWS = {
    "text": ({"conversations": conv(Q, A)}, False),
    "image": ({"image": "a.png", "conversations": conv(IMG_Q, A)}, False),
    "multi-turn": ({"image": "a.png", "conversations": conv(IMG_Q, A, Q, A)}, False),
    "ends on human": ({"conversations": conv(Q, A, Q)}, False),
    "leading system": ({"conversations": conv(("system", "Be brief."), Q, A)}, False),
    "system null": ({"system": None, "conversations": conv(Q, A)}, False),
    "16-bit png": ({"image": "deep.png", "conversations": conv(IMG_Q, A)}, False),
    "gpt first": ({"conversations": conv(A, Q)}, True),
    "gpt first then more": ({"conversations": conv(A, Q, A)}, True),
    "two humans": ({"conversations": conv(Q, Q, A)}, True),
    "two gpts": ({"conversations": conv(Q, A, A)}, True),
    "system in the middle": ({"conversations": conv(Q, ("system", "Now be verbose."), A)}, True),
    "only system": ({"conversations": conv(("system", "S"))}, True),
    "no gpt": ({"conversations": conv(Q)}, True),
    "user role": ({"conversations": [{"from": "user", "value": "q"}, {"from": "gpt", "value": "a"}]}, True),
    "placeholder in gpt": ({"image": "a.png", "conversations": conv(IMG_Q, ("gpt", "<image>"))}, True),
    "placeholder in system field": (
        {"image": "a.png", "system": "<image>", "conversations": conv(Q, A)},
        True,
    ),
    "missing image": ({"image": "gone.png", "conversations": conv(IMG_Q, A)}, True),
    "truncated jpeg": ({"image": "cut.jpg", "conversations": conv(IMG_Q, A)}, True),
    "not an image": ({"image": "text.png", "conversations": conv(IMG_Q, A)}, True),
    "no conversations": ({}, True),
}


@pytest.fixture
def data(tmp_path):
    demo_image(40, 32, seed=1).save(tmp_path / "a.png")
    deep = np.asarray(demo_image(24, 20, seed=2).convert("L")).astype(np.uint16) * 257  # (H, W) uint16
    Image.fromarray(deep).save(tmp_path / "deep.png")
    buf = io.BytesIO()
    demo_image(48, 40, seed=3).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:-200])  # passes PIL's verify(), fails decoding
    (tmp_path / "text.png").write_text("hello")
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": rid, **row}) + "\n" for rid, (row, _) in ROWS.items()))
    return path


def test_validate_and_training_reject_the_same_rows(data, processor):
    expected_bad = {rid for rid, (_, bad) in ROWS.items() if bad}
    report = validate_file(data, decode=True)  # what `cambrian data validate` runs by default
    by_validate = {b.id: b.reason for b in report.bad}
    with RowIndex.open(data) as rows:
        ds = SupervisedDataset(rows, processor, image_root=data.parent)
        got = {rows.row(i)["id"]: ds[i] for i in range(len(rows))}
    by_training = {rid: ex.reason for rid, ex in got.items() if isinstance(ex, Skipped)}
    assert set(by_validate) == expected_bad
    assert set(by_training) == expected_bad
    # Row-structure problems read the same in both (image problems name the file differently).
    for rid in expected_bad - {"missing image", "truncated jpeg", "not an image"}:
        assert by_training[rid] == by_validate[rid], rid
    assert by_validate["gpt first"] == (
        "turn 0 is from 'gpt' but 'human' was expected: conversations must alternate human/gpt, starting with human"
    )
    assert by_validate["system in the middle"].startswith(
        "turn 1 is a system message; a system message is only allowed as the first message"
    )
    # The accepted rows really train: labels on the reply, images as tensors.
    for rid in set(ROWS) - expected_bad:
        assert (got[rid]["labels"] != -100).any(), rid
    assert torch.isfinite(got["16-bit png"]["pixel_values"][0]).all()


def test_16bit_png_trains_like_its_8bit_original(data, processor, tmp_path):
    """The 16-bit file holds 257 * p of an 8-bit picture p: the towers must see p, not a white square."""
    with Image.open(data.parent / "deep.png") as im:
        assert im.mode == "I;16"
        eight = (np.asarray(im).astype(np.uint32) // 257).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    row = {"id": "x", "conversations": conv(IMG_Q, A)}
    rows = ListRows([{**row, "image": "deep.png"}, {**row, "image": "eight.png"}])
    ds = SupervisedDataset(rows, processor, image_root=tmp_path)
    a, b = ds[0], ds[1]
    for ta, tb in zip(a["pixel_values"], b["pixel_values"]):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)


def test_cli_validate_decodes_by_default(data):
    runner = CliRunner()
    full = runner.invoke(app, ["data", "validate", str(data), "--workers", "1", "--limit", "100"])
    assert full.exit_code == 1
    assert "id=truncated jpeg: image 'cut.jpg': unreadable image (" in full.output
    assert "id=16-bit png" not in full.output
    quick = runner.invoke(app, ["data", "validate", str(data), "--no-decode", "--limit", "100"])
    assert quick.exit_code == 1 and "id=truncated jpeg" not in quick.output  # headers alone look fine
    assert "id=gpt first: turn 0 is from 'gpt'" in quick.output
