"""The data engine's parts on their own: HTML extraction, reply parsing, rate limit, retries, config, dump."""

from __future__ import annotations

import json
import threading
from email.utils import formatdate
from pathlib import Path

import pytest
from PIL import Image

from cambrian.curation.engine.config import resolve_config
from cambrian.curation.engine.extract import best_src, candidate_figures, original_name, parse_html
from cambrian.curation.engine.llm import Malformed, chat_url, parse_json
from cambrian.curation.engine.net import Counters, HttpClient, HttpError, RateLimiter, _retry_after
from cambrian.curation.engine.prompts import parse_qas, parse_topics
from cambrian.curation.engine.wiki import DumpSource, ImageUnavailable
from cambrian.utils.config import ConfigError
from tests.curation.engine_fakes import _Handler, _Server

REPO = Path(__file__).resolve().parents[2]

PAGE = """<div class="mw-parser-output">
<style>.x{}</style>
<p>Optics is the study of <b>light</b><sup class="reference">[1]</sup>.
<p>Second paragraph, unclosed.
<table class="infobox"><tr><td class="infobox-image"><span typeof="mw:File"><a><img src="//up.org/box.jpg"
 width="250" height="200"></a></span><div class="infobox-caption">Infobox picture</div></td></tr>
<tr><th>Born</th><td>1643</td></tr></table>
<figure typeof="mw:File/Thumb"><a><img src="//up.org/thumb/a/ab/Prism.jpg/220px-Prism.jpg"
 srcset="//up.org/330px-Prism.jpg 1.5x, //up.org/440px-Prism.jpg 2x" width="220" height="150" alt="prism"></a>
<figcaption>A prism splits <i>white</i> light.</figcaption></figure>
<div class="mw-heading mw-heading2"><h2 id="History">History</h2><span class="mw-editsection">[edit]</span></div>
<div class="thumb tright"><div class="thumbinner"><a class="image"><img src="/w/thumb/1/12/Lens.png/300px-Lens.png"
 width="300" height="200"></a><div class="thumbcaption"><div class="magnify"><a>enlarge</a></div>A lens</div></div></div>
<ul class="gallery"><li class="gallerybox"><div class="thumb"><img src="/g/Eye.jpg" width="120" height="120"></div>
<div class="gallerytext">An eye</div></li></ul>
<p>Newton studied it.</p>
<img src="/flag.png" width="20" height="14" alt="flag">
<div class="thumb"><img src="//up.org/thumb/d/de/Ray.svg/250px-Ray.svg.png" width="250" height="100"></div>
<figure><img src="/w/Noc.jpg" width="200" height="200"></figure>
<figure><img src="//up.org/440px-Prism.jpg" width="220" height="150"><figcaption>Again</figcaption></figure>
<table class="navbox"><tr><td><img src="/nav.jpg" width="200" height="200" alt="nav"></td></tr></table>
<h2>References</h2><ol class="references"><li>A ref.</li></ol><figure><img src="/tail.jpg" width="300"
 height="300"><figcaption>Tail</figcaption></figure><p>tail text</p>
</div>"""


def test_parse_html_sections_and_figures():
    page = parse_html(PAGE)
    assert [s.title for s in page.sections] == ["", "History", "References"]
    assert page.sections[0].text == "Optics is the study of light. Second paragraph, unclosed."
    assert page.sections[1].text == "Newton studied it."
    assert page.sections[2].text == ""
    got = [(f.src, f.caption or f.alt, f.section) for f in page.figures]
    assert got == [
        ("//up.org/box.jpg", "Infobox picture", 0),
        ("//up.org/440px-Prism.jpg", "A prism splits white light.", 0),
        ("/w/thumb/1/12/Lens.png/300px-Lens.png", "A lens", 1),
        ("/g/Eye.jpg", "An eye", 1),
        ("/flag.png", "flag", 1),
        ("//up.org/thumb/d/de/Ray.svg/250px-Ray.svg.png", "", 1),
        ("/w/Noc.jpg", "", 1),
        ("//up.org/440px-Prism.jpg", "Again", 1),
    ]  # navbox and the References section contribute nothing


def test_candidate_figures_filters_and_context():
    page = parse_html(PAGE)
    kept, rejected = candidate_figures(
        page, base_url="https://en.wikipedia.org/w/api.php", min_side=100, max_chars=40
    )
    assert [k["url"] for k in kept] == [
        "https://up.org/box.jpg",
        "https://up.org/440px-Prism.jpg",
        "https://en.wikipedia.org/w/thumb/1/12/Lens.png/300px-Lens.png",
        "https://en.wikipedia.org/g/Eye.jpg",
    ]
    assert rejected == {"icon": 1, "non-raster": 1, "no caption": 1, "duplicate": 1}
    assert kept[0]["context"] == "Optics is the study of light. Second ..."  # cut at a word boundary
    assert kept[2]["section"] == "History" and kept[2]["context"] == "Newton studied it."
    kept, _ = candidate_figures(page, base_url="https://x.org/", min_side=100, max_chars=300)
    # a short section is topped up with the lead
    assert (
        kept[2]["context"] == "Newton studied it. Optics is the study of light. Second paragraph, unclosed."
    )


def test_srcset_and_original_names():
    assert best_src({"src": "a.jpg", "srcset": "b.jpg 1.5x, c.jpg 2x"}) == "c.jpg"
    assert best_src({"src": "a.jpg", "srcset": "b.jpg 400w, c.jpg 800w", "width": "200"}) == "c.jpg"
    assert best_src({"src": "a.jpg", "srcset": "garbage"}) == "a.jpg"
    assert (
        original_name("https://u.org/wikipedia/commons/thumb/a/ab/Foo%20bar.svg/220px-Foo.svg.png")
        == "Foo bar.svg"
    )
    assert original_name("https://u.org/wikipedia/commons/a/ab/Foo.jpg") == "Foo.jpg"


def test_parse_topics_and_qas():
    assert parse_topics('```json\n["Snell\'s law", "snell\'s  law", "Lens", 3]\n```', 5) == [
        "Snell's law",
        "Lens",
    ]
    assert parse_topics('Here you go: {"topics": [{"topic": "A"}, {"title": "B"}]}', 1) == ["A"]
    with pytest.raises(Malformed):
        parse_topics("I cannot help with that.", 3)
    with pytest.raises(Malformed):
        parse_topics('{"a": 1}', 3)
    qas, dropped = parse_qas(
        json.dumps({"qas": [{"question": "<image>\nWhat?", "answer": "This."}, {"question": "no answer"},
                            {"question": " ", "answer": "x"}, {"question": "Q2", "answer": "A2"}]}), 5
    )  # fmt: skip
    assert (
        qas == [{"question": "What?", "answer": "This."}, {"question": "Q2", "answer": "A2"}] and dropped == 2
    )
    with pytest.raises(Malformed, match="no usable items"):
        parse_qas('[{"q": "x", "a": "y"}]', 2)
    with pytest.raises(Malformed, match="not valid JSON"):
        parse_json("[1, 2")


def test_rate_limiter_spaces_requests():
    now, slept = [0.0], []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(2.0, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    assert slept == [0.5, 0.5, 0.5]  # the first is free (burst 1), then one every 1/rps s
    assert RateLimiter(0).acquire() == 0.0  # unlimited


def test_rate_limiter_is_shared_by_threads():
    now, lock, slept = [0.0], threading.Lock(), []

    def sleep(s):
        with lock:
            slept.append(s)

    limiter = RateLimiter(10.0, burst=1, clock=lambda: now[0], sleep=sleep)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slept) == pytest.approx([0.1, 0.2, 0.3, 0.4])  # each thread reserved its own slot


def test_retry_after_parsing():
    assert _retry_after({"Retry-After": "3"}) == 3.0
    assert 0 <= _retry_after({"Retry-After": formatdate(usegmt=True)}) <= 1
    assert _retry_after({"Retry-After": "soon"}) is None and _retry_after({}) is None


class _Scripted(_Handler):
    def do_GET(self):
        owner = self.server.owner
        with owner.lock:
            owner.hits += 1
            step = owner.script.pop(0) if owner.script else (200, {})
        status, headers = step
        if status == "sleep":
            threading.Event().wait(headers)
            status, headers = 200, {}
        self.send(status, b"ok", "text/plain", headers)


@pytest.fixture
def scripted():
    server = _Server(_Scripted)
    server.hits, server.script = 0, []
    with server:
        yield server


def client(counters, sleeps, **kw):
    args = dict(timeout=5, retries=3, backoff=0.5, max_backoff=60, rps=0, seed=0, sleep=sleeps.append)
    return HttpClient("t", counters=counters, **{**args, **kw})


def test_http_retries_transient_errors_and_honours_retry_after(scripted):
    counters, sleeps = Counters(), []
    scripted.script = [(503, {}), (429, {"Retry-After": "7"}), (500, {})]
    url = f"http://127.0.0.1:{scripted.port}/x"
    assert client(counters, sleeps).request(url) == b"ok"
    assert counters.snapshot() == {"t.requests": 4, "t.retries": 3}
    assert sleeps[1] == 7  # Retry-After, honoured
    assert 0.25 <= sleeps[0] <= 0.5 and 1.0 <= sleeps[2] <= 2.0  # exponential, with jitter
    again = []
    scripted.script = [(503, {}), (429, {"Retry-After": "7"}), (500, {})]
    client(Counters(), again).request(url)
    assert again == sleeps  # the jitter comes from the seeded generator


def test_http_fails_fast_on_4xx_and_gives_up_after_retries(scripted):
    counters, sleeps = Counters(), []
    scripted.script = [(404, {})]
    url = f"http://127.0.0.1:{scripted.port}/x"
    with pytest.raises(HttpError) as e:
        client(counters, sleeps).request(url)
    assert e.value.status == 404 and sleeps == [] and scripted.hits == 1
    scripted.script = [(502, {})] * 10
    with pytest.raises(HttpError, match="gave up after 3 attempts") as e:
        client(counters, sleeps, retries=2).request(url)
    assert e.value.status is None and scripted.hits == 4


def test_http_timeout_and_connection_errors_are_retried(scripted):
    counters, sleeps = Counters(), []
    scripted.script = [("sleep", 1.0)]
    url = f"http://127.0.0.1:{scripted.port}/x"
    assert client(counters, sleeps, timeout=0.2).request(url) == b"ok"
    assert counters.get("t.retries") == 1
    with pytest.raises(HttpError, match="gave up after 2 attempts"):
        client(counters, sleeps, retries=1).request("http://127.0.0.1:9/nothing-listens-here")


def test_resolve_config_precedence_and_env(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fields: {Physics: [Optics]}\nllm: {model: from-file}\n")
    env = {"OPENAI_BASE_URL": "http://openai/v1", "CAMBRIAN_ENGINE_LLM_MODEL": "from-env"}
    cfg = resolve_config(path, env=env)
    assert (cfg.llm.url, cfg.llm.model) == ("http://openai/v1", "from-file")  # file beats env
    env["CAMBRIAN_ENGINE_LLM_URL"] = "http://mine/v1"
    cfg = resolve_config(path, ["llm.model=from-override"], llm_url="http://cli/v1", env=env)
    assert (cfg.llm.url, cfg.llm.model) == ("http://cli/v1", "from-override")
    assert resolve_config(path, env=env).llm.url == "http://mine/v1"  # ours beats OPENAI_BASE_URL
    with pytest.raises(ConfigError, match="fields: give at least one field"):
        resolve_config(None, ["llm.model=m"], env=env)
    with pytest.raises(ConfigError, match=r"wiki\.url"):
        resolve_config(path, ["wiki.url=ftp://x"], env=env)
    json_config = tmp_path / "c.json"
    json_config.write_text(json.dumps({"fields": {"Physics": ["Optics"]}, "qas_per_image": 3}))
    assert resolve_config(json_config, env=env).qas_per_image == 3
    shipped = resolve_config(REPO / "configs" / "engine" / "science.yaml", env=env)
    assert len(shipped.fields) == 4 and shipped.llm.model == "from-env"
    assert chat_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_dump_search_page_and_image(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.png")
    rows = [
        {"title": "Light", "text": "Light and optics. Optics optics."},
        {"title": "Optics", "text": "Study of light."},
        {"title": "Sound", "text": "Waves."},
        {"title": "Optical fibre", "html": "<p>Glass <b>optics</b> for light</p>"},
    ]
    (tmp_path / "pages.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    src = DumpSource(tmp_path)
    assert src.search("optics", 10) == ["Optics", "Light", "Optical fibre"]  # title match first, then counts
    assert src.search("The light of optics", 2) == ["Light", "Optics"]  # "the", "of": not search terms
    assert src.search("?!", 5) == [] and src.search("acoustics", 5) == []
    assert src.page("optics").title == "Optics" and src.page("Nope") is None
    assert "<p>Study of light.</p>" in src.page("Optics").html
    assert src.image(src.base_url + "images/a.png").startswith(b"\x89PNG")
    for bad in ("http://x/a.png", src.base_url + "../etc/passwd", src.base_url + "images/none.png"):
        with pytest.raises(ImageUnavailable):
            src.image(bad)
