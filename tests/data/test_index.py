"""RowIndex: offsets of JSONL lines and .json array elements, reuse and rebuild, fork safety, errors."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import random

import numpy as np
import pytest

from cambrian.data.index import IndexFormatError, RowError, RowIndex, default_cache_dir

CHUNKS = [1, 2, 3, 7, 64, 1 << 20]  # tiny chunks make rows straddle every read boundary


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMBRIAN_CACHE", str(tmp_path / "cache"))


def _row(i, image=None, text="hi"):
    r = {"id": i, "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "ok"}]}
    if image is not None:
        r["image"] = image
    return r


def _rows_of(idx):
    return [idx.row(i) for i in range(len(idx))]


def _line_starts(data: bytes, idx) -> list[int]:
    """Reference line numbers: count newlines before each recorded offset."""
    return [data.count(b"\n", 0, int(o)) + 1 for o in idx._offsets[:-1]]


# ---------------------------------------------------------------------------------------------- JSONL


def test_jsonl_blank_lines_crlf_no_trailing_newline_unicode(tmp_path):
    rows = [_row(0, "a.png"), _row("δ-1", text='héllo 😀 "quoted" {brace}'), _row(2, ["a.png", "b.png"])]
    body = (
        json.dumps(rows[0])
        + "\r\n\r\n   \t\r\n"
        + json.dumps(rows[1], ensure_ascii=False)
        + "\n\n"
        + json.dumps(rows[2])
    )  # no final newline
    p = tmp_path / "data.jsonl"
    p.write_bytes(body.encode())
    for cs in CHUNKS:
        idx = RowIndex.open(p, rebuild=True, chunk_size=cs)
        assert len(idx) == 3
        assert _rows_of(idx) == rows
        assert [idx.line(i) for i in range(3)] == [1, 4, 6]
        assert idx.has_image.tolist() == [True, False, True]
        assert idx.lengths.sum() == len(body.encode())  # offsets cover the file
        assert idx.raw(0) == json.dumps(rows[0]).encode()  # no '\r\n' and no blank lines
        assert idx.path == p


def test_jsonl_leading_whitespace_row_and_indexing(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('  {"id": 1}\n{"id": 2}\n')
    idx = RowIndex.open(p)
    assert _rows_of(idx) == [{"id": 1}, {"id": 2}]
    assert idx[-1] == {"id": 2} and list(idx) == [{"id": 1}, {"id": 2}]
    with pytest.raises(IndexError, match="row 2 out of range"):
        idx.raw(2)


def test_empty_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n \n")
    assert len(RowIndex.open(tmp_path / "e.jsonl")) == 0
    (tmp_path / "e.json").write_text(" [ \n ] \n")
    idx = RowIndex.open(tmp_path / "e.json")
    assert len(idx) == 0 and idx.lengths.size == 0 and idx.has_image.size == 0
    (tmp_path / "z.json").write_text("  \n")
    with pytest.raises(IndexFormatError, match="empty file"):
        RowIndex.open(tmp_path / "z.json")


# ---------------------------------------------------------------------------------------------- .json


TRICKY = [
    {"id": "a", "s": 'braces { [ ] } and "quotes" inside', "image": "x.png"},
    {"id": "b", "s": "backslash at end \\", "t": "two \\\\", "u": '\\"', "image": None},
    {"id": "c", "nested": {"image": []}, "lst": [[1, [2, {"k": "]"}]], "}"], "image": ["p.png", "q.png"]},
    {"id": "d", "s": "line\nbreak\ttab \u00e9 \U0001f600", "type": "image"},
    {"id": "e", "image": ""},
]


@pytest.mark.parametrize("indent", [None, 2, "\t"])
def test_json_array_tricky_strings_across_chunks(tmp_path, indent):
    text = json.dumps(TRICKY, indent=indent, ensure_ascii=False)
    p = tmp_path / "data.json"
    p.write_text(text, encoding="utf-8")
    data = p.read_bytes()
    for cs in CHUNKS:
        idx = RowIndex.open(p, rebuild=True, chunk_size=cs)
        assert _rows_of(idx) == TRICKY, cs
        assert idx.has_image.tolist() == [True, False, True, False, False]
        assert [idx.line(i) for i in range(len(idx))] == _line_starts(data, idx)
        assert data[int(idx._offsets[0])] == ord("{")


def test_json_escaped_backslash_before_quote(tmp_path):
    # "a\\\\" is the string a\\ : its closing quote follows an even run of backslashes and is real;
    # "b\\\"" ends with an escaped quote inside the string.
    text = '[{"id": "a\\\\\\\\", "x": "{"},\n {"id": "b\\\\\\"", "y": "[\\"}"}]'
    p = tmp_path / "d.json"
    p.write_text(text)
    expected = json.loads(text)
    for cs in CHUNKS:
        assert _rows_of(RowIndex.open(p, rebuild=True, chunk_size=cs)) == expected


def test_json_objects_spanning_lines_and_error_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {\n    "id": 1\n  },\n  {\n    "id": 2\n    "oops": 3\n  }\n]\n')
    idx = RowIndex.open(p, chunk_size=5)
    assert len(idx) == 2
    assert idx.row(0) == {"id": 1} and idx.line(0) == 2 and idx.line(1) == 5
    with pytest.raises(RowError) as e:
        idx.row(1)
    # The error points at the line inside the object where JSON breaks, with the real column.
    assert str(e.value) == f"{p}:7: bad JSON: Expecting ',' delimiter (column 5)"
    assert (e.value.line, e.value.kind) == (7, "bad JSON")


def test_random_documents_match_json_load(tmp_path):
    rng = random.Random(0)
    alphabet = ["a", '"', "\\", "{", "}", "[", "]", ",", ":", "\n", " ", "é", "😀", "\\\\", '"image"']

    def s():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))

    def value(depth=0):
        r = rng.random()
        if depth > 3 or r < 0.35:
            return s()
        if r < 0.5:
            return rng.choice([None, True, -3, 1.5e10])
        if r < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {"k" + s(): value(depth + 1) for _ in range(rng.randint(0, 3))}

    for trial in range(25):
        rows = [
            {"id": i, "v": value(), "image": rng.choice([None, "", [], "a.png", ["b"]])} for i in range(6)
        ]
        p = tmp_path / f"r{trial}.json"
        p.write_text(json.dumps(rows, indent=rng.choice([None, 1, 4])), encoding="utf-8")
        q = tmp_path / f"r{trial}.jsonl"
        q.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
        for path in (p, q):
            for cs in (1, 5, 1 << 20):
                idx = RowIndex.open(path, rebuild=True, chunk_size=cs)
                assert _rows_of(idx) == rows, (path.name, cs)
                assert idx.has_image.tolist() == [bool(r["image"]) for r in rows]
                assert idx.raw_range(0, len(idx)) == [idx.raw(i) for i in range(len(idx))]
                assert idx.raw_range(2, 4) == [idx.raw(2), idx.raw(3)] and idx.raw_range(3, 3) == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"id": 1}', r"d.json:1: a .json data file must hold one top-level JSON array.*name it .jsonl"),
        ('\n\n[{"id": 1},\n]', r"d.json:3: trailing ','"),
        ('[{"id": 1}] [', r"extra data after the top-level JSON array"),
        ('[{"id": 1},\n {"id": "unterminated}]\n', r"d.json:2: unexpected end of file"),
        ('[{"id": 1},, {"id": 2}]', r"empty element"),
        ('[{"id": 1}}', r"'\}' closes the top-level array"),
    ],
)
def test_json_structure_errors(tmp_path, text, match):
    p = tmp_path / "d.json"
    p.write_text(text)
    for cs in (1, 1 << 20):
        with pytest.raises(IndexFormatError, match=match):
            RowIndex.open(p, rebuild=True, chunk_size=cs)


def test_unknown_extension_and_missing_file(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("{}\n")
    with pytest.raises(IndexFormatError, match=r"valid: .jsonl, .json"):
        RowIndex.open(p)
    with pytest.raises(FileNotFoundError, match="no such data file"):
        RowIndex.open(tmp_path / "nope.jsonl")


def test_row_errors(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"id": 1}\n{"id": 2 "x": 1}\n[1, 2]\n')
    idx = RowIndex.open(p)
    with pytest.raises(RowError, match=r"data.jsonl:2: bad JSON: Expecting ',' delimiter \(column 10\)"):
        idx.row(1)
    with pytest.raises(RowError, match=r"data.jsonl:3: not a JSON object \(got array\)") as e:
        idx.row(2)
    assert e.value.kind == "not an object"
    again = pickle.loads(pickle.dumps(e.value))
    assert (str(again), again.kind) == (str(e.value), "not an object")


def test_has_image_heuristic(tmp_path):
    rows = [
        {"id": 0, "image": None},
        {"id": 1, "image": ""},
        {"id": 2, "image": []},
        {"id": 3, "image": "a.jpg"},
        {"id": 4, "image": ["a.jpg"]},
        {"id": 5, "type": "image", "note": 'a string with "image": "x" inside'},
        {"id": 6},
    ]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows).replace('"image": []', '"image" : [ ]'))
    assert RowIndex.open(p).has_image.tolist() == [False, False, False, True, True, False, False]


# ---------------------------------------------------------------------------------------------- reuse


def test_index_reused_then_rebuilt_when_file_changes(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(_row(0)) + "\n")
    first = RowIndex.open(p)
    assert first.built and first.index_dir == tmp_path / "data.jsonl.idx"
    meta = first.index_dir / "meta.json"
    stamp = meta.stat().st_mtime_ns
    second = RowIndex.open(p)
    assert not second.built and meta.stat().st_mtime_ns == stamp and len(second) == 1

    with open(p, "a") as f:  # a new row: size changes
        f.write(json.dumps(_row(1)) + "\n")
    third = RowIndex.open(p)
    assert third.built and len(third) == 2 and third.row(1)["id"] == 1

    st = p.stat()  # same size, other mtime: still rebuilt
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert RowIndex.open(p).built
    assert not RowIndex.open(p).built
    assert RowIndex.open(p, rebuild=True).built
    # Only the arrays of the last build remain.
    assert sorted(f.name.split("-")[0] for f in third.index_dir.iterdir()) == [
        "has_image",
        "lines",
        "meta.json",
        "offsets",
    ]


def _rewrite_keeping_size_and_mtime(path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) in the file and put its mtime back (as ``cp -p`` would)."""
    st = path.stat()
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("where", ["head", "middle", "tail"])
def test_same_size_and_mtime_rewrite_is_reindexed(tmp_path, where):
    # ~600 KiB: more than the three 64 KiB fingerprint blocks, so head, middle and tail are separate reads.
    n = 6000
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(_row(i, text=f"q{i:05d}")) + "\n" for i in range(n)))
    assert p.stat().st_size > 3 * (64 << 10)
    k = {"head": 0, "middle": n // 2, "tail": n - 1}[where]
    first = RowIndex.open(p)
    assert first.built and first.row(k)["conversations"][0]["value"] == f"q{k:05d}"
    stale = RowIndex.open(p)  # loaded, not read yet (like a dataloader worker's copy)
    assert not stale.built
    # Same length: "q00042" -> "Z00042"; rows stay where they were, the content changes.
    _rewrite_keeping_size_and_mtime(p, f'"q{k:05d}"'.encode(), f'"Z{k:05d}"'.encode())
    # An index opened before the rewrite notices when it opens the file for its first read.
    with pytest.raises(RowError, match="the file changed since it was indexed"):
        stale.row(k)
    again = RowIndex.open(p)
    assert again.built and again.row(k)["conversations"][0]["value"] == f"Z{k:05d}"
    assert not RowIndex.open(p).built


def test_rewrite_that_moves_rows_is_reindexed(tmp_path):
    """Same size and mtime, but row boundaries moved: a stale index would cut rows in the wrong places."""
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(_row(0, text="aaaa")) + "\n" + json.dumps(_row(1, text="b")) + "\n")
    assert len(RowIndex.open(p)) == 2
    data = p.read_bytes()
    st = p.stat()
    p.write_bytes(data.replace(b'"aaaa"', b'"aa"').replace(b'"b"', b'"bbb"'))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    idx = RowIndex.open(p)
    assert idx.built and [r["conversations"][0]["value"] for r in idx] == ["aa", "bbb"]


def test_damaged_or_half_written_index_is_not_trusted(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(5)))
    idx = RowIndex.open(p)
    meta = json.loads((idx.index_dir / "meta.json").read_text())
    # A crash after writing one array of a new build: an orphan file and a stale temporary meta.
    (idx.index_dir / "offsets-999-deadbeef.npy").write_bytes(b"\x93NUMPY half")
    (idx.index_dir / ".meta-999-deadbeef.json.tmp").write_text("{")
    again = RowIndex.open(p)
    assert not again.built and len(again) == 5
    # Arrays that do not match meta.json (truncated by a crash, say) force a rebuild.
    np.save(idx.index_dir / meta["files"]["offsets"], np.arange(3, dtype=np.uint64))
    rebuilt = RowIndex.open(p)
    assert rebuilt.built and _rows_of(rebuilt) == [_row(i) for i in range(5)]
    assert not (idx.index_dir / "offsets-999-deadbeef.npy").exists()
    assert not (idx.index_dir / ".meta-999-deadbeef.json.tmp").exists()
    # No meta.json at all (a build that died before its commit): rebuilt.
    (idx.index_dir / "meta.json").unlink()
    assert RowIndex.open(p).built


def test_cache_dir_and_unwritable_sidecar(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(_row(0)) + "\n")
    cache = tmp_path / "mycache"
    idx = RowIndex.open(p, cache_dir=cache)
    assert idx.index_dir.parent == cache and idx.index_dir.name.endswith("-data.jsonl.idx")
    assert not (tmp_path / "data.jsonl.idx").exists()
    assert not RowIndex.open(p, cache_dir=cache).built

    # The sidecar place cannot be written (a plain file blocks the directory; permissions would not
    # stop root): the index goes to the default cache, and is found there next time.
    q = tmp_path / "other.jsonl"
    q.write_text(json.dumps(_row(1)) + "\n")
    (tmp_path / "other.jsonl.idx").write_text("not a directory")
    idx = RowIndex.open(q)
    assert idx.built and idx.index_dir.parent == default_cache_dir() == tmp_path / "cache" / "row-index"
    assert not RowIndex.open(q).built and RowIndex.open(q).row(0)["id"] == 1


def test_file_changed_after_open(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(_row(0)) + "\n")
    idx = RowIndex.open(p)
    with open(p, "a") as f:
        f.write(json.dumps(_row(1)) + "\n")
    with pytest.raises(RowError, match=r"data.jsonl:1: the file changed since it was indexed") as e:
        idx.row(0)
    assert e.value.kind == "file changed"


# ---------------------------------------------------------------------------------------------- processes


def _read_rows(args):
    idx, ids = args
    return os.getpid(), [idx.row(i) for i in ids]


def test_rows_after_fork_and_pickle(tmp_path):
    p = tmp_path / "data.jsonl"
    rows = [_row(i, "x.png" if i % 2 else None, text="t" * i) for i in range(200)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    idx = RowIndex.open(p)
    assert idx.row(3) == rows[3]  # the parent opens its file handle before forking
    ids = list(range(199, -1, -1))
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_read_rows, [(idx, ids[k::2]) for k in range(2)])
    for k, (pid, got) in enumerate(results):
        assert pid != os.getpid()
        assert got == [rows[i] for i in ids[k::2]]
    clone = pickle.loads(pickle.dumps(idx))
    assert _rows_of(clone) == rows and clone.has_image.tolist() == idx.has_image.tolist()
    assert isinstance(idx.has_image, np.memmap) and isinstance(idx.lines, np.memmap)


def test_progress_bar_build(tmp_path, capsys):
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(_row(0)) + "\n")
    assert len(RowIndex.open(p, progress=True)) == 1
    assert "indexing data.jsonl" in capsys.readouterr().err
