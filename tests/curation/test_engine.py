"""The Internet Data Engine end to end, offline: fake LLM + fake MediaWiki over real loopback HTTP.

Full run -> rows that pass ``check_row`` with their images; faults (429/500, malformed output) retried and
counted; a rerun asks nothing; a SIGKILLed CLI run resumes to the same bytes as an uninterrupted run
without re-asking finished units; the local dump works with no wiki server; importing starts nothing;
bad configs fail with exit code 2 and a message naming the key and the valid ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cambrian.cli import app
from cambrian.curation.engine import Engine, resolve_config
from cambrian.curation.engine.llm import ChatClient
from cambrian.curation.engine.net import Counters
from cambrian.data.records import check_row
from tests.curation.engine_fakes import SHARED, FakeLLM, FakeWiki

REPO = Path(__file__).resolve().parents[2]
ENV_VARS = ("CAMBRIAN_ENGINE_LLM_URL", "CAMBRIAN_ENGINE_LLM_MODEL", "CAMBRIAN_ENGINE_LLM_KEY", "OPENAI_BASE_URL",
            "OPENAI_API_KEY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")  # fmt: skip

CONFIG = {
    "fields": {"Physics": ["Optics", "Thermodynamics"], "Biology": ["Genetics"]},
    "topics_per_subfield": 2,
    "pages_per_topic": 2,
    "images_per_page": 2,
    "qas_per_image": 2,
    "malformed_retries": 1,
    "llm": {"model": "fake-model", "backoff": 0.01, "max_backoff": 0.05, "concurrency": 3, "rps": 500},
    "wiki": {
        "backoff": 0.01,
        "max_backoff": 0.05,
        "concurrency": 3,
        "rps": 500,
        "user_agent": "engine-test/1",
    },
}
# Per run: 3 subfields -> 6 topics -> 7 pages (+1 missing) -> 14 figures, one always malformed -> 13 x 2 rows.
ROWS = 26


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def wiki():
    with FakeWiki() as server:
        yield server


def write_config(tmp_path: Path, data: dict | None = None) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(data or CONFIG, sort_keys=False))
    return path


def run_lib(config: Path, out: Path, llm: FakeLLM, wiki_args: dict, key: str | None = None):
    cfg = resolve_config(config, llm_url=llm.url, **wiki_args)
    counters = Counters()
    client = ChatClient(cfg.llm, counters, key=key, seed=cfg.seed)
    return Engine(cfg, out, progress=False, llm=client).run()


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "engine.jsonl").read_text().splitlines()]


def test_full_run_faults_rerun_and_determinism(tmp_path, llm, wiki):
    llm.statuses = {"Subfield: Optics\n\nList": [429, 500]}
    llm.malformed = {f"Figure A of {SHARED}"}
    llm.malformed_once = {"Subfield: Genetics\n\nList"}  # the topic prompt only
    config = write_config(tmp_path)
    out = tmp_path / "out"
    result = run_lib(config, out, llm, {"wiki_url": wiki.url}, key="sk-test")
    assert result.complete, result.failures

    rows = read_rows(out)
    assert len(rows) == result.rows == ROWS
    assert len({r["id"] for r in rows}) == ROWS
    for row in rows:
        assert check_row(row, out, decode=True) == [], row
        assert row["source"] == "data_engine" and row["category"] == "Science"
        assert row["conversations"][0]["value"].startswith("<image>\n")
        assert row["page_url"].startswith(f"http://127.0.0.1:{wiki.port}/wiki/")
        with Image.open(out / row["image"]) as im:
            assert im.mode == "RGB" and min(im.size) >= 100
    first = rows[0]
    assert (first["field"], first["subfield"], first["topic"], first["page_title"]) == (
        "Physics", "Optics", "Optics topic 1", "Optics topic 1",
    )  # fmt: skip
    assert first["caption"] == "Figure A of Optics topic 1" and first["image_url"].endswith("-a@2x.png")
    # the shared page belongs to the first topic that found it; its figure A was never usable
    shared = {(r["topic"], r["caption"]) for r in rows if r["page_title"] == SHARED}
    assert shared == {("Optics topic 1", f"Figure B of {SHARED}")}

    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and stats["rows"] == ROWS
    st = stats["stages"]
    assert st["topics"] == {"subfields": 3, "topics": 6, "malformed_skipped": 0}
    assert st["pages"]["pages"] == 8 and st["pages"]["missing"] == 1
    assert st["pages"]["figures_rejected"] == {"icon": 7, "non-raster": 7}
    assert st["images"]["kept"] == 14
    assert st["images"]["rejected"] == {"HTTP 404": 1, "too small": 7, "unreadable": 1}
    assert (st["qa"]["malformed_skipped"], st["qa"]["items_dropped"], st["qa"]["pairs"]) == (1, 13, ROWS)
    run = stats["this_run"]
    assert run["llm"]["retries"] == 2  # the 429 and the 500
    # Genetics' topics were re-asked once (then fine); the shared figure A once, then skipped
    assert run["malformed_retries"] == {"topics": 1, "qa": 1}
    assert run["llm"]["requests"] == len(llm.requests) == 3 + 2 + 1 + 14 + 1
    assert run["wiki"]["requests"] == wiki.total() == 6 + 8 + 6 * 3 + 5
    assert llm.headers[0]["Authorization"] == "Bearer sk-test"
    assert wiki.user_agents == {"engine-test/1"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["llm"]["url"] == llm.url and "sk-test" not in (out / "config.yaml").read_text()

    # A rerun takes everything from the cache: not one request, the same bytes.
    before_llm, before_wiki, data = len(llm.requests), wiki.total(), (out / "engine.jsonl").read_bytes()
    again = run_lib(config, out, llm, {"wiki_url": wiki.url})
    assert (len(llm.requests), wiki.total()) == (before_llm, before_wiki)
    assert (out / "engine.jsonl").read_bytes() == data
    assert again.stats["stages"] == stats["stages"] and again.stats["this_run"]["units"]["qa"] == {
        "cached": 14
    }

    # Same config and services, fresh directory: byte-identical output.
    run_lib(config, tmp_path / "out2", llm, {"wiki_url": wiki.url})
    assert (tmp_path / "out2" / "engine.jsonl").read_bytes() == data


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, llm, wiki):
    config = write_config(tmp_path)
    reference = tmp_path / "reference"
    run_lib(config, reference, llm, {"wiki_url": wiki.url})
    expected = (reference / "engine.jsonl").read_bytes()

    llm.requests.clear()
    llm.delay = 0.5  # slow QA replies: the kill lands mid-stage
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cambrian.cli", "data", "engine", str(config), "--out", str(out),
           "--llm-url", llm.url, "--wiki-url", wiki.url, "--no-progress", "llm.concurrency=2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    qa_dir = out / "cache" / "qa"
    deadline = time.monotonic() + 120
    try:
        while len(list(qa_dir.glob("*/*.json"))) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no QA results within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "engine.jsonl").exists()
    finished = [json.loads(p.read_text()) for p in qa_dir.glob("*/*.json")]
    assert 3 <= len(finished) < 13
    done_captions = {f"Image caption: {r['caption']}\n" for r in finished}

    llm.requests.clear()
    llm.delay = 0.0
    before_wiki = wiki.total()
    result = run_lib(config, out, llm, {"wiki_url": wiki.url})
    assert result.complete
    assert (out / "engine.jsonl").read_bytes() == expected
    asked = llm.prompts("qa")
    assert not any(c in p for p in asked for c in done_captions), "finished QA units were asked again"
    assert llm.prompts("topics") == [] and wiki.total() == before_wiki  # earlier stages were all cached
    assert len(asked) == 14 - len(finished)  # exactly the units that had not finished (in flight included)
    assert result.stats["this_run"]["units"]["qa"]["cached"] == len(finished)


def test_transient_failures_are_not_cached_and_a_rerun_completes(tmp_path, llm, wiki):
    data = {**CONFIG, "wiki": {**CONFIG["wiki"], "retries": 1}}
    config = write_config(tmp_path, data)
    run_lib(config, tmp_path / "reference", llm, {"wiki_url": wiki.url})
    slug = read_rows(tmp_path / "reference")[0]["image_url"].rsplit("/", 1)[-1].split("-")[0]
    wiki.image_faults = {f"{slug}-b.png": 2}  # figure B of one page: down for both attempts of this run
    out = tmp_path / "out"
    first = run_lib(config, out, llm, {"wiki_url": wiki.url})
    assert not first.complete and len(first.failures) == 1 and "HTTP 503" in first.failures[0]
    assert first.stats["this_run"]["wiki"]["retries"] == 1
    assert first.rows == 28 - 2  # no LLM faults in this test: 14 x 2 rows, less the figure not yet had
    second = run_lib(config, out, llm, {"wiki_url": wiki.url})
    assert second.complete and second.stats["this_run"]["units"]["images"] == {"cached": 22, "done": 1}
    assert (out / "engine.jsonl").read_bytes() == (tmp_path / "reference" / "engine.jsonl").read_bytes()


def test_local_dump_works_offline(tmp_path, llm):
    dump = tmp_path / "dump"
    (dump / "images").mkdir(parents=True)
    Image.new("RGB", (300, 200), "red").save(dump / "images" / "prism.png")
    Image.new("RGBA", (220, 160), (0, 0, 255, 128)).save(dump / "images" / "lens.png")
    Image.new("RGB", (300, 200), "green").save(tmp_path / "outside.png")
    pages = [
        {"title": "Prism", "url": "https://example.org/Prism",
         "html": "<p>A prism refracts light.</p><figure><img src='images/prism.png' width='300' height='200'>"
                 "<figcaption>A glass prism splitting white light</figcaption></figure>"},
        {"title": "Lens (optics)", "text": "A lens focuses light.\n\nA convex lens converges rays.",
         "images": [{"file": "images/lens.png", "caption": "A convex lens"},
                    {"file": "../outside.png", "caption": "Outside the dump"},
                    {"file": "images/none.png", "caption": "Missing file"}]},
        {"title": "Cell", "text": "Cells are alive.", "images": [{"file": "images/prism.png", "caption": "x"}]},
    ]  # fmt: skip
    (dump / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    llm.topics = {"Optics": ["Prism", "Lens"]}
    data = {**CONFIG, "fields": {"Physics": ["Optics"]}, "topics_per_subfield": 2, "images_per_page": 3}
    data["wiki"] = {**CONFIG["wiki"], "url": "http://127.0.0.1:9/unused/api.php"}
    config = write_config(tmp_path, data)
    out = tmp_path / "out"
    result = run_lib(config, out, llm, {"wiki_dump": dump})
    assert result.complete, result.failures
    rows = read_rows(out)
    assert [(r["page_title"], r["caption"]) for r in rows] == [
        ("Prism", "A glass prism splitting white light")] * 2 + [("Lens (optics)", "A convex lens")] * 2  # fmt: skip
    assert rows[0]["page_url"] == "https://example.org/Prism" and rows[2]["page_url"] is None
    assert all(check_row(r, out) == [] for r in rows)
    stats = result.stats
    assert stats["stages"]["images"]["rejected"] == {"unavailable": 2}
    assert stats["this_run"]["wiki"]["requests"] == 0
    assert any("A lens focuses light." in p and "A convex lens" in p for p in llm.prompts("qa"))


def test_import_starts_no_network_thread_or_file_io(tmp_path):
    code = """
import socket, threading, builtins, sys
def refuse(*a, **k):
    raise AssertionError("side effect at import")
socket.socket.connect = refuse
socket.create_connection = refuse
threading.Thread.start = refuse
real_open = builtins.open
def guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        raise AssertionError(f"file written at import: {file}")
    return real_open(file, mode, *a, **k)
builtins.open = guarded_open
import cambrian.curation.engine
import cambrian.curation.engine.config, cambrian.curation.engine.extract, cambrian.curation.engine.llm
import cambrian.curation.engine.net, cambrian.curation.engine.pipeline, cambrian.curation.engine.prompts
import cambrian.curation.engine.cache, cambrian.curation.engine.stages
import cambrian.curation.engine.wiki, cambrian.cli
print("threads", threading.active_count())
"""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "threads 1"
    assert list(tmp_path.iterdir()) == []


runner = CliRunner()


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        (
            {**CONFIG, "topic_per_subfield": 3},
            {},
            ["topic_per_subfield", "valid keys:", "topics_per_subfield"],
        ),
        ({**CONFIG, "llm": {"modle": "x"}}, {}, ["unknown config key llm.modle", "model", "concurrency"]),
        ({**CONFIG, "fields": {"Physics": "Optics"}}, {}, ["fields.Physics", "list"]),
        (
            {**CONFIG, "llm": {}},
            {"CAMBRIAN_ENGINE_LLM_URL": "http://x/v1"},
            ["llm.model", "CAMBRIAN_ENGINE_LLM_MODEL"],
        ),
        ({**CONFIG, "llm": {"model": "m"}}, {}, ["llm.url", "CAMBRIAN_ENGINE_LLM_URL", "--llm-url"]),
    ],
)
def test_cli_bad_config_exits_2_naming_the_key(tmp_path, monkeypatch, data, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config = write_config(tmp_path, data)
    result = runner.invoke(app, ["data", "engine", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "config error" in text and all(e in text for e in expected), text
    assert not (tmp_path / "out").exists()


def test_cli_other_usage_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMBRIAN_ENGINE_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CAMBRIAN_ENGINE_LLM_MODEL", "m")
    config = write_config(tmp_path)
    base = ["data", "engine", "--out", str(tmp_path / "out")]
    missing = runner.invoke(app, [*base, str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml does not exist" in missing.output
    both = runner.invoke(
        app, [*base, str(config), "--wiki-url", "http://x/api.php", "--wiki-dump", str(tmp_path)]
    )
    assert both.exit_code == 2 and "not both" in both.output
    no_dump = runner.invoke(app, [*base, str(config), "--wiki-dump", str(tmp_path / "nodump")])
    assert no_dump.exit_code == 2 and "wiki.dump" in no_dump.output
    bad_override = runner.invoke(app, [*base, str(config), "qas_per_image=0"])
    assert bad_override.exit_code == 2 and "qas_per_image: must be at least 1" in bad_override.output


def test_cli_reports_failures_with_exit_1(tmp_path, llm):
    """An LLM that is down: units fail after their retries, are not cached, and the exit code says so."""
    llm.statuses = {"Subfield:": [503] * 100}
    data = {**CONFIG, "fields": {"Physics": ["Optics"]}}
    data["llm"] = {**CONFIG["llm"], "retries": 2}
    config = write_config(tmp_path, data)
    out = tmp_path / "out"
    args = ["data", "engine", str(config), "--out", str(out), "--llm-url", llm.url, "--no-progress"]
    result = runner.invoke(app, [*args, "--wiki-url", "http://127.0.0.1:9/w/api.php"])
    assert result.exit_code == 1, result.output
    assert "HTTP 503" in result.output and "rerun" in result.output
    assert len(llm.requests) == 3 and not list((out / "cache").glob("topics/*/*.json"))
    assert json.loads((out / "stats.json").read_text())["failures_total"] == 1


def test_cli_stops_at_a_fatal_status(tmp_path, llm):
    """A bad key (401) would fail every unit alike: the run stops at once instead of asking on."""
    llm.statuses = {"Subfield:": [401] * 10}
    config = write_config(tmp_path, {**CONFIG, "llm": {**CONFIG["llm"], "concurrency": 1}})
    args = ["data", "engine", str(config), "-o", str(tmp_path / "out"), "--llm-url", llm.url, "--no-progress"]
    result = runner.invoke(app, [*args, "--wiki-url", "http://127.0.0.1:9/w/api.php"])
    assert result.exit_code == 1, result.output
    assert "HTTP 401" in result.output and "check the service URL, model name and API key" in result.output
    assert len(llm.requests) == 1


def test_cli_refuses_outputs_over_inputs(tmp_path, monkeypatch):
    """--out may not overwrite the config file or write into the local dump it reads; nothing is written."""
    monkeypatch.setenv("CAMBRIAN_ENGINE_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CAMBRIAN_ENGINE_LLM_MODEL", "m")
    dump = tmp_path / "dump"
    (dump / "images").mkdir(parents=True)
    (dump / "pages.jsonl").write_text(json.dumps({"title": "T", "text": "x", "images": []}) + "\n")
    config = write_config(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    same_dump = runner.invoke(
        app, ["data", "engine", str(config), "--wiki-dump", str(dump), "--out", str(dump)]
    )
    assert same_dump.exit_code == 2, same_dump.output
    assert same_dump.stderr.strip() == (
        f"error: refusing to write output directory {dump / 'images'}: it is the same path as wiki dump "
        f"directory {dump / 'images'} ({(dump / 'images').resolve()}); choose another output directory"
    )
    in_dump_images = runner.invoke(
        app, ["data", "engine", str(config), "--wiki-dump", str(dump), "--out", str(dump / "images" / "run")]
    )
    assert in_dump_images.exit_code == 2 and "lies inside wiki dump directory" in in_dump_images.stderr

    out = tmp_path / "run"
    out.mkdir()
    inside = out / "config.yaml"
    inside.write_bytes(config.read_bytes())
    over_config = runner.invoke(app, ["data", "engine", str(inside), "--out", str(out)])
    assert over_config.exit_code == 2
    assert (
        f"refusing to write output file {inside}: it is the same file as engine config file"
        in over_config.stderr
    )
    assert inside.read_bytes() == config.read_bytes()

    a_file = tmp_path / "file.out"
    a_file.write_text("keep")
    not_dir = runner.invoke(app, ["data", "engine", str(config), "--out", str(a_file)])
    assert (
        not_dir.exit_code == 2
        and f"output directory {a_file} exists and is not a directory" in not_dir.stderr
    )
    assert a_file.read_text() == "keep"
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {Path("run"), Path("run/config.yaml"), Path("file.out")}


def test_library_refuses_before_asking_anything(tmp_path, llm):
    dump = tmp_path / "dump"
    (dump / "images").mkdir(parents=True)
    (dump / "pages.jsonl").write_text("")
    config = write_config(tmp_path)
    with pytest.raises(
        ValueError, match=r"^refusing to write output directory .*images: it is the same path"
    ):
        run_lib(config, dump, llm, {"wiki_dump": dump})
    assert llm.requests == [] and sorted(p.name for p in dump.iterdir()) == ["images", "pages.jsonl"]
