"""Fake services for the data-engine tests: an OpenAI-compatible LLM and a MediaWiki API, both real HTTP
servers on 127.0.0.1 (port 0, a thread each) that count what they are asked and can misbehave on cue.

FakeLLM answers from the prompt: topic prompts get ``["<Subfield> topic 1", ...]`` (or ``topics[subfield]``),
QA prompts get pairs built from the image caption. Faults: ``statuses`` (prompt substring -> HTTP statuses
to return first, e.g. [429, 500]), ``malformed`` (substring -> every reply is prose, not JSON),
``malformed_once`` (substring -> the first reply is prose; the re-ask with the repair turn succeeds),
``delay`` (seconds before each QA reply). FakeWiki's ``image_faults`` (image name substring -> count)
answers that many 503s first.

FakeWiki serves ``/w/api.php`` (list=search, action=parse with formatversion=2) and ``/images/...``:
every title exists except "Missing page"; each page has a lead paragraph and, in order, a too-small
image (no size attributes), an icon, an SVG thumbnail, figure A (RGBA PNG, Parsoid markup with a 2x
srcset), figure B (legacy thumb), figure C; search returns the query itself plus "Shared figure page"
(or "Missing page" for "Thermodynamics topic 2"). The shared page also has a 404 and an unreadable image.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image, ImageDraw

SHARED = "Shared figure page"
MISSING = "Missing page"


def _png(size: tuple[int, int], seed: str, mode: str = "RGB") -> bytes:
    h = hashlib.sha1(seed.encode()).digest()
    color = (h[0], h[1], h[2]) if mode == "RGB" else (h[0], h[1], h[2], 255)
    im = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    ImageDraw.Draw(im).rectangle([size[0] // 6, size[1] // 6, size[0] * 5 // 6, size[1] * 5 // 6], fill=color)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class _Server:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-request
            pass


class FakeLLM(_Server):
    def __init__(self) -> None:
        super().__init__(_LLMHandler)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict[str, Any]] = []  # request bodies, in arrival order
        self.headers: list[dict[str, str]] = []
        self.statuses: dict[str, list[int]] = {}
        self.malformed: set[str] = set()
        self.malformed_once: set[str] = set()
        self.topics: dict[str, list[str]] = {}
        self.delay = 0.0

    def prompts(self, kind: str | None = None) -> list[str]:
        """The first user message of each request (``kind``: "topics" or "qa" to filter)."""
        with self.lock:
            out = [r["messages"][1]["content"] for r in self.requests]
        if kind == "topics":
            return [p for p in out if "Image caption:" not in p]
        if kind == "qa":
            return [p for p in out if "Image caption:" in p]
        return out

    def reply(self, body: dict[str, Any]) -> tuple[int, str | None]:
        prompt = body["messages"][1]["content"]
        with self.lock:
            self.requests.append(body)
            for key, statuses in self.statuses.items():
                if key in prompt and statuses:
                    return statuses.pop(0), None
        first_try = len(body["messages"]) == 2
        if any(k in prompt for k in self.malformed) or (
            first_try and any(k in prompt for k in self.malformed_once)
        ):
            return 200, "Sure! Here are some great questions about this image."
        if "Image caption:" in prompt:
            if self.delay:
                time.sleep(self.delay)
            caption = re.search(r"^Image caption: (.*)$", prompt, re.M).group(1)
            topic = re.search(r"^Topic: (.*)$", prompt, re.M).group(1)
            n = int(re.search(r"Write (\d+) question-answer", prompt).group(1))
            pairs = [
                {"question": f"What does this figure show? ({caption})", "answer": f"It shows {caption}."},
                {"question": f"Which topic does this figure illustrate? ({caption})", "answer": topic},
                {"answer": "an item without a question is dropped"},
            ]
            return 200, json.dumps(pairs[:n] + pairs[2:])
        subfield = re.search(r"^Subfield: (.*)$", prompt, re.M).group(1)
        n = int(re.search(r"List (\d+) distinct", prompt).group(1))
        topics = self.topics.get(subfield) or [f"{subfield} topic {i}" for i in range(1, n + 1)]
        return 200, "```json\n" + json.dumps(topics[:n]) + "\n```"


class _LLMHandler(_Handler):
    def do_POST(self) -> None:
        owner: FakeLLM = self.server.owner  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with owner.lock:
            owner.headers.append(dict(self.headers))
        if not self.path.endswith("/chat/completions"):
            self.send(404, b'{"error": "not found"}')
            return
        status, content = owner.reply(body)
        if status != 200:
            self.send(status, b'{"error": {"message": "try again"}}', headers={"Retry-After": "0"})
            return
        answer = {"id": "x", "object": "chat.completion", "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}]}  # fmt: skip
        self.send(200, json.dumps(answer).encode())


def page_html(title: str) -> str:
    slug = hashlib.sha1(title.encode()).hexdigest()[:8]
    extra = ""
    if title == SHARED:
        extra = (
            f'<figure><img src="/images/{slug}-gone.png" width="200" height="150"><figcaption>A lost figure'
            f'</figcaption></figure><figure><img src="/images/{slug}-broken.png" width="200" height="150">'
            "<figcaption>A broken figure</figcaption></figure>"
        )
    return f"""<div class="mw-content-ltr mw-parser-output">
<p><b>{title}</b> is a topic with figures.<sup class="reference"><a href="#cite">[1]</a></sup></p>
<figure><img src="/images/{slug}-tiny.png"><figcaption>A tiny figure of {title}</figcaption></figure>
<p>An icon <img src="/images/{slug}-icon.png" width="16" height="16" alt="icon"> inline.</p>
{extra}
<figure typeof="mw:File/Thumb"><a href="/wiki/File:{slug}-a.png" class="mw-file-description"><img
 src="/images/{slug}-a.png" srcset="/images/{slug}-a@1.5x.png 1.5x, /images/{slug}-a@2x.png 2x"
 width="120" height="90" class="mw-file-element"></a><figcaption>Figure A of {title}</figcaption></figure>
<figure><img src="/images/thumb/1/12/{slug}.svg/200px-{slug}.svg.png" width="200" height="200">
<figcaption>A vector diagram</figcaption></figure>
<div class="mw-heading mw-heading2"><h2 id="Details">Details</h2><span class="mw-editsection">[edit]</span></div>
<p>The details of {title} are explained here.</p>
<div class="thumb tright"><div class="thumbinner"><a href="/wiki/File:{slug}-b.png" class="image"><img
 src="/images/{slug}-b.png" width="160" height="120" class="thumbimage"></a><div class="thumbcaption">
<div class="magnify"><a href="/wiki/File:{slug}-b.png" title="Enlarge"></a></div>Figure B of {title}</div></div></div>
<figure><img src="/images/{slug}-c.png" width="160" height="120"><figcaption>Figure C of {title}</figcaption></figure>
<h2>References</h2><ol class="references"><li id="cite">A reference.</li></ol>
</div>"""


class FakeWiki(_Server):
    def __init__(self) -> None:
        super().__init__(_WikiHandler)
        self.url = f"http://127.0.0.1:{self.port}/w/api.php"
        self.counts: Counter[str] = Counter()  # "search", "parse", "image"
        self.paths: list[str] = []
        self.user_agents: set[str] = set()
        self.image_faults: dict[str, int] = {}  # image name substring -> how many 503s to answer first

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def image(self, name: str) -> bytes | None:
        if name.endswith("-gone.png"):
            return None
        if name.endswith("-broken.png"):
            return b"this is not an image"
        if name.endswith("-tiny.png"):
            return _png((12, 10), name)
        if "-a@2x" in name:
            return _png((240, 180), name, mode="RGBA")
        return _png((160, 120), name)


class _WikiHandler(_Handler):
    def do_GET(self) -> None:
        owner: FakeWiki = self.server.owner  # type: ignore[attr-defined]
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with owner.lock:
            owner.paths.append(self.path)
            owner.user_agents.add(self.headers.get("User-Agent", ""))
        if url.path.startswith("/images/"):
            with owner.lock:
                owner.counts["image"] += 1
            name = url.path.rsplit("/", 1)[-1]
            with owner.lock:
                fault = next((k for k, n in owner.image_faults.items() if k in name and n > 0), None)
                if fault is not None:
                    owner.image_faults[fault] -= 1
            if fault is not None:
                self.send(503, b"busy", "text/plain")
                return
            data = owner.image(name)
            if data is None:
                self.send(404, b"not found", "text/plain")
            else:
                self.send(200, data, "image/png")
            return
        if url.path != "/w/api.php" or q.get("format") != "json":
            self.send(400, b'{"error": {"code": "badrequest", "info": "?"}}')
            return
        if q.get("action") == "query" and q.get("list") == "search":
            with owner.lock:
                owner.counts["search"] += 1
            query = q["srsearch"]
            other = MISSING if query == "Thermodynamics topic 2" else SHARED
            hits = [{"ns": 0, "title": t} for t in (query, other)][: int(q.get("srlimit", 10))]
            self.send(200, json.dumps({"batchcomplete": True, "query": {"search": hits}}).encode())
            return
        if q.get("action") == "parse":
            with owner.lock:
                owner.counts["parse"] += 1
            title = q["page"]
            if title == MISSING:
                err = {"error": {"code": "missingtitle", "info": "The page you specified doesn't exist."}}
                self.send(200, json.dumps(err).encode())
                return
            answer = {"parse": {"title": title, "pageid": 1, "text": page_html(title)}}
            self.send(200, json.dumps(answer).encode())
            return
        self.send(200, b'{"error": {"code": "unknown_action", "info": "?"}}')
