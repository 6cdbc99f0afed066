"""Where the engine's pages come from: a MediaWiki API (Wikipedia by default) or a local dump folder.

Both sources have one interface (``WikiSource``): ``search(query, limit)`` -> titles,
``page(title)`` -> ``WikiPage`` (HTML) or None when missing, ``image(url)`` -> bytes, plus ``base_url``
against which relative ``<img src>`` values resolve and ``ident``, which keys the on-disk cache.

MediaWiki API (``MediaWikiSource``): ``action=query&list=search`` for search, ``action=parse&prop=text``
for the rendered HTML; images are the ``<img src>`` (largest ``srcset``) of that HTML, downloaded
directly. Every request carries ``wiki.user_agent``, as Wikimedia's policy asks.

Local dump (``DumpSource``), for offline use, is a directory::

    pages.jsonl     one JSON object per line:
                    {"title": "Prism", "url": "https://...",            # url optional
                     "html": "<p>...</p><figure><img src='images/prism.png'><figcaption>..."}
                 or {"title": "Prism", "text": "Paragraphs.\\n\\nSeparated by blank lines.",
                     "images": [{"file": "images/prism.png", "caption": "A prism", "alt": "..."}]}
    images/         the image files; paths in ``src``/``file`` are relative to the dump directory

Dump search is a plain case-insensitive match: every word of 3+ letters of the query (bar a few
stopwords such as "the") must occur in the title or text; pages whose title holds every such word rank
first, then more occurrences, then file order.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlencode, urljoin, urlparse

from cambrian.curation.engine.config import WikiConfig
from cambrian.curation.engine.net import Counters, HttpClient

# Words too common to require in a dump search ("History of the telescope" should find "Telescope").
STOPWORDS = frozenset("the and for with from into its about between".split())


class WikiError(Exception):
    """The wiki answered, but with an error (``code`` as the API gives it) or something unparseable."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ImageUnavailable(WikiError):
    """This image cannot be had from this source (outside the dump, missing file): not worth retrying."""


@dataclass
class WikiPage:
    title: str
    url: str | None
    html: str


class WikiSource(Protocol):
    ident: str
    base_url: str

    def search(self, query: str, limit: int) -> list[str]: ...

    def page(self, title: str) -> WikiPage | None: ...

    def image(self, url: str) -> bytes: ...


class MediaWikiSource:
    """A MediaWiki ``api.php`` (Wikipedia or any other wiki), over a rate-limited retrying client."""

    def __init__(self, cfg: WikiConfig, counters: Counters, seed: int = 0) -> None:
        self.api = cfg.url
        self.ident = cfg.url
        self.base_url = cfg.url
        self.max_image_bytes = cfg.max_image_bytes
        self.http = HttpClient(
            "wiki", timeout=cfg.timeout, retries=cfg.retries, backoff=cfg.backoff, max_backoff=cfg.max_backoff,
            rps=cfg.rps, counters=counters, seed=seed, headers={"User-Agent": cfg.user_agent},
        )  # fmt: skip

    def _api(self, **params: Any) -> dict[str, Any]:
        query = urlencode({**params, "format": "json", "formatversion": "2"})
        raw = self.http.request(f"{self.api}?{query}")
        try:
            data = json.loads(raw)
        except ValueError:
            raise WikiError(f"{self.api}: not a JSON answer: {raw[:120]!r}") from None
        if not isinstance(data, dict):
            raise WikiError(f"{self.api}: expected a JSON object, got {type(data).__name__}")
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            raise WikiError(
                f"{self.api}: {err.get('code')}: {err.get('info')}", code=str(err.get("code", ""))
            )
        return data

    def page_url(self, title: str) -> str:
        # api.php lives at /w/api.php on Wikimedia wikis and articles at /wiki/Title.
        return urljoin(self.api, "../wiki/" + quote(title.replace(" ", "_"), safe="/:(),'!"))

    def search(self, query: str, limit: int) -> list[str]:
        data = self._api(
            action="query", list="search", srsearch=query, srlimit=limit, srnamespace=0, srprop=""
        )
        hits = data.get("query", {}).get("search", [])
        return [h["title"] for h in hits if isinstance(h, dict) and isinstance(h.get("title"), str)][:limit]

    def page(self, title: str) -> WikiPage | None:
        try:
            data = self._api(
                action="parse",
                page=title,
                prop="text",
                redirects=1,
                disableeditsection=1,
                disablelimitreport=1,
            )
        except WikiError as e:
            if e.code in ("missingtitle", "invalidtitle", "pagecannotexist"):
                return None
            raise
        parsed = data.get("parse")
        if not isinstance(parsed, dict):
            raise WikiError(f"{self.api}: no 'parse' in the answer for {title!r}")
        text = parsed.get("text", "")
        if isinstance(text, dict):  # formatversion=1 shape: {"*": html}
            text = text.get("*", "")
        title = parsed.get("title", title)
        return WikiPage(title=title, url=self.page_url(title), html=str(text))

    def image(self, url: str) -> bytes:
        if urlparse(url).scheme not in ("http", "https"):
            raise ImageUnavailable(f"not an http(s) image URL: {url}")
        return self.http.request(url, max_bytes=self.max_image_bytes)


@dataclass
class _DumpRow:
    title: str
    url: str | None
    html: str
    haystack: str  # lower-cased title + text, for search


def _row_html(row: dict[str, Any], where: str) -> str:
    if isinstance(row.get("html"), str):
        return row["html"]
    if not isinstance(row.get("text"), str):
        raise WikiError(f"{where}: a row needs 'html' or 'text'")
    paras = [p.strip() for p in re.split(r"\n\s*\n", row["text"]) if p.strip()]
    parts = [f"<p>{html_lib.escape(p)}</p>" for p in paras]
    for k, img in enumerate(row.get("images") or []):
        if not isinstance(img, dict) or not isinstance(img.get("file"), str):
            raise WikiError(f"{where}: images[{k}] needs a 'file' (path relative to the dump directory)")
        src = html_lib.escape(quote(img["file"]), quote=True)
        alt = html_lib.escape(str(img.get("alt", "")), quote=True)
        parts.append(
            f'<figure><img src="{src}" alt="{alt}"><figcaption>{html_lib.escape(str(img.get("caption", "")))}'
            "</figcaption></figure>"
        )
    return "\n".join(parts)


class DumpSource:
    """Pages from a local dump directory (see the module docstring); read lazily, then kept in memory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.ident = f"dump:{self.root}"
        self.base_url = self.root.as_uri() + "/"
        self._rows: list[_DumpRow] | None = None
        self._by_title: dict[str, _DumpRow] = {}
        self._lock = threading.Lock()

    def _load(self) -> list[_DumpRow]:
        with self._lock:
            if self._rows is not None:
                return self._rows
            rows = []
            path = self.root / "pages.jsonl"
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}:{n}"
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise WikiError(f"{where}: not JSON: {e}") from None
                    if not isinstance(row, dict) or not isinstance(row.get("title"), str) or not row["title"]:
                        raise WikiError(f"{where}: a row needs a non-empty 'title'")
                    page_html = _row_html(row, where)
                    text = re.sub(r"<[^>]+>", " ", page_html)  # good enough for matching words
                    haystack = f"{row['title']}\n{html_lib.unescape(text)}".lower()
                    url = row.get("url") if isinstance(row.get("url"), str) else None
                    rows.append(_DumpRow(row["title"], url, page_html, haystack))
                    self._by_title.setdefault(row["title"].lower(), rows[-1])
            self._rows = rows
            return rows

    def search(self, query: str, limit: int) -> list[str]:
        words = re.findall(r"\w+", query.lower())
        terms = [w for w in words if len(w) >= 3 and w not in STOPWORDS] or words
        if not terms:
            return []
        scored = []
        for k, row in enumerate(self._load()):
            counts = [row.haystack.count(t) for t in terms]
            if all(counts):
                in_title = all(t in row.title.lower() for t in terms)
                scored.append((not in_title, -sum(counts), k, row.title))
        return [title for *_, title in sorted(scored)[:limit]]

    def page(self, title: str) -> WikiPage | None:
        self._load()
        row = self._by_title.get(title.lower())
        return None if row is None else WikiPage(title=row.title, url=row.url, html=row.html)

    def image(self, url: str) -> bytes:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ImageUnavailable(f"offline dump: {url} is not a file in {self.root}")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ImageUnavailable(f"{url} is outside the dump directory {self.root}")
        if not path.is_file():
            raise ImageUnavailable(f"missing image file {path}")
        return path.read_bytes()


def open_source(cfg: WikiConfig, counters: Counters, seed: int = 0) -> WikiSource:
    """The dump when ``cfg.dump`` is set, else the MediaWiki API at ``cfg.url``."""
    if cfg.dump is not None:
        return DumpSource(cfg.dump)
    return MediaWikiSource(cfg, counters, seed=seed)
