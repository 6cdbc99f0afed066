"""check_row and row_images: every problem kind of a LLaVA/Cambrian row, with real image files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from cambrian.data.records import Problem, check_row, row_images
from cambrian.utils import images as images_module


@pytest.fixture
def root(tmp_path):
    Image.new("RGB", (8, 6), "red").save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "sub" / "b.jpg")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    return tmp_path


def conv(*turns):
    return [{"from": f, "value": v} for f, v in turns]


def row(**kw):
    r = {"id": "r1", "conversations": conv(("human", "<image>\nWhat?"), ("gpt", "A square."))}
    r.update(kw)
    return r


def kinds(problems):
    return [p.kind for p in problems]


def test_row_images():
    assert row_images({"image": "a.png"}) == ["a.png"]
    assert row_images({"image": ["a.png", "b.png"]}) == ["a.png", "b.png"]
    assert row_images({}) == [] and row_images({"image": None}) == [] and row_images({"image": []}) == []
    for bad in (3, "", ["a.png", 2], {"path": "a.png"}, [""]):
        with pytest.raises(ValueError, match="'image' must be a path string or a list"):
            row_images({"image": bad})


def test_good_rows(root):
    assert check_row(row(image="a.png"), root) == []
    text_only = {"id": 7, "conversations": conv(("human", "Hi"), ("gpt", "Hello"))}
    assert check_row(text_only, root) == []
    assert (
        check_row({**text_only, "image": None}, root) == []
        and check_row({**text_only, "image": []}, root) == []
    )
    two = row(
        image=["a.png", "sub/b.jpg"],
        system="Be brief.",
        conversations=conv(("system", "sys"), ("human", "<image> <image> compare"), ("gpt", "same")),
    )
    assert check_row(two, root) == []
    multi_turn = row(
        image=["a.png", "sub/b.jpg"],
        conversations=conv(("human", "<image>\nq1"), ("gpt", "a1"), ("human", "<image>\nq2"), ("gpt", "a2")),
    )
    assert check_row(multi_turn, root) == []


def test_structure_problems():
    assert check_row([1, 2], None) == ["row is not a JSON object (got list)"]
    assert kinds(check_row([1], None)) == ["not an object"]
    assert check_row(row(image="a.png", id=None), None, check_images=False) == [
        "'id' must be a string or integer, got null"
    ]
    r = row()
    del r["id"]
    assert check_row({**r, "image": "a.png"}, None) == ["missing 'id'"]
    assert kinds(check_row(row(image="a.png", id=True), None)) == ["bad id"]
    assert check_row({"id": 1}, None) == ["missing 'conversations'"]
    assert check_row({"id": 1, "conversations": {}}, None) == [
        "'conversations' must be a list of turns, got object"
    ]
    assert check_row({"id": 1, "conversations": []}, None) == ["'conversations' is empty"]
    assert kinds(check_row(row(system=3), None)) == ["bad system", "image/placeholder mismatch"]


def test_turn_problems():
    p = check_row(
        {"id": 1, "conversations": [{"from": "user", "value": "hi"}, {"from": "gpt", "value": "ok"}]}, None
    )
    assert p == ["turn 0: 'from' is 'user'; valid: human, gpt, system"] and kinds(p) == ["bad role"]
    p = check_row({"id": 1, "conversations": [{"value": "hi"}, {"from": "gpt"}, "x"]}, None)
    assert p == [
        "turn 0 has no 'from' (valid: human, gpt, system)",
        "turn 1 has no 'value'",
        "turn 2 is not an object (got string)",
    ]
    p = check_row({"id": 1, "conversations": conv(("human", "hi"), ("gpt", None))}, None)
    assert p == ["turn 1: 'value' must be a string, got null"]
    p = check_row({"id": 1, "conversations": conv(("human", "hi"), ("human", "again"))}, None)
    assert p == [
        "turn 1 is from 'human' but 'gpt' was expected: conversations must alternate human/gpt, "
        "starting with human",
        "no 'gpt' turn (nothing to learn from)",
    ]
    assert kinds(p) == ["bad turn order", "no gpt turn"]


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        (
            [("gpt", "a"), ("human", "q")],
            "turn 0 is from 'gpt' but 'human' was expected: conversations must alternate human/gpt, "
            "starting with human",
        ),
        (
            [("human", "q"), ("system", "s"), ("gpt", "a")],
            "turn 1 is a system message; a system message is only allowed as the first message",
        ),
        (
            [("system", "s"), ("human", "q"), ("gpt", "a"), ("gpt", "b")],
            "turn 3 is from 'gpt' but 'human' was expected: conversations must alternate human/gpt, "
            "starting with human",
        ),
        ([("system", "s")], "the conversation has no user or assistant messages"),
    ],
)
def test_turn_order(turns, message):
    p = check_row({"id": 1, "conversations": conv(*turns)}, None)
    assert p[0] == message and p[0].kind == "bad turn order"


def test_system_field():
    text = {"id": 1, "conversations": conv(("human", "Hi"), ("gpt", "Hello"))}
    assert check_row({**text, "system": None}, None) == []  # optional: null means none
    assert check_row({**text, "system": 3}, None) == ["'system' must be a string or null, got int"]
    assert check_row({**text, "system": "see <image>"}, None) == [
        "'system' contains <image>; placeholders belong in human turns"
    ]


def test_placeholder_image_mismatch():
    p = check_row(row(image=["a.png", "b.png"]), None)
    assert p == ["2 images but 1 <image> placeholder in the human turns"]
    assert kinds(p) == ["image/placeholder mismatch"]
    no_placeholder = row(image="a.png", conversations=conv(("human", "What?"), ("gpt", "x")))
    assert check_row(no_placeholder, None) == ["1 image but 0 <image> placeholders in the human turns"]
    assert check_row(row(), None) == ["0 images but 1 <image> placeholder in the human turns"]
    in_gpt = row(image="a.png", conversations=conv(("human", "<image>\nq"), ("gpt", "see <image>")))
    assert check_row(in_gpt, None) == ["turn 1 (gpt) contains <image>; placeholders belong in human turns"]
    custom = row(image="a.png", conversations=conv(("human", "<img>\nq"), ("gpt", "x")))
    assert check_row(custom, None, image_token="<img>") == []
    p = check_row(row(image=5), None)
    assert kinds(p) == ["bad image field"] and "got number" not in p[0] and "got int 5" in p[0]


def test_image_files(root):
    p = check_row(row(image="missing/c.png"), root)
    assert p == [f"missing image 'missing/c.png' (looked under {root})"] and kinds(p) == ["missing image"]
    for name in ("corrupt.png", "text.png"):
        p = check_row(row(image=name), root)
        assert kinds(p) == ["unreadable image"] and p[0].startswith(f"unreadable image '{name}': ")
        assert str(root) not in p[0]  # the path is shown relative to the root
    assert kinds(check_row(row(image="corrupt.png"), root, decode=True)) == ["unreadable image"]
    # Files are not looked at without a root or with check_images=False.
    assert check_row(row(image="missing/c.png"), None) == []
    assert check_row(row(image="missing/c.png"), root, check_images=False) == []
    two = row(image=["a.png", "nope.png"], conversations=conv(("human", "<image><image>"), ("gpt", "x")))
    assert kinds(check_row(two, root)) == ["missing image"]


def test_problem_is_a_str_with_a_kind():
    p = Problem("bad id", "missing 'id'")
    assert p == "missing 'id'" and isinstance(p, str) and p.kind == "bad id"
    q = pickle.loads(pickle.dumps(p))
    assert (q, q.kind) == (p, "bad id")


def test_image_modes(root, monkeypatch):
    Image.fromarray(np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).save(root / "deep.png")
    deep = row(image="deep.png")
    assert check_row(deep, root) == [] and check_row(deep, root, decode=True) == []  # 16-bit is supported
    # A mode the conversion does not handle is flagged from the header (and by the full decode).
    monkeypatch.setattr(images_module, "SUPPORTED_MODES", images_module.SUPPORTED_MODES - {"I;16"})
    for decode in (False, True):
        p = check_row(deep, root, decode=decode)
        assert kinds(p) == ["unsupported image mode"]
        assert p[0].startswith(
            "image 'deep.png': unsupported image mode 'I;16'; supported: 1, CMYK, F, HSV, I,"
        )
