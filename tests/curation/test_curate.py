"""Curation (``cambrian.curation.curate``): caps, ratios, dedup and system-prompt rules on hand-made inputs
with exact expected outputs, determinism, bad rows with file:line, resuming the scan, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cambrian.cli import app
from cambrian.curation import curate as C
from cambrian.curation.curate import CurateConfig, SourceSpec, allocate, curate, scanning
from cambrian.curation.outputs import OutputOverlapError
from cambrian.utils.config import ConfigError

PROMPT = C.SHORT_ANSWER_PROMPT


def row(rid, q=None, a="A cat.", image=None, **extra):
    human = ("<image>\n" if image else "") + (q or f"What is {rid}?")  # distinct questions: no dedup
    r = {"id": rid, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": a}]}
    if image:
        r["image"] = image
    return {**r, **extra}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path: Path, cfg: CurateConfig, name: str = "out") -> tuple[list[dict], dict]:
    res = curate(cfg, tmp_path / f"{name}.jsonl")
    return read(res.out), res.report


# ----------------------------------------------------------------------------------------- allocate
def test_allocate_exact_ratios_without_budget():
    # The scarcest category relative to its share (B: 10 rows for 25%) sets the size: 40 rows.
    assert allocate({"A": 100, "B": 10, "C": 50}, {"A": 50, "B": 25, "C": 25}, None) == {
        "A": 20,
        "B": 10,
        "C": 10,
    }


def test_allocate_water_filling_with_budget():
    # B is short of its 25 (has 10): it gives all, the other 90 go 2:1 to A and C.
    got = allocate({"A": 100, "B": 10, "C": 50}, {"A": 50, "B": 25, "C": 25}, 100)
    assert got == {"A": 60, "B": 10, "C": 30}
    assert allocate({"A": 100, "B": 10, "C": 50}, {"A": 50, "B": 25, "C": 25}, 10_000) == {
        "A": 100,
        "B": 10,
        "C": 50,
    }


def test_allocate_rounds_to_the_exact_budget_and_ignores_absent_categories():
    got = allocate({"A": 50, "B": 50, "C": 50}, {"A": 1, "B": 1, "C": 1, "D": 5}, 100)
    assert sum(got.values()) == 100 and sorted(got.values()) == [33, 33, 34]
    assert allocate({"A": 5, "Z": 7}, {"A": 1, "Z": 0}, None) == {"A": 5, "Z": 0}


# ------------------------------------------------------------------------------------------- steps
def test_cap_keeps_exactly_t_per_source_seeded(tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", [row(f"b{i}", q=f"q{i}") for i in range(20)])
    small = write_jsonl(tmp_path / "small.jsonl", [row(f"s{i}", q=f"small {i}") for i in range(3)])
    srcs = {"big": SourceSpec("General", [str(big)]), "small": SourceSpec("General", [str(small)])}
    cfg = CurateConfig(sources=srcs, cap=5, ratios=None, system_prompt=None)
    rows, rep = run(tmp_path, cfg)
    ids = sorted(r["id"] for r in rows)
    assert sum(i.startswith("b") for i in ids) == 5 and sum(i.startswith("s") for i in ids) == 3
    assert rep["sources"]["big"]["cap"] == 5 and rep["sources"]["small"]["cap"] == 3
    again, _ = run(tmp_path, cfg, "again")
    assert again == rows  # same seed: same rows in the same order
    other, _ = run(tmp_path, CurateConfig(sources=srcs, cap=5, ratios=None, system_prompt=None, seed=1), "s1")
    assert sorted(r["id"] for r in other if r["id"].startswith("b")) != [i for i in ids if i.startswith("b")]


def test_rebalance_hits_the_target_ratios(tmp_path):
    files = {
        "chat": ("Language", 40),
        "vqa": ("General", 40),
        "charts": ("OCR", 10),
    }
    srcs = {}
    for name, (cat, n) in files.items():
        p = write_jsonl(tmp_path / f"{name}.jsonl", [row(f"{name}{i}", q=f"{name} {i}") for i in range(n)])
        srcs[name] = SourceSpec(cat, [str(p)])
    ratios = {"Language": 40.0, "General": 40.0, "OCR": 20.0}
    rows, rep = run(tmp_path, CurateConfig(sources=srcs, cap=None, ratios=ratios))
    # OCR (10 rows for 20%) limits the mixture to 50 rows: 20 / 20 / 10.
    assert {c: v["after"] for c, v in rep["categories"].items()} == {"Language": 20, "General": 20, "OCR": 10}
    assert len(rows) == 50
    rows, rep = run(tmp_path, CurateConfig(sources=srcs, cap=None, ratios=ratios, budget=80), "b80")
    assert {c: v["after"] for c, v in rep["categories"].items()} == {"Language": 35, "General": 35, "OCR": 10}


def test_dedup_by_image_and_first_question(tmp_path):
    rows_in = [
        row("a", q="What colour?", image="x.jpg"),
        row("b", q="  What   colour? ", image="x.jpg", a="Something else entirely."),  # same key
        row("c", q="What colour?", image="y.jpg"),  # other image: kept
        row("d", q="Tell me a joke."),
        row("e", q="Tell me a joke."),  # text-only duplicate
    ]
    f = write_jsonl(tmp_path / "d.jsonl", rows_in)
    cfg = CurateConfig(
        sources={"s": SourceSpec("General", [str(f)])}, cap=None, ratios=None, system_prompt=None
    )
    rows, rep = run(tmp_path, cfg)
    assert sorted(r["id"] for r in rows) == ["a", "c", "d"]
    assert [s["rows_out"] for s in rep["steps"]] == [5, 3]
    cfg.dedup = False
    rows, _ = run(tmp_path, cfg, "nodedup")
    assert len(rows) == 5


def test_system_prompt_rule(tmp_path):
    multi = row("multi", a="Yes.")
    multi["conversations"] += [
        {"from": "human", "value": "And why?"},
        {"from": "gpt", "value": "Because it is red."},
    ]
    rows_in = [
        row("short", a="Two."),
        row("three", a="a red cube"),
        row("long", a="It is a small red cube."),
        multi,  # one long assistant turn: not short
        row("own", a="Yes.", system="Be brief."),  # brings its own: untouched
    ]
    f = write_jsonl(tmp_path / "s.jsonl", rows_in)
    cfg = CurateConfig(sources={"s": SourceSpec("General", [str(f)])}, cap=None, ratios=None)
    rows, rep = run(tmp_path, cfg)
    systems = {r["id"]: r.get("system") for r in rows}
    assert systems == {"short": PROMPT, "three": PROMPT, "long": None, "multi": None, "own": "Be brief."}
    assert rep["system_prompt"]["added"] == 2 and rep["system_prompt"]["had_own"] == 1
    cfg.short_max_words = 2
    rows, _ = run(tmp_path, cfg, "two")
    assert {r["id"] for r in rows if r.get("system") == PROMPT} == {"short"}
    cfg.system_prompt = None
    rows, _ = run(tmp_path, cfg, "none")
    assert {r["id"] for r in rows if "system" in r} == {"own"}


def test_rows_are_copied_byte_for_byte(tmp_path):
    lines = [
        '{"id": "x", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there, my friend!"}],   "extra": {"k": [1, 2]}}',
        '{"conversations":[{"from":"human","value":"Q"},{"from":"gpt","value":"A long enough answer here"}],"id":7}',
    ]
    f = write_jsonl(tmp_path / "raw.jsonl", lines)
    res = curate(CurateConfig(sources={"s": SourceSpec("Language", [str(f)])}, cap=None, ratios=None),
                 tmp_path / "o.jsonl")  # fmt: skip
    assert sorted(res.out.read_text().splitlines()) == sorted(lines)
    # The system prompt is added by appending one key: the rest of the row keeps its bytes.
    res = curate(CurateConfig(sources={"s": SourceSpec("Language", [str(f)])}, cap=None, ratios=None,
                              short_max_words=10), tmp_path / "o.jsonl")  # fmt: skip
    added = ', "system": "Answer the question using a single word or phrase."}'
    assert sorted(res.out.read_text().splitlines()) == sorted(line[:-1] + added for line in lines)


def test_missing_images_dropped(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "here.jpg").write_bytes(b"not checked, only present")
    f = write_jsonl(
        tmp_path / "i.jsonl", [row("has", image="here.jpg"), row("gone", image="gone.jpg"), row("text")]
    )
    cfg = CurateConfig(sources={"s": SourceSpec("General", [str(f)])}, cap=None, ratios=None,
                       images=str(tmp_path / "img"))  # fmt: skip
    rows, rep = run(tmp_path, cfg)
    assert sorted(r["id"] for r in rows) == ["has", "text"]
    assert [(s["name"], s["rows_out"]) for s in rep["steps"][:2]] == [("scan", 3), ("images", 2)]


def test_sources_from_rows_and_bad_rows_with_file_line(tmp_path):
    f = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            row("ok1", source="chat", category="language"),  # category matched case-insensitively
            row("ok2", source="charts"),  # category from the map
            "{not json",
            row("nosrc"),
            row("badcat", source="chat", category="Poetry"),
            {"id": "noconv"},
            row("ok3", source="charts"),
        ],
    )
    cfg = CurateConfig(
        inputs=[str(f)], sources={"charts": SourceSpec("OCR")}, cap=None, ratios=dict(C.PAPER_RATIOS)
    )
    cfg.budget = 10
    res = curate(cfg, tmp_path / "o.jsonl")
    bad = [json.loads(line) for line in (res.report_dir / "bad_rows.jsonl").read_text().splitlines()]
    assert [(b["line"], b["id"]) for b in bad] == [(3, None), (4, "nosrc"), (5, "badcat"), (6, "noconv")]
    assert all(b["file"] == str(f) for b in bad)
    assert "bad JSON" in bad[0]["reason"] and "no source" in bad[1]["reason"]
    assert "unknown category 'Poetry'; valid: Language, General, OCR" in bad[2]["reason"]
    assert "missing 'conversations'" in bad[3]["reason"]
    assert sorted(r["id"] for r in read(res.out)) == ["ok1", "ok2", "ok3"]
    cats = res.report["categories"]
    assert cats["Language"]["after"] == 1 and cats["OCR"]["after"] == 2
    # Targets: over all configured categories, and renormalised over those that have rows.
    assert cats["Language"]["target"] == pytest.approx(100 * 21.0 / sum(C.PAPER_RATIOS.values()))
    assert cats["Language"]["target_present"] == pytest.approx(100 * 21.0 / (21.0 + 27.22))
    assert cats["Math"]["target_present"] is None and cats["Math"]["after"] == 0
    md = (res.report_dir / "report.md").read_text()
    assert f"{f}:3: id=None: bad JSON" in md
    for png in ("sources.png", "categories.png", "answer_lengths.png"):
        assert (res.report_dir / png).stat().st_size > 1000
    assert yaml.safe_load((res.report_dir / "curate.yaml").read_text())["budget"] == 10


def test_json_array_input(tmp_path):
    f = tmp_path / "arr.json"
    f.write_text(
        json.dumps(
            [row("j1", q="one"), row("j2", q="two", a="a much longer answer than three words")], indent=2
        )
    )
    rows, _ = run(
        tmp_path, CurateConfig(sources={"s": SourceSpec("General", [str(f)])}, cap=None, ratios=None)
    )
    assert {r["id"]: r.get("system") for r in rows} == {"j1": PROMPT, "j2": None}


def test_config_errors_name_the_key_and_choices(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [row("a")])
    with pytest.raises(
        ConfigError, match=r"sources.s.category: unknown category 'Art'; valid: Language, General"
    ):
        CurateConfig(sources={"s": SourceSpec("Art", [str(f)])}).validate()
    with pytest.raises(ConfigError, match=r"inputs: data file .*nope.jsonl does not exist"):
        CurateConfig(inputs=[str(tmp_path / "nope.jsonl")]).validate()
    with pytest.raises(ConfigError, match="no input files"):
        CurateConfig().validate()


# ------------------------------------------------------------------------------------------ resume
def test_scan_resumes_from_finished_blocks(tmp_path, monkeypatch):
    f = write_jsonl(tmp_path / "r.jsonl", [row(f"r{i}", q=f"q{i}") for i in range(10)])
    cfg = CurateConfig(
        sources={"s": SourceSpec("General", [str(f)])}, cap=None, ratios=None, workers=1, block_rows=3
    )
    real = scanning._scan_block
    calls = []

    def crash_on_third(job):
        calls.append(job.start)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-scan")
        return real(job)

    monkeypatch.setattr(scanning, "_scan_block", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        curate(cfg, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
    calls.clear()
    monkeypatch.setattr(scanning, "_scan_block", lambda job: calls.append(job.start) or real(job))
    rows = read(curate(cfg, tmp_path / "o.jsonl").out)
    assert calls == [6, 9]  # blocks 0-2 and 3-5 were finished before the crash
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(10))
    calls.clear()
    cfg.cap = 4  # another selection reuses the whole scan
    assert len(read(curate(cfg, tmp_path / "o.jsonl").out)) == 4 and calls == []


def test_parallel_scan_gives_the_same_output(tmp_path):
    f = write_jsonl(
        tmp_path / "p.jsonl",
        [row(f"p{i}", q=f"q{i % 17}", a="yes" if i % 3 else "no it is not") for i in range(60)],
    )
    base = dict(sources={"s": SourceSpec("General", [str(f)])}, cap=30, ratios=None, block_rows=7)
    one = curate(CurateConfig(**base, workers=1), tmp_path / "one.jsonl", work_dir=tmp_path / "w1")
    two = curate(CurateConfig(**base, workers=2), tmp_path / "two.jsonl", work_dir=tmp_path / "w2")
    assert one.out.read_bytes() == two.out.read_bytes() and len(read(one.out)) == 17


# --------------------------------------------------------------------------------------------- CLI
def test_cli_curate(tmp_path):
    write_jsonl(tmp_path / "vqa.jsonl", [row(f"v{i}", q=f"q{i}", a="Yes.") for i in range(6)] + ["oops"])
    write_jsonl(
        tmp_path / "chat.jsonl", [row(f"c{i}", q=f"c{i}", a="A long and friendly answer.") for i in range(4)]
    )
    (tmp_path / "map.yaml").write_text(
        "sources:\n  vqa: {category: General, files: [vqa.jsonl]}\n  chat: {category: Language, files: [chat.jsonl]}\n"
        "ratios: {General: 50, Language: 50}\n"
    )
    out = tmp_path / "o" / "cur.jsonl"
    r = CliRunner().invoke(app, ["data", "curate", str(tmp_path / "map.yaml"), "cap=5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = read(out)
    assert sum(x["id"].startswith("v") for x in rows) == 4 and sum(x["id"].startswith("c") for x in rows) == 4
    assert all(x.get("system") == PROMPT for x in rows if x["id"].startswith("v"))
    assert "vqa.jsonl:7" in r.output and (out.parent / "cur.report" / "report.md").is_file()

    r = CliRunner().invoke(
        app, ["data", "curate", str(tmp_path / "map.yaml"), "sources.vqa.category=Art", "--out", str(out)]
    )
    assert (
        r.exit_code == 2
        and "sources.vqa.category: unknown category 'Art'; valid: General, Language" in r.output
    )
    r = CliRunner().invoke(app, ["data", "curate", str(tmp_path / "map.yaml"), "caps=3", "--out", str(out)])
    assert (
        r.exit_code == 2 and "unknown config key caps; valid keys: block_rows, budget, cap, dedup" in r.output
    )


# ------------------------------------------------------------------------------ outputs vs inputs
def _sources(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "rows.jsonl",
        [row(f"r{i}", source="s", category="General") for i in range(4)],
    )


def _refused(excinfo, out, inp) -> None:
    msg = str(excinfo.value)
    assert msg.startswith(
        f"refusing to write output file {out}: it is the same file as input data file {inp}"
    )
    assert msg.endswith("; choose another output file") and "\n" not in msg


def test_out_equal_to_an_input_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    src = _sources(tmp_path)
    before = src.read_bytes()
    cfg = CurateConfig(inputs=[str(src)], ratios=None)
    # The same path, absolute or relative (`x`, `./x`), through a symlink, or a hard link.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.jsonl").symlink_to(src)
    hard = tmp_path / "hard.jsonl"
    hard.hardlink_to(src)
    for out in (src, Path("rows.jsonl"), Path("./rows.jsonl"), Path("sub/../rows.jsonl"), tmp_path / "link.jsonl",
                hard):  # fmt: skip
        with pytest.raises(ValueError) as excinfo:
            curate(cfg, out)
        assert isinstance(excinfo.value, OutputOverlapError)
        _refused(excinfo, out, src)
        assert src.read_bytes() == before
    cfg_rel = CurateConfig(inputs=["./rows.jsonl"], ratios=None)
    with pytest.raises(ValueError, match="it is the same file as input data file"):
        curate(cfg_rel, tmp_path / "rows.jsonl")
    assert not (tmp_path / "rows.report").exists() and not (tmp_path / "rows.work").exists()
    assert src.read_bytes() == before


def test_report_and_work_dirs_may_not_overwrite_inputs(tmp_path):
    rep = tmp_path / "rep"
    rep.mkdir()
    src = write_jsonl(rep / "bad_rows.jsonl", [row("a", source="s", category="General")])
    before = src.read_bytes()
    cfg = CurateConfig(inputs=[str(src)], ratios=None)
    with pytest.raises(ValueError, match=r"refusing to write report file .*bad_rows\.jsonl: it is the same file as "
                       r"input data file .*; choose another report directory$"):  # fmt: skip
        curate(cfg, tmp_path / "o.jsonl", report_dir=rep)
    (tmp_path / "w" / "scan").mkdir(parents=True)
    scan_src = write_jsonl(tmp_path / "w" / "scan" / "x.jsonl", [row("b", source="s", category="General")])
    cfg = CurateConfig(inputs=[str(scan_src)], ratios=None)
    with pytest.raises(
        ValueError, match=r"scan cache directory .*: it is a directory holding input data file"
    ):
        curate(cfg, tmp_path / "o.jsonl", work_dir=tmp_path / "w")
    assert src.read_bytes() == before and not (tmp_path / "o.jsonl").exists()
    # Next to the inputs, with other names, is fine.
    res = curate(CurateConfig(inputs=[str(src)], ratios=None), rep / "out.jsonl", report_dir=tmp_path / "r2")
    assert [r["id"] for r in read(res.out)] == ["a"] and src.read_bytes() == before


def test_cli_refuses_out_over_input_and_empty_sources(tmp_path):
    src = _sources(tmp_path)
    before = src.read_bytes()
    runner = CliRunner()
    r = runner.invoke(app, ["data", "curate", "--input", str(src), "--out", str(src), "ratios=null"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().startswith(f"error: refusing to write output file {src}: it is the same file as")
    assert len(r.stderr.strip().splitlines()) == 1 and src.read_bytes() == before
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = runner.invoke(app, ["data", "curate", "--input", str(empty), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: inputs: data file {empty} is empty (no rows)"
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n  \n")
    r = runner.invoke(app, ["data", "curate", "--input", str(blank), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: inputs: data file {blank} holds no rows"
    (tmp_path / "m.yaml").write_text(f"sources:\n  s: {{category: General, files: [{empty.name}]}}\n")
    r = runner.invoke(app, ["data", "curate", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "o.jsonl")])
    assert (
        r.exit_code == 2
        and r.stderr.strip() == f"error: sources.s.files: data file {empty} is empty (no rows)"
    )
    outdir = tmp_path / "adir"
    outdir.mkdir()
    r = runner.invoke(app, ["data", "curate", "--input", str(src), "--out", str(outdir)])
    assert r.exit_code == 2 and "is an existing directory" in r.stderr


def test_cli_overrides_work_without_a_config_file(tmp_path):
    """The README's `cambrian data curate --input X --out Y ratios=null`: the first key=value is an
    override, not a config file."""
    src = write_jsonl(
        tmp_path / "rows.jsonl", [row(f"r{i}", source="s", category="Poetry") for i in range(5)]
    )
    out = tmp_path / "mix.jsonl"
    r = CliRunner().invoke(
        app, ["data", "curate", "--input", str(src), "--out", str(out), "ratios=null", "cap=3"]
    )
    assert r.exit_code == 0, r.output
    assert len(read(out)) == 3  # cap=3 applied too
    assert yaml.safe_load((tmp_path / "mix.report" / "curate.yaml").read_text())["ratios"] is None
    r = CliRunner().invoke(app, ["data", "curate", "--input", str(src), "--out", str(out), "capp=3"])
    assert r.exit_code == 2 and "unknown config key capp; valid keys:" in r.stderr
    r = CliRunner().invoke(app, ["data", "curate", str(tmp_path / "nope.yaml"), "--out", str(out)])
    assert r.exit_code == 2 and f"config file {tmp_path / 'nope.yaml'} does not exist" in r.stderr
