"""MMBench-CN (``lmms-lab/MMBench_CN``, config ``default``, split ``dev``, 4,329 rows): Chinese MMBench.

Snapshot: ``data/dev-*.parquet`` (and ``data/test-*``), with the same columns as MMBench-EN except
that the second-level category is named ``L2-category``. Prompt, record (``prediction``,
``source_id`` with the image hash) and circular scoring are as for MMBench-EN (see ``mmbench_en``).
Two things differ: the suffix is "请直接回答选项字母。" and the extractor is X3, the first whitespace
token of the lower-cased output with trailing ``.:,`` dropped. The original's ``"(A)"`` test never
fires, so ``(A)`` is wrong.
"""

from __future__ import annotations

from typing import ClassVar

from cambrian.eval.benchmark import register
from cambrian.eval.benchmarks.mmbench_en import MMBench
from cambrian.eval.extract import extract_x3


@register
class MMBenchCN(MMBench):
    name = "mmbench_cn"
    title = "MMBench-CN"
    headline_name = "circular_accuracy"
    max_new_tokens = 128
    expected_n: ClassVar[dict[str, int]] = {"dev": 4329, "test": 6666}
    suffix = "请直接回答选项字母。"

    def extract(self, output: str) -> str:
        return extract_x3(output)
