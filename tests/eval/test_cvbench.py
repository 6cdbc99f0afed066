"""CV-Bench: prompt format, answer matching (both rules), the official score, chance, loading, evaluate."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from rich.console import Console

from cambrian import build_tiny
from cambrian.eval import BENCHMARKS
from cambrian.eval.cvbench import (
    ANSWER_SUFFIX,
    CVBenchFormatError,
    CVBenchItem,
    evaluate,
    format_prompt,
    is_correct,
    load_items,
    model_prompt,
    read_predictions,
    score,
    table,
)
from cambrian.registry import UnknownIdError

LETTERS = "ABCDEF"


def make_item(idx, type_, task, source, n_choices, answer, filename=None):
    choices = [str(k) for k in range(n_choices)]
    question = f"Question {idx} about {task}?"
    return CVBenchItem(
        idx=idx,
        type=type_,
        task=task,
        question=question,
        choices=choices,
        answer=f"({answer})",
        prompt=format_prompt(question, choices),
        filename=filename or f"img/{type_}/{task.lower()}/{source.lower()}_{idx}.png",
        source=source,
    )


def wrong_letter(item):
    return "B" if item.answer != "(B)" else "A"


# ------------------------------------------------------------------------------------------- prompts
def test_format_prompt_matches_dataset_field():
    prompt = format_prompt("How many organs are in the image?", ["3", "2", "1", "0"])
    assert prompt == (
        "How many organs are in the image? Select from the following choices.\n(A) 3\n(B) 2\n(C) 1\n(D) 0"
    )


def test_model_prompt_appends_answer_suffix():
    item = make_item(0, "2D", "Count", "ADE20K", 4, "C")
    assert (
        model_prompt(item)
        == item.prompt + "\nAnswer with the option's letter from the given choices directly."
    )
    assert model_prompt(item).endswith(ANSWER_SUFFIX)


# ------------------------------------------------------------------------------------------- matching
# docs/eval-protocols.md 7.8 and the 2.3 "consequences worth testing", GT "(C)": (output, cambrian, lmms-eval).
MATCH_CASES = [
    ("C", True, True),
    ("(C)", True, True),
    ("c.", True, True),
    ("(C) 1", True, True),
    ("C. 1", True, True),
    ("The answer is C.", True, False),
    ("Answer: (c)", True, False),
    ("1", False, False),  # the option text is not accepted
    ("The answer is: C", False, False),  # legacy pitfall: ':' is the first character left
    ("", False, False),
    ("Certainly two of them", True, True),  # free text is judged by its first letter
    ("There are two", False, False),
]


@pytest.mark.parametrize("prediction,cambrian,lmms", MATCH_CASES, ids=[repr(c[0]) for c in MATCH_CASES])
def test_is_correct_golden(prediction, cambrian, lmms):
    assert is_correct(prediction, "(C)") is cambrian
    assert is_correct(prediction, "(C)", rule="cambrian") is cambrian
    assert is_correct(prediction, "(C)", rule="lmms-eval") is lmms


def test_unknown_rule_lists_valid_rules():
    with pytest.raises(UnknownIdError, match="cambrian, lmms-eval"):
        is_correct("C", "(C)", rule="gpt")


# -------------------------------------------------------------------------------------------- scoring
def golden_set():
    """docs/eval-protocols.md 7.8: ADE20K 1/2, COCO 4/4, Omni3D 1/4; tasks and choice counts vary."""
    spec = [  # (idx, type, task, source, n_choices, answer, correct?)
        (0, "2D", "Count", "ADE20K", 4, "C", True),
        (1, "2D", "Relation", "ADE20K", 2, "A", False),
        (2, "2D", "Count", "COCO", 6, "E", True),
        (3, "2D", "Count", "COCO", 4, "D", True),
        (4, "2D", "Relation", "COCO", 2, "B", True),
        (5, "2D", "Relation", "COCO", 2, "A", True),
        (6, "3D", "Depth", "Omni3D", 2, "A", True),
        (7, "3D", "Depth", "Omni3D", 2, "B", False),
        (8, "3D", "Distance", "Omni3D", 2, "A", False),
        (9, "3D", "Distance", "Omni3D", 2, "B", False),
    ]
    items, preds = [], {}
    forms = ["{}", "({})", "The answer is {}.", "{}. 3"]
    for k, (idx, t, task, src, n, ans, ok) in enumerate(spec):
        item = make_item(idx, t, task, src, n, ans)
        items.append(item)
        preds[idx] = forms[k % len(forms)].format(ans if ok else wrong_letter(item))
    return items, preds


def test_official_formula_golden():
    items, preds = golden_set()
    s = score(items, preds)
    assert {k: g.accuracy for k, g in s.by_source.items()} == {"ADE20K": 0.5, "COCO": 1.0, "Omni3D": 0.25}
    assert s.official["CV-Bench-2D"] == pytest.approx(0.75)
    assert s.official["CV-Bench-3D"] == pytest.approx(0.25)
    assert s.official["CV-Bench"] == pytest.approx(0.50)
    assert s.overall == pytest.approx(0.50)
    # The pooled numbers are different and must not be mistaken for the official ones.
    assert s.by_type["2D"].accuracy == pytest.approx(5 / 6)
    assert s.by_type["2D"].accuracy != pytest.approx(s.official["CV-Bench-2D"])
    assert s.correct / s.n == pytest.approx(0.6)
    assert (s.n, s.correct) == (10, 6)


def test_per_task_micro_accuracy_and_counts():
    items, preds = golden_set()
    s = score(items, preds)
    got = {task: (g.n, g.correct) for task, g in s.by_task.items()}
    assert got == {"Count": (3, 3), "Relation": (3, 2), "Depth": (2, 1), "Distance": (2, 0)}
    assert s.by_task["Relation"].accuracy == pytest.approx(2 / 3)


def test_chance_uses_the_same_formulas():
    items, preds = golden_set()
    s = score(items, preds)
    assert s.by_task["Count"].chance == pytest.approx((1 / 4 + 1 / 6 + 1 / 4) / 3)
    assert s.by_task["Relation"].chance == pytest.approx(0.5)
    ade, coco = (1 / 4 + 1 / 2) / 2, (1 / 6 + 1 / 4 + 1 / 2 + 1 / 2) / 4
    assert s.by_source["ADE20K"].chance == pytest.approx(ade)
    assert s.by_source["COCO"].chance == pytest.approx(coco)
    assert s.official_chance["CV-Bench-2D"] == pytest.approx((ade + coco) / 2)
    assert s.official_chance["CV-Bench-3D"] == pytest.approx(0.5)
    assert s.official_chance["CV-Bench"] == pytest.approx(((ade + coco) / 2 + 0.5) / 2)
    # Pooled 2D chance differs from the official-formula one, just like the accuracies.
    assert s.by_type["2D"].chance == pytest.approx((1 / 4 + 1 / 2 + 1 / 6 + 1 / 4 + 1 / 2 + 1 / 2) / 6)


def test_lmms_eval_rule_scores_differently():
    items, preds = golden_set()
    s = score(items, preds, rule="lmms-eval")
    # Items 2 and 6 answered "The answer is X." are right under the legacy rule, wrong here ("T").
    assert (s.rule, s.correct) == ("lmms-eval", 4)


def test_one_type_only_overall_is_that_type():
    items, preds = golden_set()
    three_d = [it for it in items if it.type == "3D"]
    s = score(three_d, preds)  # predictions for other items are ignored
    assert "CV-Bench-2D" not in s.official
    assert s.overall == s.official["CV-Bench-3D"] == pytest.approx(0.25)
    assert s.official_chance["CV-Bench"] == pytest.approx(0.5)


def test_source_spanning_both_types_counts_within_each_type():
    items = [
        make_item(0, "2D", "Count", "Mixed", 4, "A"),
        make_item(1, "3D", "Depth", "Mixed", 2, "A"),
        make_item(2, "3D", "Depth", "Mixed", 2, "A"),
    ]
    s = score(items, {0: "A", 1: "A", 2: "B"})
    assert s.official["CV-Bench-2D"] == 1.0
    assert s.official["CV-Bench-3D"] == 0.5
    assert s.by_source["Mixed"].accuracy == pytest.approx(2 / 3)


def test_missing_predictions_are_an_error():
    items, preds = golden_set()
    del preds[3], preds[7]
    with pytest.raises(ValueError, match=r"no prediction for 2 of 10 items \(idx 3, 7\)"):
        score(items, preds)


def test_to_dict_and_table():
    items, preds = golden_set()
    s = score(items, preds)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["official"] == {"CV-Bench-2D": 0.75, "CV-Bench-3D": 0.25, "CV-Bench": 0.5}
    assert d["by_source"]["COCO"] == {
        "n": 4,
        "correct": 4,
        "accuracy": 1.0,
        "chance": pytest.approx(0.3541666),
    }
    assert d["by_type_pooled"]["2D"]["n"] == 6
    console = Console(record=True, width=120)
    console.print(table(s))
    text = console.export_text()
    for needle in [
        "task Count",
        "source ADE20K",
        "CV-Bench-2D",
        "CV-Bench-3D",
        "75.0",
        "25.0",
        "50.0",
        "+6.8",
    ]:
        assert needle in text, needle


# -------------------------------------------------------------------------------------------- loading
def row(idx=0, **changes):
    d = {
        "idx": idx,
        "type": "2D",
        "task": "Count",
        "question": "How many organs are in the image?",
        "choices": ["3", "2", "1", "0"],
        "answer": "(C)",
        "prompt": format_prompt("How many organs are in the image?", ["3", "2", "1", "0"]),
        "filename": f"img/2D/count/ade20k_{idx}.png",
        "source": "ADE20K",
        "source_dataset": "ADE20K Validation Set",
        "bbox": None,
    }
    d.update(changes)
    return d


def write_jsonl(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_load_items_round_trip(tmp_path):
    path = write_jsonl(
        tmp_path / "test.jsonl", [row(0), "", row(1, type="3D", source="Omni3D", task="Depth")]
    )
    items = load_items(path)
    assert [it.idx for it in items] == [0, 1]
    first = items[0]
    assert (first.type, first.task, first.answer, first.source) == ("2D", "Count", "(C)", "ADE20K")
    assert first.choices == ["3", "2", "1", "0"]
    assert first.extras == {"source_dataset": "ADE20K Validation Set", "bbox": None}
    assert items[1].type == "3D"


def _without(name):
    d = row(0)
    del d[name]
    return d


@pytest.mark.parametrize(
    "bad,pattern",
    [
        ("{not json", r":2: invalid JSON"),
        (_without("answer"), r":2: field 'answer': missing"),
        (row(1, type="4D"), r":2: field 'type': '4D' is not one of 2D, 3D"),
        (row(1, answer="(E)"), r":2: field 'answer': '\(E\)' is not one of \(A\), \(B\), \(C\), \(D\)"),
        (row(1, answer="C"), r":2: field 'answer'"),
        (row("1"), r":2: field 'idx': expected int, got str"),
        (row(True), r":2: field 'idx': expected int, got bool"),
        (row(1, choices="3,2"), r":2: field 'choices': expected list"),
        (row(1, choices=[3, 2]), r":2: field 'choices': options must be strings"),
        (row(1, choices=["3"], answer="(A)"), r":2: field 'choices': 1 options"),
        (row(1, source=" "), r":2: field 'source': empty"),
        (row(0), r":2: field 'idx': 0 repeats the idx of line 1"),
        ([row(1)], r":2: expected a JSON object, got list"),
    ],
)
def test_load_items_errors_name_file_line_and_field(tmp_path, bad, pattern):
    path = write_jsonl(tmp_path / "items.jsonl", [row(0), bad])
    with pytest.raises(CVBenchFormatError, match="items.jsonl" + pattern):
        load_items(path)


def test_registry_entry():
    bench = BENCHMARKS.get("cvbench")
    assert bench.name == "cvbench" and bench.splits == ("test",) and bench.max_new_tokens == 512
    with pytest.raises(UnknownIdError, match=r"valid benchmark ids: .*cvbench"):
        BENCHMARKS.get("cv-bench")


# ------------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny")


def six_items(root):
    """Six items (two 2D sources, one 3D source) in a JSONL with real PNGs of varied aspect ratios."""
    spec = [
        (10, "2D", "Count", "ADE20K", 4, "C", (64, 48)),
        (11, "2D", "Relation", "ADE20K", 2, "A", (40, 72)),
        (12, "2D", "Count", "COCO", 6, "E", (80, 80)),
        (13, "3D", "Depth", "Omni3D", 2, "B", (96, 32)),
        (14, "3D", "Distance", "Omni3D", 2, "A", (50, 60)),
        (15, "3D", "Depth", "Omni3D", 2, "B", (70, 44)),
    ]
    rows = []
    for idx, t, task, src, n, ans, size in spec:
        item = make_item(idx, t, task, src, n, ans)
        image = root / item.filename
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (idx * 20 % 256, 90, 200 - idx)).save(image)
        rows.append({k: v for k, v in item.__dict__.items() if k != "extras"})
    return load_items(write_jsonl(root / "test.jsonl", rows))


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_evaluate_end_to_end_and_resume(tmp_path, tiny):
    model, processor = tiny
    items = six_items(tmp_path)
    out = tmp_path / "preds" / "cvbench.jsonl"
    preds, s = evaluate(
        model,
        processor,
        items,
        tmp_path,
        batch_size=4,
        max_new_tokens=4,
        predictions_path=out,
        progress=False,
    )
    assert list(preds) == [it.idx for it in items]
    assert all(isinstance(p, str) and p == p.strip() for p in preds.values())
    assert lines(out) == [{"idx": i, "prediction": p} for i, p in preds.items()]
    assert s.n == 6 and s == score(items, preds)
    assert set(s.official) == {"CV-Bench-2D", "CV-Bench-3D", "CV-Bench"}

    # Everything is done: a second call generates nothing and leaves the file as it was.
    before = out.read_bytes()
    again, s2 = evaluate(
        model, processor, items, tmp_path, batch_size=4, predictions_path=out, progress=False
    )
    assert again == preds and s2 == s
    assert out.read_bytes() == before

    # Interrupted run: two answers on disk (recognisable ones) are kept, only the other four are generated.
    partial = tmp_path / "partial.jsonl"
    write_jsonl(partial, [{"idx": 10, "prediction": "(C)"}, {"idx": 13, "prediction": "B"}])
    model.train()  # evaluate switches to eval mode and restores the caller's mode
    resumed, s3 = evaluate(
        model, processor, items, tmp_path, batch_size=8, max_new_tokens=4, predictions_path=partial
    )
    model.eval()
    recs = lines(partial)
    assert len(recs) == 6 and recs[:2] == [{"idx": 10, "prediction": "(C)"}, {"idx": 13, "prediction": "B"}]
    assert resumed[10] == "(C)" and resumed[13] == "B"
    assert {r["idx"] for r in recs[2:]} == {11, 12, 14, 15}
    # Greedy decoding is deterministic: the generated items match the first run.
    assert all(resumed[i] == preds[i] for i in (11, 12, 14, 15))
    assert s3.by_source["ADE20K"].correct >= 1 and s3.by_source["Omni3D"].correct >= 1


def test_evaluate_missing_image_names_the_item(tmp_path, tiny):
    model, processor = tiny
    items = six_items(tmp_path)
    (tmp_path / items[4].filename).unlink()
    out = tmp_path / "preds.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"idx 14: .*{items[4].filename}"):
        evaluate(model, processor, items, tmp_path, predictions_path=out, progress=False)
    assert not out.exists()  # checked before any generation


def test_evaluate_rejects_repeated_idx(tmp_path, tiny):
    model, processor = tiny
    items = six_items(tmp_path)
    with pytest.raises(ValueError, match="idx 10 appears more than once"):
        evaluate(model, processor, [*items, items[0]], tmp_path, progress=False)


def test_read_predictions_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"idx": 1, "prediction": "A"}\n{"idx": 2, "predi')
    assert read_predictions(path) == {1: "A"}
    assert path.read_text() == '{"idx": 1, "prediction": "A"}\n'
    # A complete last record that only lacks its newline is kept, and the newline added for appends.
    path.write_text('{"idx": 1, "prediction": "A"}\n{"idx": 2, "prediction": "B"}')
    assert read_predictions(path) == {1: "A", 2: "B"}
    assert path.read_text().endswith('"B"}\n')


def test_read_predictions_bad_line_names_file_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"idx": 1, "prediction": "A"}\n{"id": 2}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: not a prediction record"):
        read_predictions(path)
