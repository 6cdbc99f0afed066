"""The engine's stages, each a pool of threads over independent units of work::

    topics   one LLM call per (field, subfield)          -> topic names
    search   one wiki search per topic                   -> page titles (a page belongs to the first
                                                            topic that found it)
    pages    one page fetch per title                    -> candidate figures with caption + context
    images   one download per image (in rounds, so each  -> a validated RGB JPEG under images/
             page gets up to images_per_page good ones)
    qa       one LLM call per kept image                 -> question-answer pairs

Every unit's result goes to the ``cache`` as soon as it is done. Outcomes that would repeat (malformed
LLM output after the re-asks, a missing page, a rejected image) are cached too; transport failures
(retries exhausted) are not, so the next run tries them again.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cambrian.curation.engine.cache import Cache, atomic_write, unit_key
from cambrian.curation.engine.config import EngineConfig
from cambrian.curation.engine.extract import candidate_figures, parse_html
from cambrian.curation.engine.llm import ChatClient
from cambrian.curation.engine.net import HttpError
from cambrian.curation.engine.prompts import parse_qas, parse_topics, qa_messages, topic_messages
from cambrian.curation.engine.wiki import ImageUnavailable, WikiError, WikiSource

STAGES = ("topics", "search", "pages", "images", "qa")


# Statuses that no retry or rerun will fix and that every other unit would hit too: wrong URL, model or
# key, or a User-Agent the wiki refuses. The run stops at the first one instead of failing unit by unit.
FATAL_STATUS = frozenset({401, 403, 404, 405})


class EngineAbort(RuntimeError):
    """The run cannot go on (see ``FATAL_STATUS``); finished units stay cached."""


@dataclass
class _Unit:
    key: str
    work: Callable[[], dict[str, Any]]
    valid: Callable[[dict[str, Any]], bool] | None = None  # is a cached result still usable?


def _to_rgb(im: Any) -> Any:
    from cambrian.utils.images import to_rgb

    # Transparent diagrams become black-on-black when the alpha channel is simply dropped: use white.
    return to_rgb(im, background=(255, 255, 255))


class Stages:
    """The five stages as methods over one run's state, which ``Engine`` sets up and whose results it
    assembles; kept apart so the work (services, images, cache) reads separately from the output."""

    cfg: EngineConfig
    out: Path
    llm: ChatClient
    source: WikiSource
    cache: Cache
    failures: list[str]
    units: dict[str, Counter[str]]  # per stage: units cached, done, failed in this run
    _bar: Any
    _totals: Counter[str]  # units per stage so far (images come in rounds)
    # each stage's results, kept for stats.json
    _topic_results: list[dict[str, Any] | None]
    _search_results: list[dict[str, Any] | None]
    _page_results: list[dict[str, Any] | None]
    _image_results: dict[str, dict[str, Any]]

    # ---- running units ---------------------------------------------------------------------------
    def _stage(self, name: str, units: list[_Unit], workers: int, task: Any) -> list[dict[str, Any] | None]:
        """Each unit's result (cached or computed; None if it failed), in the order given."""
        first: dict[str, int] = {}
        for i, unit in enumerate(units):
            first.setdefault(unit.key, i)
        done: dict[str, dict[str, Any]] = {}
        todo: list[_Unit] = []
        for key, i in first.items():
            hit = self.cache.get(name, key)
            if hit is not None and (units[i].valid is None or units[i].valid(hit)):
                done[key] = hit
            else:
                todo.append(units[i])
        self.units[name]["cached"] += len(done)
        self._totals[name] += len(first)
        self._bar.update(task, total=self._totals[name], advance=len(done))

        def one(unit: _Unit) -> dict[str, Any]:
            value = unit.work()
            self.cache.put(name, unit.key, value)  # right away: a kill after this loses nothing of it
            return value

        if todo:
            pool = ThreadPoolExecutor(
                max_workers=min(workers, len(todo)), thread_name_prefix=f"engine-{name}"
            )
            try:
                futures = {pool.submit(one, unit): unit for unit in todo}
                for fut in as_completed(futures):
                    unit = futures[fut]
                    try:
                        done[unit.key] = fut.result()
                        self.units[name]["done"] += 1
                    except HttpError as e:
                        if e.status in FATAL_STATUS:
                            raise EngineAbort(
                                f"{name}: {e} (check the service URL, model name and API key)"
                            ) from e
                        self.units[name]["failed"] += 1
                        self.failures.append(f"{name}: {e}")
                    except WikiError as e:
                        self.units[name]["failed"] += 1
                        self.failures.append(f"{name}: {e}")
                    self._bar.advance(task)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: stop queued units now
                raise
            pool.shutdown(wait=True)
        return [done.get(unit.key) for unit in units]

    # ---- the stages ------------------------------------------------------------------------------
    def _topics(self, task: Any) -> list[tuple[str, str, list[str]]]:
        cfg = self.cfg
        pairs = [(f, s) for f, subs in cfg.fields.items() for s in subs]
        units = []
        for f, s in pairs:
            msgs = topic_messages(f, s, cfg.topics_per_subfield)

            def work(f=f, s=s, msgs=msgs) -> dict[str, Any]:
                topics = self.llm.ask(
                    msgs, lambda t: parse_topics(t, cfg.topics_per_subfield), "topics", cfg.malformed_retries
                )
                out: dict[str, Any] = {"field": f, "subfield": s, "topics": topics or []}
                if topics is None:
                    out["skipped"] = "malformed"
                return out

            units.append(_Unit(unit_key("topics", cfg.llm.model, msgs), work))
        results = self._stage("topics", units, cfg.llm.concurrency, task)
        self._topic_results = results
        return [(f, s, r["topics"]) for (f, s), r in zip(pairs, results) if r is not None]

    def _search(self, topics: list[tuple[str, str, list[str]]], task: Any) -> list[dict[str, Any]]:
        """Pages in first-found order, each with the (field, subfield, topic) that found it first."""
        n = self.cfg.pages_per_topic
        triples = [(f, s, t) for f, s, ts in topics for t in ts]
        units = [
            _Unit(
                unit_key("search", self.source.ident, t, n),
                lambda t=t: {"query": t, "titles": self.source.search(t, n)},
            )
            for _, _, t in triples
        ]
        results = self._stage("search", units, self.cfg.wiki.concurrency, task)
        self._search_results = results
        owners: dict[str, dict[str, Any]] = {}
        for (f, s, t), r in zip(triples, results):
            for title in (r or {}).get("titles", []):
                owners.setdefault(title, {"field": f, "subfield": s, "topic": t, "title": title})
        return list(owners.values())

    def _pages(self, owners: list[dict[str, Any]], task: Any) -> list[dict[str, Any]]:
        cfg = self.cfg

        def work(title: str) -> dict[str, Any]:
            page = self.source.page(title)
            if page is None:
                return {"title": title, "missing": True}
            parsed = parse_html(page.html)
            figures, rejected = candidate_figures(
                parsed,
                base_url=self.source.base_url,
                min_side=cfg.min_image_side,
                max_chars=cfg.context_chars,
            )
            return {
                "title": page.title, "url": page.url, "figures_found": len(parsed.figures),
                "rejected": dict(sorted(rejected.items())), "figures": figures,
            }  # fmt: skip

        units = [
            _Unit(
                unit_key("page", self.source.ident, o["title"], cfg.min_image_side, cfg.context_chars),
                lambda t=o["title"]: work(t),
            )
            for o in owners
        ]
        results = self._stage("pages", units, cfg.wiki.concurrency, task)
        self._page_results = results
        pages, seen = [], set()
        for owner, r in zip(owners, results):
            if r is None or r.get("missing") or r["title"] in seen:  # two titles may redirect to one page
                continue
            seen.add(r["title"])
            pages.append({**owner, "title": r["title"], "url": r.get("url"), "figures": r["figures"]})
        return pages

    def _image_unit(self, url: str) -> _Unit:
        cfg = self.cfg
        key = unit_key("image", url, cfg.min_image_side, cfg.max_image_side)

        def work() -> dict[str, Any]:
            try:
                data = self.source.image(url)
            except ImageUnavailable as e:
                return {"url": url, "ok": False, "reason": "unavailable", "detail": str(e)[:200]}
            except HttpError as e:
                if e.status is None or e.status in (401, 403, 408, 429) or e.status >= 500:
                    raise  # transient (not cached: the next run tries again) or fatal (stops the run)
                return {"url": url, "ok": False, "reason": f"HTTP {e.status}"}
            return {"url": url, **self._save_image(data, key)}

        def valid(hit: dict[str, Any]) -> bool:
            return not hit.get("ok") or (self.out / hit["path"]).is_file()

        return _Unit(key, work, valid)

    def _save_image(self, data: bytes, key: str) -> dict[str, Any]:
        from PIL import Image

        cfg = self.cfg
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if min(im.size) < cfg.min_image_side:
                    return {"ok": False, "reason": "too small", "size": list(im.size)}
                rgb = _to_rgb(im)
        except Exception:  # PIL raises many types for bad bytes (OSError, SyntaxError, ValueError, ...)
            return {"ok": False, "reason": "unreadable"}
        if max(rgb.size) > cfg.max_image_side:
            rgb.thumbnail((cfg.max_image_side, cfg.max_image_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=90)
        rel = f"images/{key[:2]}/{key[:24]}.jpg"
        atomic_write(self.out / rel, buf.getvalue())
        return {"ok": True, "path": rel, "size": list(rgb.size)}

    def _images(self, pages: list[dict[str, Any]], task: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(page, figure + image) pairs: for each page its first images_per_page figures that download well.

        Runs in rounds: everyone's first ``images_per_page`` candidates, then, for pages that came up
        short, as many next candidates as they lack; the outcome equals a sequential scan per page. A page
        whose download failed for now (retries exhausted) takes no substitute, so that once a rerun gets
        that image the page ends up exactly as in an undisturbed run.
        """
        n = self.cfg.images_per_page
        owned: set[str] = set()
        queues = []  # per page: its candidate figures, each image URL only on the first page that has it
        for page in pages:
            figs = [f for f in page["figures"] if f["url"] not in owned]
            owned.update(f["url"] for f in figs)
            queues.append(figs)
        kept: list[list[dict[str, Any]]] = [[] for _ in pages]
        cursor = [0] * len(pages)
        blocked = [False] * len(pages)
        while True:
            batch: list[tuple[int, dict[str, Any]]] = []
            for p, figs in enumerate(queues):
                want = 0 if blocked[p] else n - len(kept[p])
                take = figs[cursor[p] : cursor[p] + want] if want > 0 else []
                cursor[p] += len(take)
                batch += [(p, f) for f in take]
            if not batch:
                break
            results = self._stage(
                "images", [self._image_unit(f["url"]) for _, f in batch], self.cfg.wiki.concurrency, task
            )
            for (p, fig), r in zip(batch, results):
                if r is None:
                    blocked[p] = True
                    continue
                self._image_results[fig["url"]] = r
                if r.get("ok"):
                    kept[p].append({**fig, "path": r["path"]})
        return [(page, fig) for page, figs in zip(pages, kept) for fig in figs]

    def _qa(
        self, items: list[tuple[dict[str, Any], dict[str, Any]]], task: Any
    ) -> list[dict[str, Any] | None]:
        cfg = self.cfg
        units = []
        for page, fig in items:
            msgs = qa_messages(
                page["field"], page["subfield"], page["topic"], page["title"], fig["section"], fig["context"],
                fig["caption"], cfg.qas_per_image,
            )  # fmt: skip

            def work(msgs=msgs, page=page, fig=fig) -> dict[str, Any]:
                got = self.llm.ask(
                    msgs, lambda t: parse_qas(t, cfg.qas_per_image), "qa", cfg.malformed_retries
                )
                out: dict[str, Any] = {
                    "title": page["title"],
                    "image_url": fig["url"],
                    "caption": fig["caption"],
                }
                if got is None:
                    return {**out, "qas": [], "skipped": "malformed"}
                return {**out, "qas": got[0], "dropped": got[1]}

            units.append(_Unit(unit_key("qa", cfg.llm.model, msgs), work))
        return self._stage("qa", units, cfg.llm.concurrency, task)
