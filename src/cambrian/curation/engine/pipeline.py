"""One run of the Internet Data Engine: the stages (``stages``) in order, then ``engine.jsonl`` and
``stats.json`` assembled from their cached results (``cache``).

``engine.jsonl`` is rebuilt from the cache in config order, which makes it byte-identical for the same
config and services.

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
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cambrian.curation.engine.cache import Cache, atomic_write
from cambrian.curation.engine.config import EngineConfig
from cambrian.curation.engine.llm import ChatClient
from cambrian.curation.engine.net import Counters
from cambrian.curation.engine.stages import STAGES, Stages
from cambrian.curation.engine.wiki import WikiSource, open_source
from cambrian.curation.outputs import check_engine_outputs
from cambrian.models.tokenization import IMAGE_TOKEN
from cambrian.utils.config import save_yaml

SOURCE = "data_engine"


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


class Engine(Stages):
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
        # The stages' state; ``Stages`` declares what each attribute holds.
        self.failures = []
        self.units = {s: Counter() for s in STAGES}
        self._bar = None
        self._totals = Counter()
        self._topic_results = []
        self._search_results = []
        self._page_results = []
        self._image_results = {}

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
