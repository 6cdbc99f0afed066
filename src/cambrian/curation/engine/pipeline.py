"""The engine's stages, their on-disk cache, and the assembly of ``engine.jsonl`` and ``stats.json``.

Stages, each a pool of threads over independent units of work::

    topics   one LLM call per (field, subfield)          -> topic names
    search   one wiki search per topic                   -> page titles (a page belongs to the first
                                                            topic that found it)
    pages    one page fetch per title                    -> candidate figures with caption + context
    images   one download per image (in rounds, so each  -> a validated RGB JPEG under images/
             page gets up to images_per_page good ones)
    qa       one LLM call per kept image                 -> question-answer pairs

Every unit's result is a small JSON file under ``<out>/cache/<stage>/``, named by a hash of everything
that determines it (for LLM units: the model and the exact messages) and written atomically, so a rerun
skips finished units and a killed run loses only the units in flight. Outcomes that would repeat
(malformed LLM output after the re-asks, a missing page, a rejected image) are cached too; transport
failures (retries exhausted) are not, so the next run tries them again. ``engine.jsonl`` is rebuilt
from the cache in config order, which makes it byte-identical for the same config and services.

Output layout::

    <out>/engine.jsonl   VQA rows (cambrian.data.records format + provenance)
    <out>/images/        the images the rows point to (``images/ab/<hash>.jpg``, relative to <out>)
    <out>/stats.json     what each stage produced and skipped, and this run's requests and retries
    <out>/config.yaml    the resolved config (no API key)
    <out>/cache/         per-unit results (delete a stage's folder to redo that stage)

Nothing is written when one of these would replace or write into an input (the config file, a local
wiki dump's ``pages.jsonl`` or ``images/``): ``outputs.check_engine_outputs`` refuses first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cambrian.curation.engine.config import EngineConfig
from cambrian.curation.engine.extract import candidate_figures, parse_html
from cambrian.curation.engine.llm import ChatClient
from cambrian.curation.engine.net import Counters, HttpError
from cambrian.curation.engine.prompts import parse_qas, parse_topics, qa_messages, topic_messages
from cambrian.curation.engine.wiki import ImageUnavailable, WikiError, WikiSource, open_source
from cambrian.curation.outputs import check_engine_outputs
from cambrian.models.tokenization import IMAGE_TOKEN
from cambrian.utils.config import save_yaml

STAGES = ("topics", "search", "pages", "images", "qa")
SOURCE = "data_engine"


def unit_key(*parts: Any) -> str:
    """A stable file name for a unit of work: sha1 of its defining inputs as canonical JSON."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it over ``path``: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Cache:
    """One JSON file per finished unit: ``<root>/<stage>/<key[:2]>/<key>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / f"{key}.json"

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        path = self.path(stage, key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # only a hand-edited file can be torn; redo that unit
            return None
        return value if isinstance(value, dict) else None

    def put(self, stage: str, key: str, value: dict[str, Any]) -> None:
        atomic_write(self.path(stage, key), json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"))


# Statuses that no retry or rerun will fix and that every other unit would hit too: wrong URL, model or
# key, or a User-Agent the wiki refuses. The run stops at the first one instead of failing unit by unit.
FATAL_STATUS = frozenset({401, 403, 404, 405})


class EngineAbort(RuntimeError):
    """The run cannot go on (see ``FATAL_STATUS``); finished units stay cached."""


@dataclass
class EngineResult:
    out: Path
    rows: int
    stats: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when no unit failed for good (a rerun would add nothing)."""
        return not self.failures


@dataclass
class _Unit:
    key: str
    work: Callable[[], dict[str, Any]]
    valid: Callable[[dict[str, Any]], bool] | None = None  # is a cached result still usable?


def _to_rgb(im: Any) -> Any:
    from cambrian.utils.images import to_rgb

    # Transparent diagrams become black-on-black when the alpha channel is simply dropped: use white.
    return to_rgb(im, background=(255, 255, 255))


class Engine:
    """One run over one config into one output directory; ``run()`` does everything.

    ``llm`` and ``source`` may be passed in (tests, other wikis); by default they are built from the
    config. Nothing touches the network or the disk before ``run()``.
    """

    def __init__(
        self,
        cfg: EngineConfig,
        out: str | Path,
        *,
        console: Any = None,
        progress: bool = True,
        llm: ChatClient | None = None,
        source: WikiSource | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.config_path = config_path
        self.console = console
        self.show_progress = progress
        self.counters = llm.counters if llm is not None else Counters()
        self.llm = llm if llm is not None else ChatClient(cfg.llm, self.counters, seed=cfg.seed)
        self.source = source if source is not None else open_source(cfg.wiki, self.counters, seed=cfg.seed)
        self.cache = Cache(self.out / "cache")
        self.failures: list[str] = []
        self.units: dict[str, Counter[str]] = {s: Counter() for s in STAGES}
        self._bar: Any = None
        self._totals: Counter[str] = Counter()  # units per stage so far (images come in rounds)
        # each stage's results, kept for stats.json
        self._topic_results: list[dict[str, Any] | None] = []
        self._search_results: list[dict[str, Any] | None] = []
        self._page_results: list[dict[str, Any] | None] = []
        self._image_results: dict[str, dict[str, Any]] = {}

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

    # ---- output ----------------------------------------------------------------------------------
    def _rows(self, items: list[tuple[dict[str, Any], dict[str, Any]]], qas: list[dict[str, Any] | None]):
        from cambrian.data.records import check_row

        rows, invalid = [], 0
        for (page, fig), qa in zip(items, qas):
            if qa is None:
                continue
            stem = hashlib.sha1(fig["url"].encode("utf-8")).hexdigest()[:16]
            for k, pair in enumerate(qa["qas"]):
                row = {
                    "id": f"engine-{stem}-{k}",
                    "image": fig["path"],
                    "conversations": [
                        {"from": "human", "value": f"{IMAGE_TOKEN}\n{pair['question']}"},
                        {"from": "gpt", "value": pair["answer"]},
                    ],
                    "source": SOURCE,
                    "category": self.cfg.category,
                    "field": page["field"],
                    "subfield": page["subfield"],
                    "topic": page["topic"],
                    "page_title": page["title"],
                    "page_url": page["url"],
                    "image_url": fig["url"],
                    "caption": fig["caption"],
                }
                if check_row(row, self.out):
                    invalid += 1
                    continue
                rows.append(row)
        return rows, invalid

    def _stats(
        self, rows: int, invalid: int, qas: list[dict[str, Any] | None], seconds: float
    ) -> dict[str, Any]:
        topic_res = [r for r in self._topic_results if r is not None]
        search_res = [r for r in self._search_results if r is not None]
        page_res = [r for r in self._page_results if r is not None]
        image_res = list(self._image_results.values())
        qa_res = [r for r in qas if r is not None]
        page_rejected: Counter[str] = Counter()
        for r in page_res:
            page_rejected.update(r.get("rejected", {}))
        snap = self.counters.snapshot()
        return {
            "complete": not self.failures,
            "rows": rows,
            "rows_invalid": invalid,
            "stages": {
                "topics": {
                    "subfields": len(self._topic_results),
                    "topics": sum(len(r["topics"]) for r in topic_res),
                    "malformed_skipped": sum(1 for r in topic_res if r.get("skipped")),
                },
                "search": {
                    "queries": len(self._search_results),
                    "titles": sum(len(r["titles"]) for r in search_res),
                },
                "pages": {
                    "pages": len(self._page_results),
                    "missing": sum(1 for r in page_res if r.get("missing")),
                    "figures_found": sum(r.get("figures_found", 0) for r in page_res),
                    "candidates": sum(len(r.get("figures", [])) for r in page_res),
                    "figures_rejected": dict(sorted(page_rejected.items())),
                },
                "images": {
                    "tried": len(image_res),
                    "kept": sum(1 for r in image_res if r.get("ok")),
                    "rejected": dict(
                        sorted(Counter(r["reason"] for r in image_res if not r.get("ok")).items())
                    ),
                },
                "qa": {
                    "images": len(qas),
                    "pairs": sum(len(r["qas"]) for r in qa_res),
                    "malformed_skipped": sum(1 for r in qa_res if r.get("skipped")),
                    "items_dropped": sum(r.get("dropped", 0) for r in qa_res),
                },
            },
            "this_run": {
                "seconds": round(seconds, 2),
                "units": {s: dict(sorted(c.items())) for s, c in self.units.items()},
                **{
                    svc: {k: snap.get(f"{svc}.{k}", 0) for k in ("requests", "retries", "errors")}
                    for svc in ("llm", "wiki")
                },
                "malformed_retries": {s: snap.get(f"{s}.malformed_retries", 0) for s in ("topics", "qa")},
            },
            "failures": self.failures[:100],
            "failures_total": len(self.failures),
        }

    def _progress(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("[bold]{task.description:<7}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, disable=not self.show_progress,
        )  # fmt: skip

    def run(self) -> EngineResult:
        """All stages, then ``engine.jsonl`` and ``stats.json``; finished units are taken from the cache."""
        start = time.perf_counter()
        check_engine_outputs(self.out, self.config_path, self.cfg.wiki.dump)
        self.out.mkdir(parents=True, exist_ok=True)
        save_yaml(self.cfg, self.out / "config.yaml")
        with self._progress() as bar:
            self._bar = bar
            tasks = {s: bar.add_task(s, total=0) for s in STAGES}
            topics = self._topics(tasks["topics"])
            owners = self._search(topics, tasks["search"])
            pages = self._pages(owners, tasks["pages"])
            items = self._images(pages, tasks["images"])
            qas = self._qa(items, tasks["qa"])
        rows, invalid = self._rows(items, qas)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write(self.out / "engine.jsonl", text.encode("utf-8"))
        stats = self._stats(len(rows), invalid, qas, time.perf_counter() - start)
        atomic_write(
            self.out / "stats.json", (json.dumps(stats, indent=1, ensure_ascii=False) + "\n").encode()
        )
        return EngineResult(self.out, len(rows), stats, list(self.failures))


def run_engine(
    cfg: EngineConfig,
    out: str | Path,
    *,
    console: Any = None,
    progress: bool = True,
    config_path: str | Path | None = None,
) -> EngineResult:
    """Run the Internet Data Engine for ``cfg`` into ``out`` (see the module docstring for the layout).

    ``config_path``: the config file ``cfg`` came from, so no output is written over it.
    """
    return Engine(cfg, out, console=console, progress=progress, config_path=config_path).run()
