"""Language about quickstart scenes: grounded captions, CV-Bench-style questions and their answers.

Four tasks, two per CV-Bench type, every question checked to have exactly one correct choice:

- Count (2D): "How many cubes are in the image?" with numeric choices near the true count;
- Relation (2D): "Where is the cube located with respect to the ball?" left/right or above/below;
- Depth (3D): "Which object is closer to the camera, the cube or the ball?";
- Distance (3D): "Which object is closer to the ring, the cube or the ball?" (ground distance).

Answers are recomputed from the scene (``correct_choices``), never trusted from the question, and
``rationale`` spells an answer out as the grounded facts it rests on.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cambrian.eval.cvbench import format_prompt
from cambrian.quickstart.scenes import COLUMN_WORDS, ROW_WORDS, Scene, SceneConfig, SceneObject

TASKS = ("Count", "Relation", "Depth", "Distance")
TASK_TYPE = {"Count": "2D", "Relation": "2D", "Depth": "3D", "Distance": "3D"}
LETTERS = "ABCDEFGHIJ"


def plural(kind: str) -> str:
    return kind + "es" if kind.endswith(("s", "x", "ch", "sh")) else kind + "s"


def position_words(o: SceneObject, cfg: SceneConfig) -> tuple[str, str]:
    """(column word, row word): e.g. ("midleft", "near"). The row word is also the depth word."""
    return COLUMN_WORDS[cfg.grid][o.cell[1]], ROW_WORDS[cfg.grid][o.cell[0]]


def describe(o: SceneObject, cfg: SceneConfig) -> str:
    """One object as the captions and rationales state it: kind first, then (``cfg.describe_colour``)
    colour, then column and row.

    E.g. "cube midleft near." ("cube red midleft near." with colour). The kind comes first because a
    question names objects by kind: once the kind is written, each later word is a one-hop lookup from
    that token to the visual token of the object (the cell the towers encode), rather than a lookup that
    must first recall which kind is being described.
    """
    colour = [o.colour] if cfg.describe_colour else []
    return " ".join([o.kind, *colour, *position_words(o, cfg)]) + "."


def caption(scene: Scene, cfg: SceneConfig) -> str:
    """Grounded caption: each object (``describe``) in ``cfg.caption_order``, then a count summary.

    E.g. "cube left far. ball midright near. 1 cube, 1 ball." Counts are digits, the same tokens the
    Count answers use.
    """
    objects = scene.objects
    if cfg.caption_order == "kind":
        objects = sorted(objects, key=lambda o: cfg.kinds.index(o.kind))  # stable: raster within a kind
    parts = [describe(o, cfg) for o in objects]
    counts = Counter(o.kind for o in scene.objects)
    summary = ", ".join(f"{counts[k]} {k if counts[k] == 1 else plural(k)}" for k in cfg.kinds if counts[k])
    return " ".join([*parts, summary + "."])


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about a scene. ``named`` lists the kinds the question refers to:
    Count (kind,), Relation (subject, reference), Depth (first, second), Distance (anchor, first, second)."""

    task: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the correct choice
    named: tuple[str, ...]

    @property
    def type(self) -> str:
        return TASK_TYPE[self.task]

    @property
    def letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def short_answer(self) -> str:
        return self.choices[self.answer]

    @property
    def prompt(self) -> str:
        return format_prompt(self.question, self.choices)


def n_choices(task: str, cfg: SceneConfig) -> int:
    return cfg.count_choices if task == "Count" else 2


def _ground_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


# Distance answers must also follow from the position words alone: with every object moved to its cell
# centre, the same candidate is closer, by at least this ratio (no ties between quantised positions).
_CELL_DISTANCE_RATIO = 1.1


def _cell_xz(o: SceneObject, cfg: SceneConfig) -> tuple[float, float]:
    # Ground position of an object placed exactly at its cell centre: what the position words say.
    r, c = o.cell
    return cfg.ground_xz((c + 0.5) * cfg.cell, (r + 0.5) * cfg.cell)


def _closer(anchor: tuple[float, float], p: tuple[float, float], q: tuple[float, float]) -> tuple[int, float]:
    """(0 if p is closer to anchor else 1, far distance / near distance)."""
    dp, dq = _ground_distance(anchor, p), _ground_distance(anchor, q)
    return (0 if dp < dq else 1), max(dp, dq) / max(min(dp, dq), 1e-9)


def correct_choices(q: Question, scene: Scene, cfg: SceneConfig) -> list[int]:
    """Indices of the choices that are right for ``scene``, recomputed from the scene (not from ``q``).

    Returns an empty list when the question is ill-posed: a named kind is not unique, or the answer
    does not clear the configured margin.
    """
    try:
        objs = [scene.named(k) for k in q.named] if q.task != "Count" else []
    except ValueError:
        return []
    if q.task == "Count":
        n = scene.count(q.named[0])
        return [i for i, c in enumerate(q.choices) if c == str(n)]
    if q.task == "Relation":
        a, b = objs
        truth = {
            "left": a.cell[1] < b.cell[1],
            "right": a.cell[1] > b.cell[1],
            "above": a.cell[0] < b.cell[0],
            "below": a.cell[0] > b.cell[0],
        }
        return [i for i, c in enumerate(q.choices) if truth[c]]
    if q.task == "Depth":
        a, b = objs
        if a.cell[0] == b.cell[0] or max(a.z, b.z) / min(a.z, b.z) < 1 + cfg.depth_margin:
            return []
        return [i for i, c in enumerate(q.choices) if c == (a if a.z < b.z else b).kind]
    if q.task == "Distance":
        anchor, p, r = objs
        xz = (anchor.x, anchor.z), (p.x, p.z), (r.x, r.z)
        which, ratio = _closer(*xz)
        cell_which, cell_ratio = _closer(*(_cell_xz(o, cfg) for o in (anchor, p, r)))
        if ratio < cfg.distance_ratio or cell_which != which or cell_ratio < _CELL_DISTANCE_RATIO:
            return []
        return [i for i, c in enumerate(q.choices) if c == (p, r)[which].kind]
    raise ValueError(f"unknown task {q.task!r}")


def rationale(q: Question, scene: Scene, cfg: SceneConfig) -> str:
    """A short grounded chain of thought ending in the letter: the facts the answer rests on, the answer
    word, then ``answer: X`` (the legacy CV-Bench extraction reads the letter after "answer:").

    Each step is a one-hop lookup the caption stage already trained: name an object and read its cell
    ("cube midleft near."), so the comparison happens between words, not hidden states. Count lists
    every instance, then the number. The options are then walked in order up to the matching one, so
    the letter is copied from the line just written rather than looked up in the prompt. E.g.
    "cube midleft near. ball right far. cube. A ball no. B cube yes. answer: B".
    (Starting with the whole caption and copying the facts from it was measured worse: the copy, a
    text-to-text lookup, did not form at the default budget either.)
    """
    if q.task == "Count":
        (kind,) = q.named
        facts = [describe(o, cfg) for o in scene.objects if o.kind == kind]
        n = scene.count(kind)
        facts.append(f"{n} {kind if n == 1 else plural(kind)}.")
    else:
        facts = [describe(scene.named(k), cfg) for k in q.named]
        facts.append(f"{q.short_answer}.")
    # Walk the options until the one that matches: the letter to give is then the one just written.
    for k, choice in enumerate(q.choices[: q.answer + 1]):
        facts.append(f"{LETTERS[k]} {choice} {'yes' if k == q.answer else 'no'}.")
    return " ".join([*facts, f"answer: {q.letter}"])


def _ordered(answer: str, other: str, answer_pos: int) -> tuple[str, ...]:
    return (answer, other) if answer_pos == 0 else (other, answer)


def make_question(
    task: str,
    scene: Scene,
    cfg: SceneConfig,
    rng: np.random.Generator,
    answer_pos: int,
    count: int | None = None,
) -> Question | None:
    """A ``task`` question about ``scene`` whose correct choice is at ``answer_pos``; None if impossible.

    ``count`` (Count only): ask about a kind that occurs exactly ``count`` times (None if there is
    none); by default the kind is uniform. The answer is asserted unique (``correct_choices``).
    """
    if not 0 <= answer_pos < n_choices(task, cfg):
        raise ValueError(f"answer_pos {answer_pos} out of range for {task}")
    objs, uniq = scene.objects, scene.unique()
    if task == "Count":
        kinds = [kd for kd in cfg.kinds if count is None or scene.count(kd) == count]
        if not kinds:
            return None
        kind = kinds[int(rng.integers(len(kinds)))]
        n, k = scene.count(kind), cfg.count_choices
        # The options are k consecutive counts in 0..max_objects containing n, in shuffled order.
        start = int(rng.integers(max(0, n - k + 1), min(n, cfg.max_objects - k + 1) + 1))
        others = [str(m) for m in rng.permutation(np.arange(start, start + k)) if m != n]
        choices = (*others[:answer_pos], str(n), *others[answer_pos:])
        q = Question(task, f"How many {plural(kind)} are in the image?", choices, answer_pos, (kind,))
    elif task == "Relation":
        if len(uniq) < 2:
            return None
        ia, ib = rng.choice(uniq, size=2, replace=False)
        a, b = objs[ia], objs[ib]
        axes = [ax for ax, d in (("h", a.cell[1] != b.cell[1]), ("v", a.cell[0] != b.cell[0])) if d]
        if axes[int(rng.integers(len(axes)))] == "h":
            right, wrong = ("left", "right") if a.cell[1] < b.cell[1] else ("right", "left")
        else:
            right, wrong = ("above", "below") if a.cell[0] < b.cell[0] else ("below", "above")
        question = f"Where is the {a.kind} located with respect to the {b.kind}?"
        q = Question(task, question, _ordered(right, wrong, answer_pos), answer_pos, (a.kind, b.kind))
    elif task == "Depth":
        pairs = [
            (i, j)
            for i in uniq
            for j in uniq
            if i < j
            and objs[i].cell[0] != objs[j].cell[0]
            and max(objs[i].z, objs[j].z) / min(objs[i].z, objs[j].z) >= 1 + cfg.depth_margin
        ]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        near, far = (objs[i], objs[j]) if objs[i].z < objs[j].z else (objs[j], objs[i])
        first, second = _ordered(near.kind, far.kind, answer_pos)
        question = f"Which object is closer to the camera, the {first} or the {second}?"
        q = Question(task, question, (first, second), answer_pos, (first, second))
    elif task == "Distance":
        triples = []
        for a in uniq:
            for i in uniq:
                for j in uniq:
                    if a in (i, j) or i >= j:
                        continue
                    trio = objs[a], objs[i], objs[j]
                    which, ratio = _closer(*((o.x, o.z) for o in trio))
                    cell_which, cell_ratio = _closer(*(_cell_xz(o, cfg) for o in trio))
                    if (
                        ratio >= cfg.distance_ratio
                        and cell_which == which
                        and cell_ratio >= _CELL_DISTANCE_RATIO
                    ):
                        triples.append((a, (i, j)[which], (j, i)[which]))
        if not triples:
            return None
        a, near_i, far_i = triples[int(rng.integers(len(triples)))]
        first, second = _ordered(objs[near_i].kind, objs[far_i].kind, answer_pos)
        question = f"Which object is closer to the {objs[a].kind}, the {first} or the {second}?"
        q = Question(task, question, (first, second), answer_pos, (objs[a].kind, first, second))
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    assert correct_choices(q, scene, cfg) == [q.answer], f"ambiguous or wrong question: {q}"
    return q
