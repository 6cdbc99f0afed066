"""The lmms-eval adapter: generate_until on lmms-eval-shaped requests equals the processor's own generation
(batched or not), stop strings, generation settings, loading; with lmms-eval installed, the entry point
and a tiny local task through lmms-eval's real evaluator, offline."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cambrian import build_tiny
from cambrian.eval.lmms_eval import Cambrian, cut_at_stops, generation_settings, parse_tower_paths

HAVE_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
TASK, SPLIT = "fixture_task", "test"
GREEDY = {"max_new_tokens": 8, "temperature": 0, "do_sample": False}


class _Request:
    """lmms-eval's Instance as the adapter sees it (used when lmms-eval is not installed)."""

    def __init__(self, arguments: tuple) -> None:
        self.args = arguments


def doc_images(doc: dict[str, Any]) -> list[Image.Image]:
    return doc["images"]


def request(context: str, gen_kwargs: dict[str, Any], doc_id: int, doc_to_visual=doc_images):
    arguments = (context, gen_kwargs, doc_to_visual, doc_id, TASK, SPLIT)
    if not HAVE_LMMS_EVAL:
        return _Request(arguments)
    from lmms_eval.api.instance import Instance

    return Instance(
        request_type="generate_until",
        arguments=arguments,
        idx=0,
        metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
    )


def image(seed: int, h: int, w: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


# (question, number of images): text-only, one and two images, mixed in one batch.
DOCS = [
    {"question": "What colour is the cube?", "images": []},
    {"question": "How many objects are there? Answer with a number.", "images": [image(1, 24, 32)]},
    {"question": "Is the sphere left of the cube?", "images": [image(2, 40, 32), image(3, 24, 48)]},
    {"question": "Describe the scene.", "images": [image(4, 32, 32)]},
    {"question": "Which is closer, A or B?", "images": [image(5, 48, 24), image(6, 24, 24)]},
]


class RecordingProcessor:
    """The real processor, with each generate_replies call's arguments recorded."""

    def __init__(self, processor) -> None:
        self._processor = processor
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def generate_replies(self, model, conversations, images=None, max_new_tokens=128, **kwargs):
        self.calls.append(
            dict(
                conversations=conversations,
                images=list(images or []),
                max_new_tokens=max_new_tokens,
                **kwargs,
            )
        )
        return self._processor.generate_replies(model, conversations, images, max_new_tokens, **kwargs)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny")


def adapter(tiny, batch_size: int, docs=DOCS) -> tuple[Cambrian, RecordingProcessor]:
    model, processor = tiny
    lm = Cambrian.from_loaded(model, processor, batch_size=batch_size, max_new_tokens=5)
    lm.processor = RecordingProcessor(processor)
    lm.task_dict = {TASK: {SPLIT: docs}}
    return lm, lm.processor


def direct(tiny, doc, max_new_tokens=8) -> str:
    """What the processor generates for the document on its own (greedy), images first."""
    model, processor = tiny
    text = "<image>\n" * len(doc["images"]) + doc["question"]
    return processor.generate_replies(
        model, [[{"role": "user", "content": text}]], doc["images"], max_new_tokens
    )[0]


@pytest.fixture(scope="module")
def expected(tiny):
    out = [direct(tiny, doc) for doc in DOCS]
    assert len(set(out)) >= 3  # the outputs differ enough that a mix-up between requests would show
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_outputs_equal_direct_generation_for_every_batch_size(tiny, expected, batch_size):
    lm, rec = adapter(tiny, batch_size)
    reqs = [request(doc["question"], dict(GREEDY), i) for i, doc in enumerate(DOCS)]
    assert lm.generate_until(reqs) == expected
    assert [len(c["conversations"]) for c in rec.calls] == [
        min(batch_size, len(DOCS) - k) for k in range(0, len(DOCS), batch_size)
    ]
    # Every request's images reached the processor, in the order of its "<image>" placeholders.
    seen = {}
    for call in rec.calls:
        assert call["max_new_tokens"] == 8 and call["do_sample"] is False
        pics = iter(call["images"])
        for conv in call["conversations"]:
            (turn,) = conv
            assert turn["role"] == "user"
            n = turn["content"].count("<image>")
            seen[turn["content"]] = [next(pics).tobytes() for _ in range(n)]
        assert next(pics, None) is None
    for doc in DOCS:
        content = "<image>\n" * len(doc["images"]) + doc["question"]
        assert seen[content] == [im.tobytes() for im in doc["images"]]


def test_placeholders_already_in_the_text_are_kept(tiny, expected):
    lm, rec = adapter(tiny, 2)
    doc = DOCS[2]
    text = "<image>\n<image>\n" + doc["question"]
    assert lm.generate_until([request(text, dict(GREEDY), 2)]) == [expected[2]]
    assert rec.calls[0]["conversations"][0][0]["content"] == text
    with pytest.raises(ValueError, match=r"doc 2: the text has 1 <image> placeholders but 2 images"):
        lm.generate_until([request("<image>\n" + doc["question"], dict(GREEDY), 2)])


def test_doc_to_visual_variants(tiny, expected):
    lm, _ = adapter(tiny, 2)
    single = request(DOCS[1]["question"], dict(GREEDY), 1, doc_to_visual=lambda doc: doc["images"][0])
    none = request(DOCS[0]["question"], dict(GREEDY), 0, doc_to_visual=lambda doc: None)
    no_fn = request(DOCS[0]["question"], dict(GREEDY), 0, doc_to_visual=None)
    assert lm.generate_until([single, none, no_fn]) == [expected[1], expected[0], expected[0]]
    video = request("q", dict(GREEDY), 0, doc_to_visual=lambda doc: ["clip.mp4"])
    with pytest.raises(ValueError, match=r"doc 0: Cambrian takes images only"):
        lm.generate_until([video])


def test_until_cuts_the_reply_at_the_first_stop(tiny, expected):
    full = expected[2]
    stop_late, stop_early = full[5:7], full[2:4]
    assert full.find(stop_early) < full.find(stop_late)
    lm, rec = adapter(tiny, 3)
    kw_list = dict(GREEDY, until=[stop_late, "never in it", "", stop_early])
    kw_str = dict(GREEDY, until=stop_late)
    reqs = [request(DOCS[2]["question"], kw_list, 2), request(DOCS[2]["question"], kw_str, 2)]
    assert lm.generate_until(reqs) == [full[: full.find(stop_early)], full[: full.find(stop_late)]]
    assert len(rec.calls) == 1  # stop strings are applied afterwards: same settings, one batch
    assert kw_list["until"] == [stop_late, "never in it", "", stop_early]  # the task's dict is untouched


def test_requests_batch_only_with_equal_generation_settings(tiny, expected):
    lm, rec = adapter(tiny, 8)
    reqs = [
        request(DOCS[0]["question"], dict(GREEDY), 0),
        request(DOCS[1]["question"], {"max_new_tokens": 3}, 1),
        request(DOCS[3]["question"], dict(GREEDY), 3),
        request(DOCS[4]["question"], {}, 4),  # no settings: greedy, the adapter's max_new_tokens (5)
    ]
    out = lm.generate_until(reqs)
    assert out[0] == expected[0] and out[2] == expected[3]
    assert out[1] == direct(tiny, DOCS[1], max_new_tokens=3)
    assert out[3] == direct(tiny, DOCS[4], max_new_tokens=5)
    calls = sorted((c["max_new_tokens"], len(c["conversations"])) for c in rec.calls)
    assert calls == [(3, 1), (5, 1), (8, 2)]


def test_sampling_settings_reach_generate(tiny):
    lm, rec = adapter(tiny, 2)
    kw = {"max_new_tokens": 2, "temperature": 0.7, "top_p": 0.9, "num_beams": 1, "until": ["\n"]}
    out = lm.generate_until([request(DOCS[0]["question"], kw, 0)])
    assert len(out) == 1 and isinstance(out[0], str)
    assert {k: rec.calls[0][k] for k in ("do_sample", "temperature", "top_p", "num_beams")} == {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "num_beams": 1,
    }


@pytest.mark.parametrize(
    ("gen_kwargs", "settings"),
    [
        ({}, (128, {"do_sample": False}, [])),
        ({"max_new_tokens": 16, "until": "\n\n"}, (16, {"do_sample": False}, ["\n\n"])),
        ({"temperature": 0, "top_p": 1.0, "num_beams": 1}, (128, {"do_sample": False, "num_beams": 1}, [])),
        ({"temperature": 0.5}, (128, {"do_sample": True, "temperature": 0.5}, [])),
        ({"temperature": 0.5, "do_sample": False}, (128, {"do_sample": False}, [])),
        ({"do_sample": True}, (128, {"do_sample": True}, [])),
        ({"do_sample": True, "temperature": 0, "top_k": 5}, (128, {"do_sample": False}, [])),
        (
            {"do_sample": True, "top_k": 5, "until": ["A", "B"]},
            (128, {"do_sample": True, "top_k": 5}, ["A", "B"]),
        ),
    ],
)
def test_generation_settings(gen_kwargs, settings):
    assert generation_settings(gen_kwargs, 128) == settings


def test_generation_settings_reject_bad_until():
    with pytest.raises(ValueError, match="'until' must be a string or a list of strings"):
        generation_settings({"until": 3}, 128)


def test_cut_at_stops():
    assert cut_at_stops("abc. def\n\nghi", ["\n\n", "."]) == "abc"
    assert cut_at_stops("abc", ["x", ""]) == "abc"
    assert cut_at_stops("abc", []) == "abc"


def test_parse_tower_paths():
    assert parse_tower_paths("siglip=/w/siglip; clip = /w/clip") == {"siglip": "/w/siglip", "clip": "/w/clip"}
    assert parse_tower_paths(None) == {} and parse_tower_paths({"a": "b"}) == {"a": "b"}
    with pytest.raises(ValueError, match="'siglip' is not NAME=DIR"):
        parse_tower_paths("siglip")


def test_only_generation_is_supported(tiny):
    lm, _ = adapter(tiny, 1)
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        lm.generate_until_multi_round([])


def test_loads_a_saved_model_directory_and_a_preset(tiny, expected, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reqs = [request(DOCS[i]["question"], dict(GREEDY), i) for i in (0, 2)]
    for pretrained in (str(tmp_path), "tiny"):  # build_tiny("tiny") has the same weights
        lm = Cambrian(pretrained=pretrained, batch_size="2", device="cpu", dtype="float32", random=True)
        lm.task_dict = {TASK: {SPLIT: DOCS}}
        assert lm.batch_size == 2 and lm.device.type == "cpu"
        assert lm.generate_until(reqs) == [expected[0], expected[2]]


def test_bad_model_args_fail_clearly(tmp_path):
    with pytest.raises(TypeError, match="unknown cambrian model_args: conv_template"):
        Cambrian(pretrained="tiny", conv_template="x")
    with pytest.raises(ValueError, match=r"no such directory: .*missing"):
        Cambrian(pretrained=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="neither a model directory nor a preset id"):
        Cambrian(pretrained="no-such-model")
    with pytest.raises(
        ValueError, match="tiny is a preset with random weights; pass random=True to build it"
    ):
        Cambrian(pretrained="tiny")
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        Cambrian(pretrained="tiny", dtype="int8", random=True)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 'auto'"):
        Cambrian(pretrained="tiny", batch_size="auto", random="true")


# ---------------------------------------------------------------------- with lmms-eval installed


def write_task(root, answers: list[str]) -> None:
    """A tiny local lmms-eval task: a saved ``datasets`` dataset (images as Image features) + its yaml."""
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    rows = {
        "image": [image(10 + i, 24 + 8 * i, 32) for i in range(len(answers))],
        "question": [DOCS[i]["question"] for i in range(len(answers))],
        "answer": answers,
    }
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(root / "data")
    )
    (root / "tasks").mkdir()
    (root / "tasks" / "cambrian_fixture.yaml").write_text(
        "task: cambrian_fixture\n"
        f"dataset_path: {root / 'data'}\n"
        "dataset_kwargs:\n  load_from_disk: true\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_visual: image\n"
        "doc_to_text: question\n"
        "doc_to_target: answer\n"
        "generation_kwargs:\n  max_new_tokens: 8\n  temperature: 0\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )


@pytest.mark.skipif(not HAVE_LMMS_EVAL, reason="lmms-eval (the `eval` extra) is not installed")
def test_entry_point_registers_the_model():
    from lmms_eval.models import get_model, get_model_manifest

    assert get_model("cambrian") is Cambrian
    assert get_model_manifest("cambrian").simple_class_path == "cambrian.eval.lmms_eval.Cambrian"


@pytest.mark.skipif(not HAVE_LMMS_EVAL, reason="lmms-eval (the `eval` extra) is not installed")
def test_a_local_task_through_the_lmms_eval_evaluator(tiny, tmp_path, monkeypatch):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    n = 4
    docs = [{"question": DOCS[i]["question"], "images": [image(10 + i, 24 + 8 * i, 32)]} for i in range(n)]
    replies = [direct(tiny, doc) for doc in docs]
    write_task(tmp_path, [replies[0], "no", replies[2], "no"])  # two of four answers are right
    results = simple_evaluate(
        model="cambrian",
        model_args="pretrained=tiny,random=True,device=cpu",
        tasks=["cambrian_fixture"],
        batch_size=3,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        log_samples=True,
    )
    samples = sorted(results["samples"]["cambrian_fixture"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == replies
    expected = sum(r == a for r, a in zip(replies, [replies[0], "no", replies[2], "no"])) / n
    assert results["results"]["cambrian_fixture"]["exact_match,none"] == pytest.approx(expected)
    assert expected >= 0.5
