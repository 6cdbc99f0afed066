"""`cambrian data curate`: turn a Cambrian-10M-style pile of JSONL sources into a Cambrian-7M-style mixture.

The paper's recipe, each step optional and reported (``CurateConfig`` says which run):

1. **scan**: every row of every input is parsed once (``RowIndex`` gives random access, worker processes
   share the blocks); bad rows (broken JSON, wrong fields, no resolvable source or category) are written
   to ``bad_rows.jsonl`` with ``file:line`` and skipped. What curation needs of a row is kept in compact
   columns: file, row, line, source, category, a 64-bit key of (images, first question), the longest
   assistant turn in words, whether it already has a system prompt, whether its images exist.
2. **images** (``images``): drop rows whose image files are missing under that directory;
3. **dedup** (``dedup``): exact duplicates by (images, first question); the first occurrence wins;
4. **cap** (``cap``, default 350k): at most ``t`` rows per source, seeded sampling without replacement;
5. **rebalance** (``ratios``, ``budget``): sample each category toward the target ratios (default: the
   paper's), either the largest mixture with exactly those ratios or, with a budget, water-filling: a
   category short of its share gives all it has and the rest is shared out by the ratios;
6. **system prompt** (``system_prompt``): rows whose every assistant turn has at most
   ``short_max_words`` words get ``"system": "Answer the question using a single word or phrase."``
   (Cambrian-7M *with* system prompt), unless they bring a system prompt of their own;
7. **write**: the kept rows in a seeded order, streamed to the output JSONL (byte-identical rows except
   the added system prompt), plus a report (``cambrian.curation.report``).

Scale: a row costs ~20 bytes of column data, so 10M rows fit in a few hundred MB; the counting, ranking
and sampling run in Polars (multi-threaded, vectorised), never in Python dicts. Scan results are cached
per block in a work directory (atomic writes), so a crash loses at most the blocks in flight and a rerun
with other caps or ratios skips the scan entirely. Sampling is keyed by a hash of (seed, file, row), so
the same inputs and seed give the same output on any machine, whatever the worker count.

The modules follow the steps: ``config`` (``CurateConfig``), ``scanning`` (1), ``selection`` (2-6),
``run`` (7, and ``curate``, which runs them all).
"""

from __future__ import annotations

from cambrian.curation.curate.config import PAPER_RATIOS, SHORT_ANSWER_PROMPT, CurateConfig, SourceSpec
from cambrian.curation.curate.run import CurateResult, curate, write_rows
from cambrian.curation.curate.scanning import Scan, scan
from cambrian.curation.curate.selection import Step, allocate, priority, select

__all__ = [
    "PAPER_RATIOS",
    "SHORT_ANSWER_PROMPT",
    "CurateConfig",
    "CurateResult",
    "Scan",
    "SourceSpec",
    "Step",
    "allocate",
    "curate",
    "priority",
    "scan",
    "select",
    "write_rows",
]
