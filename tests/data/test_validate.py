"""validate_file: every bad-row kind reported with its line and id, counts, threads, .json input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cambrian.data.index import IndexFormatError
from cambrian.data.validate import BadRow, validate_file


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMBRIAN_CACHE", str(tmp_path / "cache"))


def conv(*turns):
    return [{"from": f, "value": v} for f, v in turns]


GOOD_IMAGE = {
    "id": "good-1",
    "image": "img/a.png",
    "conversations": conv(("human", "<image>\nq"), ("gpt", "a")),
}
TEXT_ONLY = {"id": 2, "conversations": conv(("human", "hi"), ("gpt", "hello"))}
TWO_IMAGES = {
    "id": "two",
    "image": ["img/a.png", "img/b.jpg"],
    "conversations": conv(("human", "<image>\n<image>\nsame?"), ("gpt", "no")),
}


def lines_of_file(root):
    """(text line, expected BadRow or None) in file order."""
    return [
        (json.dumps(GOOD_IMAGE), None),
        (
            '{"id": "broken", "conversations": [}',
            BadRow(2, None, "bad JSON: Expecting value (column 36)", ("bad JSON",)),
        ),
        (json.dumps(TEXT_ONLY), None),
        ("", None),  # a blank line: not a row
        (
            json.dumps({"image": "img/a.png", "conversations": conv(("human", "<image>"), ("gpt", "x"))}),
            BadRow(5, None, "missing 'id'", ("bad id",)),
        ),
        (
            json.dumps({"id": "role", "conversations": conv(("user", "hi"), ("gpt", "x"))}),
            BadRow(6, "role", "turn 0: 'from' is 'user'; valid: human, gpt, system", ("bad role",)),
        ),
        (
            json.dumps(
                {**TWO_IMAGES, "id": "mismatch", "conversations": conv(("human", "<image>"), ("gpt", "x"))}
            ),
            BadRow(
                7,
                "mismatch",
                "2 images but 1 <image> placeholder in the human turns",
                ("image/placeholder mismatch",),
            ),
        ),
        (
            json.dumps({**GOOD_IMAGE, "id": "gone", "image": "img/missing.png"}),
            BadRow(8, "gone", f"missing image 'img/missing.png' (looked under {root})", ("missing image",)),
        ),
        (json.dumps({**GOOD_IMAGE, "id": "corrupt", "image": "img/corrupt.png"}), "unreadable"),
        (json.dumps(TWO_IMAGES), None),
        ("[1, 2]", BadRow(11, None, "not a JSON object (got array)", ("not an object",))),
        (
            json.dumps({"id": 12, "conversations": conv(("human", "q"))}),
            BadRow(12, 12, "no 'gpt' turn (nothing to learn from)", ("no gpt turn",)),
        ),
    ]


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "img" / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "img" / "b.jpg")
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    spec = lines_of_file(tmp_path)
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(text for text, _ in spec) + "\n")
    return p, spec


@pytest.mark.parametrize("workers", [1, 3])
def test_every_bad_row_kind(dataset, workers):
    path, spec = dataset
    report = validate_file(path, workers=workers)  # images resolve under the data file's directory
    expected = [b for _, b in spec if b is not None]
    assert len(report.bad) == len(expected) == report.n_bad == 8
    for got, want in zip(report.bad, expected):
        if want == "unreadable":
            assert (got.line, got.id, got.kinds) == (9, "corrupt", ("unreadable image",))
            assert got.reason.startswith("unreadable image 'img/corrupt.png': ")
        else:
            assert got == want
    assert not report.ok and report.rows == 11 and report.n_ok == 3
    assert report.by_kind == {
        "bad JSON": 1,
        "bad id": 1,
        "bad role": 1,
        "image/placeholder mismatch": 1,
        "missing image": 1,
        "unreadable image": 1,
        "not an object": 1,
        "no gpt turn": 1,
    }
    # Rows whose image field could be read: 3 text-only (TEXT_ONLY, "role", 12), 6 with images.
    assert (report.text_only, report.image_rows, report.images) == (3, 6, 8)
    text = report.format(limit=2)
    assert text.splitlines()[0] == f"{path}:2: id=?: bad JSON: Expecting value (column 36)"
    assert text.splitlines()[1] == f"{path}:5: id=?: missing 'id'"
    assert "... and 6 more bad rows" in text and "bad: 8" in text
    d = report.to_dict()
    assert d["n_bad"] == 8 and d["bad"][2] == {
        "line": 6,
        "id": "role",
        "reason": "turn 0: 'from' is 'user'; valid: human, gpt, system",
        "kinds": ["bad role"],
    }
    json.dumps(d)


def test_options(dataset, tmp_path):
    path, _ = dataset
    capped = validate_file(path, max_report=2)
    assert capped.n_bad == 8 and len(capped.bad) == 2 and capped.unreported == 6
    no_files = validate_file(path, check_images=False)
    assert no_files.n_bad == 6 and "missing image" not in no_files.by_kind
    elsewhere = validate_file(path, image_root=tmp_path / "nowhere")
    assert elsewhere.by_kind["missing image"] == 8  # each of the 8 images named by rows that parse


def test_clean_json_array_and_multiple_problems(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "b.jpg")
    p = tmp_path / "data.json"
    p.write_text(json.dumps([GOOD_IMAGE, TEXT_ONLY, TWO_IMAGES], indent=2))
    report = validate_file(p, image_root=tmp_path, progress=True)
    assert report.ok and report.rows == 3 and report.bad == [] and report.images == 3
    assert "bad: 0" in report.format()

    bad = {"id": 5.5, "image": "img/zz.png", "conversations": conv(("robot", "x"))}
    p.write_text(json.dumps([TEXT_ONLY, bad], indent=2))
    (b,) = validate_file(p).bad
    assert b.line == 15 and b.id is None  # the line where the second object starts
    assert b.kinds == ("bad id", "bad role", "no gpt turn", "image/placeholder mismatch", "missing image")
    assert b.reason.startswith("'id' must be a string or integer, got float; turn 0: 'from' is 'robot'")


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "nope.jsonl")
    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(IndexFormatError, match=r"name it \.jsonl"):
        validate_file(tmp_path / "obj.json")
