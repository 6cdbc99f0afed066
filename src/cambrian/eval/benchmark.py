"""The benchmark contract: what one registered benchmark provides to the shared runner and scorer.

A benchmark is a small class (one file under ``cambrian/eval/benchmarks/``) with four jobs:

* **load** a local snapshot of its published dataset (``ROOT/<name>/``) into ``Item``s: the prompt
  text sent after the image placeholder(s), the images (lazy), and the *record* fields the original
  Cambrian ``<bench>_eval.py`` wrote into its answers file (``gt_answer``, ``category``, ...);
* **prompt**: done while loading (question + options + the benchmark's suffix, docs/eval-protocols.md s.3);
* **parse** a raw model output (the shared extractors of ``cambrian.eval.extract``);
* **score** a list of answer records (ours or the original's, same field names) under ``"legacy"``
  rules (the original scorer, quirks included, the default) or ``"recommended"`` (the documented fixes).

The runner writes one record per item: the item's record fields + the raw output under the answer field
(``answer``; MMBench's original writes ``prediction``) + ``question_id``/``prompt``/``model_id`` as the
original did + ``item_index``/``item_key`` (our resumable bookkeeping). So ``score`` never needs the
dataset, and the original's answers files score through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cambrian.registry import Registry

RULES = ("legacy", "recommended")

# Suffixes of docs/eval-protocols.md section 3 (appended after a newline).
SUFFIX_LETTER = "Answer with the option's letter from the given choices directly."
SUFFIX_LETTER_ONLY = "Please answer directly with only the letter of the correct option and nothing else."
SUFFIX_WORD = "Answer the question using a single word or phrase."
SUFFIX_NUMBER = "Answer the question using a single number or phrase."
SUFFIX_SHORT = "Give the short answer directly."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Item:
    """One question, ready to generate.

    ``key`` is unique within the benchmark and stable across runs (the resume key; the dataset's own id
    where it has one). ``prompt`` is the user text *after* the image placeholders (question, options,
    suffix). ``images`` are loaded only when the item is generated (``ImageRef`` or PIL images); an item
    with none is asked as text only. ``record`` holds the answers-file fields the original eval script
    wrote for it (``gt_answer``, ``category``, ...). ``generate=False`` items are written with an empty
    answer without asking the model (ScienceQA's text-only questions, as in the original).
    """

    key: str
    prompt: str
    images: Sequence[Any] = ()
    record: dict[str, Any] = field(default_factory=dict)
    generate: bool = True


class ScoreError(ValueError):
    """An answers file cannot be scored: the message names the file/line or record and the field."""


def field_of(record: dict[str, Any], name: str, where: str = "") -> Any:
    """``record[name]``, or a ``ScoreError`` naming the missing field and the fields the record has."""
    try:
        return record[name]
    except KeyError:
        have = ", ".join(sorted(record)) or "(none)"
        raise ScoreError(f"{where or 'record'}: field {name!r} is missing (fields: {have})") from None


def paren_letter(gt: Any) -> str:
    """The GT letter of a ``"(A)"``-style answer: its second character, lower-cased (legacy ``[1]``)."""
    text = str(gt)
    if len(text) < 2:
        raise ScoreError(f"gt_answer {gt!r} is not of the form '(A)'")
    return text[1].lower()


class Benchmark:
    """Base class of every benchmark. Subclasses set the class attributes and implement ``load``/``score``.

    ``score(records, rules)`` returns a JSON-ready dict with at least ``headline`` (on the scale
    ``tabulate.py`` reports: percent, MME 0-2000), ``n`` (items counted, docs/eval-legacy-scorers.md) and the
    sub-scores; ``benchmark``/``rules``/``headline_name`` are added by ``score_records``.
    """

    name: ClassVar[str]  # the original's eval directory name: "mme", "mmbench_en", ...
    title: ClassVar[str]  # display name: "MME", "MMBench-EN", ...
    headline_name: ClassVar[str] = "accuracy"  # the tabulated column ("Perception" for MME)
    max_new_tokens: ClassVar[int] = 128  # docs/eval-protocols.md section 1
    splits: ClassVar[tuple[str, ...]] = ("test",)  # valid splits; the first is the default
    expected_n: ClassVar[dict[str, int]] = {}  # documented item count per split (logged against)
    answer_field: ClassVar[str] = "answer"  # where the raw output goes in a record

    def load(self, root: Path, split: str) -> list[Item]:
        """Items of ``split`` from the snapshot directory ``root`` (= ``ROOT/<name>``), in dataset order."""
        raise NotImplementedError

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        """Scores of answer records in canonical (dataset) order; see the class docstring."""
        raise NotImplementedError

    def submission(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Files for an external evaluation server, ``{file name: JSON-ready object}`` (DocVQA test,
        VizWiz test); written next to ``score.json``. Most benchmarks have none."""
        return {}

    def answer(self, record: dict[str, Any], where: str = "") -> str:
        """The raw model output of a record, as a string (``None`` -> ``""``)."""
        value = field_of(record, self.answer_field, where)
        return "" if value is None else str(value)


class AccuracyBenchmark(Benchmark):
    """A benchmark scored as 100 x (correct rows / counted rows), optionally also per ``category``.

    Subclasses implement ``correct(record, rules)`` and may override ``counted`` (rows that enter the
    headline, e.g. VizWiz val rows) and ``credit`` (a fraction instead of 0/1, e.g. VQA accuracy).
    ``category_field`` names the record field to break the score down by (sub-scores ``by_category``;
    the original scorers never need it for the headline, so a record without it counts under ``""``).
    """

    category_field: ClassVar[str | None] = None

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        raise NotImplementedError

    def credit(self, record: dict[str, Any], rules: str) -> float:
        return float(self.correct(record, rules))

    def counted(self, record: dict[str, Any], rules: str) -> bool:
        return True

    def category(self, record: dict[str, Any]) -> str:
        """The breakdown key of a record: its ``category_field`` as text (``""`` when absent); override
        to name it (SEED dimensions, Q-Bench question types)."""
        return str(record.get(self.category_field, "")) if self.category_field else ""

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        rows = [r for r in records if self.counted(r, rules)]
        scores = [self.credit(r, rules) for r in rows]
        out: dict[str, Any] = {"headline": mean_percent(scores), "n": len(rows)}
        out["correct"] = sum(scores)
        if self.category_field is not None:  # a breakdown only: rows without the field count under ""
            out["by_category"] = grouped_percent((self.category(r) for r in rows), scores)
        return out


def mean_percent(values: Sequence[float]) -> float:
    """100 x mean (0.0 for no values: an empty benchmark scores nothing rather than failing)."""
    return 100.0 * sum(values) / len(values) if values else 0.0


def grouped_percent(keys: Iterable[str], values: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per key: ``{"n", "accuracy"}`` (percent), keys sorted."""
    sums: dict[str, list[float]] = {}
    for key, value in zip(keys, values):
        acc = sums.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += value
    return {k: {"n": int(n), "accuracy": 100.0 * s / n} for k, (n, s) in sorted(sums.items())}


def lettered(options: Sequence[str], style: str = "{letter}. {text}") -> str:
    """Option lines, each after a newline: ``"\\nA. cat\\nB. dog"`` (``style`` formats one line)."""
    return "".join("\n" + style.format(letter=LETTERS[i], text=t) for i, t in enumerate(options))


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    BENCHMARKS.register(cls.name, cls())
    return cls


# ------------------------------------------------------------------------------- paper categories
# Paper Table 4 (docs/eval-protocols.md section 6): column -> (benchmark, score key, divisor). CV-Bench gives
# two columns from one run; MME Perception is divided by 20 before averaging.
@dataclass(frozen=True)
class Column:
    label: str
    benchmark: str
    key: str = "headline"  # a key of the benchmark's score dict
    divisor: float = 1.0


CATEGORIES: dict[str, tuple[Column, ...]] = {
    "General": (
        Column("MME-P", "mme", divisor=20.0),
        Column("MMB", "mmbench_en"),
        Column("SEED-I", "seed"),
        Column("GQA", "gqa"),
    ),
    "Knowledge": (
        Column("SQA-I", "scienceqa"),
        Column("MMMU-V", "mmmu"),
        Column("MathVista-M", "mathvista"),
        Column("AI2D", "ai2d"),
    ),
    "OCR & Chart": (
        Column("ChartQA", "chartqa"),
        Column("OCRBench", "ocrbench"),
        Column("TextVQA", "textvqa"),
        Column("DocVQA", "docvqa"),
    ),
    "Vision-Centric": (
        Column("MMVP", "mmvp"),
        Column("RealWorldQA", "realworldqa"),
        Column("CV-Bench-2D", "cvbench", key="CV-Bench-2D"),
        Column("CV-Bench-3D", "cvbench", key="CV-Bench-3D"),
    ),
}

# The 16 columns of Table 4 come from these 15 benchmarks (`--benchmarks paper`).
PAPER: tuple[str, ...] = tuple(dict.fromkeys(c.benchmark for cols in CATEGORIES.values() for c in cols))


def resolve_names(spec: str) -> list[str]:
    """``"paper"``, ``"all"`` or a comma-separated list of exact benchmark ids -> the ids, in order.

    An unknown id raises ``UnknownIdError`` listing the valid ones (and the two group names).
    """
    import cambrian.eval.benchmarks  # noqa: F401  (registers every benchmark)

    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "paper":
            names.extend(PAPER)
        elif part == "all":
            names.extend(BENCHMARKS.names())
        else:
            BENCHMARKS.get(part)
            names.append(part)
    if not names:
        raise ValueError("no benchmark named; give ids (e.g. mme,gqa), 'paper' or 'all'")
    return list(dict.fromkeys(names))


ScoreFn = Callable[[Sequence[dict[str, Any]], str], dict[str, Any]]
