"""CV-Bench (`nyu-visionx/CV-Bench`): load items, generate answers, match letters, compute the official score.

CV-Bench is 2,638 multiple-choice questions: 2D (Count, Relation; sources ADE20K and COCO) and 3D
(Depth, Distance; source Omni3D). The protocol is docs/eval-protocols.md section 2:

* prompt = the item's ``prompt`` + ``"\\n"`` + ``ANSWER_SUFFIX``, in the model's conversation template,
  greedy decoding, output ``strip()``-ed;
* matching = legacy Cambrian rule X1 (``rule="cambrian"``, default) or lmms-eval's (``rule="lmms-eval"``);
* score = the official formula: per type, the *unweighted mean of per-source accuracies* (so
  CV-Bench-2D = (acc_ADE20K + acc_COCO) / 2, not the pooled 2D accuracy), overall = mean of the types.

Items come from a JSONL file with the dataset's field names (``test_2d.jsonl`` / ``test_3d.jsonl``, or
our synthetic split); ``filename`` is relative to an image root, by default the JSONL's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from cambrian.eval.answers import repaired_lines
from cambrian.eval.benchmark import Item
from cambrian.eval.data import DatasetFormatError, ImageRef
from cambrian.eval.extract import extract_lmms_eval_letter, extract_x1, gt_letter
from cambrian.registry import Registry

SELECT_SUFFIX = " Select from the following choices."
ANSWER_SUFFIX = "Answer with the option's letter from the given choices directly."
TYPES = ("2D", "3D")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Fields every item must have, with the JSON types they must hold.
REQUIRED_FIELDS: dict[str, type] = {
    "idx": int,
    "type": str,
    "task": str,
    "question": str,
    "choices": list,
    "answer": str,
    "prompt": str,
    "filename": str,
    "source": str,
}


class CVBenchFormatError(DatasetFormatError):
    """A CV-Bench JSONL line is not a valid item; the message names file:line and the field."""


@dataclass
class CVBenchItem:
    """One CV-Bench question. ``answer`` is the letter in parentheses, e.g. ``"(C)"``."""

    idx: int
    type: str  # "2D" or "3D"
    task: str  # "Count", "Relation", "Depth", "Distance"
    question: str
    choices: list[str]
    answer: str
    prompt: str  # question + SELECT_SUFFIX + "\n(A) opt" lines, already formatted
    filename: str  # relative to the image root, e.g. "img/2D/count/ade20k_10.png"
    source: str  # "ADE20K", "COCO", "Omni3D"
    extras: dict[str, Any] = field(default_factory=dict)  # source_dataset, bbox, target_class, ...


def format_prompt(question: str, choices: Sequence[str]) -> str:
    """The dataset's ``prompt`` field: question + " Select from the following choices." + "\\n(A) opt" lines."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"{len(choices)} choices; at most {len(LETTERS)} can be lettered")
    return question + SELECT_SUFFIX + "".join(f"\n({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def model_prompt(item: CVBenchItem) -> str:
    """The user text sent to the model (after the image): the item's prompt + "\\n" + ``ANSWER_SUFFIX``."""
    return item.prompt + "\n" + ANSWER_SUFFIX


# ---------------------------------------------------------------------------------------------- loading
def _item_from_row(row: Any, where: str) -> CVBenchItem:
    def bad(name: str, why: str) -> CVBenchFormatError:
        return CVBenchFormatError(f"{where}: field {name!r}: {why}")

    if not isinstance(row, dict):
        raise CVBenchFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name, kind in REQUIRED_FIELDS.items():
        if name not in row:
            raise bad(name, "missing")
        value = row[name]
        # bool is an int subclass; an idx of true/false is a broken row, not item 1/0.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(name, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if row["type"] not in TYPES:
        raise bad("type", f"{row['type']!r} is not one of {', '.join(TYPES)}")
    for name in ("task", "source", "filename", "prompt"):
        if not row[name].strip():
            raise bad(name, "empty")
    choices = row["choices"]
    if len(choices) < 2 or len(choices) > len(LETTERS):
        raise bad("choices", f"{len(choices)} options; need 2 to {len(LETTERS)}")
    if not all(isinstance(c, str) for c in choices):
        raise bad("choices", f"options must be strings, got {choices!r}")
    answer = row["answer"]
    valid = [f"({x})" for x in LETTERS[: len(choices)]]
    if answer not in valid:
        raise bad("answer", f"{answer!r} is not one of {', '.join(valid)} ({len(choices)} choices)")
    extras = {k: v for k, v in row.items() if k not in REQUIRED_FIELDS}
    return CVBenchItem(**{k: row[k] for k in REQUIRED_FIELDS}, extras=extras)


def load_items(path: str | Path) -> list[CVBenchItem]:
    """Read a JSONL of CV-Bench items (the dataset's field names; blank lines ignored).

    Raises ``CVBenchFormatError`` naming file:line and the field for bad JSON, a missing or mistyped
    field, an unknown ``type``, an ``answer`` that is not one of the lettered choices, or a repeated
    ``idx``. Extra fields (``source_dataset``, ``bbox``, ...) are kept in ``extras``.
    """
    path = Path(path)
    items: list[CVBenchItem] = []
    first_line: dict[int, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CVBenchFormatError(f"{where}: invalid JSON: {e}") from None
            item = _item_from_row(row, where)
            if item.idx in first_line:
                raise CVBenchFormatError(
                    f"{where}: field 'idx': {item.idx} repeats the idx of line {first_line[item.idx]}"
                )
            first_line[item.idx] = lineno
            items.append(item)
    return items


# --------------------------------------------------------------------------------------------- matching
def _match_cambrian(prediction: str, answer: str) -> bool:
    # The 3D (Omni) scorer's option-text fallback never fires after X1's truncation: 2D and 3D are
    # scored alike, with the period-only rstrip (the '.:,' variant differs only on punctuation-only output).
    return extract_x1(prediction) == gt_letter(answer)


def _match_lmms_eval(prediction: str, answer: str) -> bool:
    return extract_lmms_eval_letter(prediction) == answer.strip("()")


RULES: Registry = Registry("CV-Bench answer rule")
RULES.register("cambrian", _match_cambrian)
RULES.register("lmms-eval", _match_lmms_eval)


def is_correct(prediction: str, answer: str, rule: str = "cambrian") -> bool:
    """Whether ``prediction`` (raw model text) picks ``answer`` (``"(C)"``) under ``rule``.

    ``"cambrian"``: legacy X1 (``C``, ``(C) 1``, ``The answer is C.``, ``Answer: (c)`` are right for
    ``(C)``; ``1`` and ``The answer is: C`` are wrong). ``"lmms-eval"``: the letter at the start of the
    output (``The answer is C.`` -> ``T``, wrong).
    """
    return RULES.get(rule)(prediction, answer)


# ---------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class GroupScore:
    """Items of one group: how many, how many right, and chance = mean over items of 1/len(choices)."""

    n: int
    correct: int
    chance: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "correct": self.correct, "accuracy": self.accuracy, "chance": self.chance}


def groups(keys: Iterable[Any], hits: Sequence[bool], chances: Sequence[float]) -> dict[Any, GroupScore]:
    acc: dict[Any, list[float]] = {}
    for key, hit, chance in zip(keys, hits, chances):
        n, correct, total_chance = acc.setdefault(key, [0, 0, 0.0])
        acc[key] = [n + 1, correct + hit, total_chance + chance]
    return {k: GroupScore(int(n), int(c), ch / n) for k, (n, c, ch) in sorted(acc.items())}


def official_scores(
    by_type_source: Mapping[tuple[str, str], GroupScore],
) -> tuple[dict[str, float], dict[str, float]]:
    """The official formula on per-(type, source) groups: ``({name: accuracy}, {name: chance})``.

    ``CV-Bench-T`` = unweighted mean over the sources of type T of their accuracy; ``CV-Bench`` = mean of
    the types present (both in the real benchmark). Chance goes through the same formula.
    """
    official, official_chance = {}, {}
    for t in TYPES:
        terms = [g for (ty, _), g in by_type_source.items() if ty == t]
        if terms:
            official[official_name(t)] = sum(g.accuracy for g in terms) / len(terms)
            official_chance[official_name(t)] = sum(g.chance for g in terms) / len(terms)
    official[official_name()] = sum(official.values()) / len(official)
    official_chance[official_name()] = sum(official_chance.values()) / len(official_chance)
    return official, official_chance


def official_name(item_type: str | None = None) -> str:
    """Headline names: ``CV-Bench-2D``, ``CV-Bench-3D`` and ``CV-Bench`` (overall, for ``None``)."""
    return "CV-Bench" if item_type is None else f"CV-Bench-{item_type}"


@dataclass(frozen=True)
class CVBenchScore:
    """All CV-Bench numbers, as fractions in [0, 1].

    ``official`` holds the headline numbers (``CV-Bench-2D``, ``CV-Bench-3D``, ``CV-Bench``) and
    ``official_chance`` the same formulas applied to the chance levels. ``by_type`` is the *pooled*
    accuracy per type, kept for reference only: it is not the official per-type score.
    """

    rule: str
    n: int
    correct: int
    by_source: dict[str, GroupScore]
    by_task: dict[str, GroupScore]
    by_type: dict[str, GroupScore]  # pooled within the type; NOT the official number
    by_type_source: dict[tuple[str, str], GroupScore]  # the terms of the official per-type means
    official: dict[str, float]
    official_chance: dict[str, float]

    @property
    def overall(self) -> float:
        return self.official[official_name()]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (fractions, not percentages)."""
        return {
            "benchmark": "cvbench",
            "rule": self.rule,
            "n": self.n,
            "correct": self.correct,
            "official": dict(self.official),
            "official_chance": dict(self.official_chance),
            "by_source": {k: v.to_dict() for k, v in self.by_source.items()},
            "by_task": {k: v.to_dict() for k, v in self.by_task.items()},
            "by_type_pooled": {k: v.to_dict() for k, v in self.by_type.items()},
            "by_type_source": {f"{t}/{s}": v.to_dict() for (t, s), v in self.by_type_source.items()},
        }


def score(
    items: Sequence[CVBenchItem], predictions: Mapping[int, str], rule: str = "cambrian"
) -> CVBenchScore:
    """Score ``predictions`` (idx -> raw model text) on ``items`` with the official CV-Bench formula.

    Per type T: ``CV-Bench-T`` = unweighted mean, over the sources with items of type T, of the accuracy
    on those items (ADE20K + COCO -> 2D, Omni3D -> 3D in the real benchmark). ``CV-Bench`` = mean of the
    types present. Chance (mean of 1/len(choices)) goes through the same formulas, so accuracy minus
    chance compares like with like. Every item needs a prediction; predictions for other idx are ignored.
    """
    if not items:
        raise ValueError("no CV-Bench items to score")
    RULES.get(rule)  # an unknown rule fails here, listing the valid ones
    missing = [it.idx for it in items if it.idx not in predictions]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(f"no prediction for {len(missing)} of {len(items)} items (idx {shown})")
    hits = [is_correct(predictions[it.idx], it.answer, rule) for it in items]
    chances = [1.0 / len(it.choices) for it in items]
    by_type_source = groups([(it.type, it.source) for it in items], hits, chances)
    official, official_chance = official_scores(by_type_source)
    return CVBenchScore(
        rule=rule,
        n=len(items),
        correct=sum(hits),
        by_source=groups([it.source for it in items], hits, chances),
        by_task=groups([it.task for it in items], hits, chances),
        by_type=groups([it.type for it in items], hits, chances),
        by_type_source=by_type_source,
        official=official,
        official_chance=official_chance,
    )


def table(result: CVBenchScore, title: str | None = None) -> Table:
    """A rich table (percentages): accuracy, chance and points above chance per task, source and type,
    and the official CV-Bench-2D / 3D / overall rows."""
    tbl = Table(title=title or f"CV-Bench ({result.rule} matching)")
    for name, justify in [("", "left"), ("items", "right"), ("accuracy %", "right")]:
        tbl.add_column(name, justify=justify)
    tbl.add_column("chance %", justify="right")
    tbl.add_column("above chance", justify="right")

    def row(label: str, n: int, acc: float, chance: float, style: str | None = None) -> None:
        tbl.add_row(
            label,
            str(n),
            f"{100 * acc:.1f}",
            f"{100 * chance:.1f}",
            f"{100 * (acc - chance):+.1f}",
            style=style,
        )

    for task, g in result.by_task.items():
        row(f"task {task}", g.n, g.accuracy, g.chance)
    tbl.add_section()
    for source, g in result.by_source.items():
        row(f"source {source}", g.n, g.accuracy, g.chance)
    tbl.add_section()
    for t in TYPES:
        name = official_name(t)
        if name in result.official:
            row(name, result.by_type[t].n, result.official[name], result.official_chance[name], "bold")
    row(official_name(), result.n, result.overall, result.official_chance[official_name()], "bold")
    return tbl


# ------------------------------------------------------------------------------------------- generation
def read_predictions(path: str | Path) -> dict[int, str]:
    """Predictions saved by ``evaluate`` (JSONL of ``{"idx", "prediction"}``); a later line wins.

    A last line cut short by an interrupted write (no newline, not valid JSON) is removed from the file,
    so appending can go on; any other bad line is an error naming file:line.
    """
    path = Path(path)
    lines = repaired_lines(path)
    out: dict[int, str] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[int(rec["idx"])] = str(rec["prediction"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{lineno}: not a prediction record ({e!r})") from None
    return out


def as_item(item: CVBenchItem, image_root: Path) -> Item:
    """The runner's view of a CV-Bench item: key = idx, prompt = ``model_prompt``, its one image."""
    record = {"question_id": item.idx, "type": item.type, "task": item.task, "source": item.source,
              "gt_answer": item.answer, "options": list(item.choices)}  # fmt: skip
    return Item(str(item.idx), model_prompt(item), [ImageRef(str(image_root / item.filename))], record)


def evaluate(
    model,
    processor,
    items: Sequence[CVBenchItem],
    image_root: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    predictions_path: str | Path | None = None,
    progress: bool = True,
    rule: str = "cambrian",
) -> tuple[dict[int, str], CVBenchScore]:
    """Answer every item with ``model`` (greedy, batched, left-padded) and score the answers.

    Returns ``(predictions, score)`` with predictions ``{idx: stripped text}`` in item order. With
    ``predictions_path`` the run is resumable: items already in that JSONL are not generated again, and
    each batch's answers are appended and flushed as soon as they exist, so an interruption loses at
    most the batch in flight. (The file does not record which model wrote it: use one file per model
    and settings.) ``max_new_tokens`` 8 is plenty for a letter; the paper used 512, which only matters
    for models that reason before answering ("... the answer is C").
    """
    RULES.get(rule)  # fail before generating anything
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image_root = Path(image_root)
    seen: set[int] = set()
    for it in items:
        if it.idx in seen:
            raise ValueError(f"CV-Bench item idx {it.idx} appears more than once")
        seen.add(it.idx)
    done = read_predictions(predictions_path) if predictions_path and Path(predictions_path).exists() else {}
    pending = [it for it in items if it.idx not in done]
    # Check every image before generating: a typo in the image root should fail in a second, not an hour.
    absent = [it for it in pending if not (image_root / it.filename).is_file()]
    if absent:
        listed = "; ".join(f"idx {it.idx}: {image_root / it.filename}" for it in absent[:5])
        more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
        raise FileNotFoundError(f"{len(absent)} CV-Bench image(s) do not exist: {listed}{more}")

    if pending:
        from cambrian.eval.runner import generate_answers, progress_bar

        was_training = model.training
        model.eval()
        with ExitStack() as stack:
            stack.callback(model.train, was_training)
            out_file = None
            if predictions_path is not None:
                Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
                out_file = stack.enter_context(open(predictions_path, "a", encoding="utf-8"))
            bar = stack.enter_context(progress_bar(disable=not progress))
            stack.enter_context(torch.inference_mode())
            task = bar.add_task("CV-Bench", total=len(items), completed=len(items) - len(pending))

            def write(batch: list[Item], answers: list[str]) -> None:
                done.update(zip((int(it.key) for it in batch), answers))
                if out_file is not None:
                    for it, text in zip(batch, answers):
                        record = {"idx": int(it.key), "prediction": text}
                        out_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out_file.flush()
                    os.fsync(out_file.fileno())
                bar.advance(task, len(batch))

            generate_answers(model, processor, [as_item(it, image_root) for it in pending], max_new_tokens,
                             batch_size, write)  # fmt: skip
    predictions = {it.idx: done[it.idx] for it in items}
    return predictions, score(items, predictions, rule)
