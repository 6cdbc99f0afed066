"""SupervisedDataset + collate: JSON rows and image files on disk -> padded batches the tiny model trains on."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from cambrian import CambrianProcessor, build_tiny, preset_config
from cambrian.data.dataset import (
    Collator,
    ListRows,
    Skipped,
    SupervisedDataset,
    collate,
    model_inputs,
)
from cambrian.models.tokenization import IGNORE_INDEX
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

TOL = 1e-5
JINJA = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}"
)
# What each template puts around an assistant reply inside the learned span: (before, after).
LEARNED = {
    "llama_3": ("", "<|eot_id|>"),
    "vicuna_v1": (" ", "</s>"),
    "chatml_direct": ("", "<|im_end|>"),
    "phi3": ("", "<|end|>"),
    "chat_template": ("", "<|eot_id|>"),
}
REPLIES = ["A red circle.", "Two blue cubes.", "The star is above the cone."]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny", seed=0)


@pytest.fixture()
def images(tmp_path):
    """Three image files of different aspect ratios under tmp_path/img."""
    root = tmp_path / "img"
    root.mkdir()
    for name, (w, h, seed) in {
        "wide.png": (64, 40, 1),
        "tall.jpg": (30, 70, 2),
        "square.png": (48, 48, 3),
    }.items():
        demo_image(w, h, seed=seed).save(root / name)
    return root


def _turns(questions: list[str], replies: list[str]) -> list[dict[str, str]]:
    out = []
    for q, a in zip(questions, replies):
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D bool mask."""
    edges = torch.diff(
        mask.int(), prepend=torch.zeros(1, dtype=torch.int), append=torch.zeros(1, dtype=torch.int)
    )
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))


def _learned_texts(tok, ex) -> list[str]:
    labels = ex["labels"]
    learned = labels != IGNORE_INDEX
    assert torch.equal(labels[learned], ex["input_ids"][learned])  # labels are the tokens themselves
    return [tok.decode(labels[s:e]) for s, e in _runs(learned)]


def _rows(images_root) -> list[dict]:
    return [
        {  # two images, in different turns; multi-turn
            "id": "two",
            "image": ["wide.png", str(images_root / "tall.jpg")],  # relative and absolute
            "conversations": _turns(
                ["<image>\nWhat is this?", "And this one?\n<image>", "Where is the star?"], REPLIES
            ),
        },
        {"id": "text", "conversations": _turns(["How many cubes?"], ["Two."])},
        {
            "id": "one",
            "image": "square.png",
            "conversations": _turns(["<image>\nDescribe."], ["A green heart."]),
        },
    ]


# === Examples ===


@pytest.mark.parametrize("template", list(LEARNED))
def test_labels_cover_exactly_the_assistant_replies(template, images):
    tok = build_tiny_tokenizer()
    tok.chat_template = JINJA
    proc = CambrianProcessor.from_config(preset_config("tiny"), tok)
    ds = SupervisedDataset(ListRows(_rows(images)), proc, image_root=images, template=template, system="S.")
    before, after = LEARNED[template]

    ex = ds[0]
    assert not isinstance(ex, Skipped), ex
    assert _learned_texts(tok, ex) == [f"{before}{r}{after}" for r in REPLIES]
    # Every image occupies num_image_tokens slots, in placeholder order, each as one contiguous run.
    slots = _runs(ex["input_ids"] == proc.image_token_id)
    assert [e - s for s, e in slots] == proc.num_image_tokens(ex["image_sizes"]).tolist()
    assert ex["image_sizes"].tolist() == [[64, 40], [30, 70]]
    assert [p.shape[:2] for p in ex["pixel_values"]] == [(2, 3)] * len(proc.preprocessors)
    assert (ex["id"], ex["index"]) == ("two", 0)

    text = ds[1]
    assert _learned_texts(tok, text) == [f"{before}Two.{after}"]
    assert "pixel_values" not in text and "image_sizes" not in text
    assert not (text["input_ids"] == proc.image_token_id).any()


def test_system_prompt_per_row(tiny, images):
    _, proc = tiny
    rows = [
        {"id": "field", "system": "Row system.", "conversations": _turns(["Hi?"], ["Hello."])},
        {
            "id": "turn",
            "conversations": [{"from": "system", "value": "Turn system."}, *_turns(["Hi?"], ["Hey."])],
        },
        {"id": "default", "conversations": _turns(["Hi?"], ["Yo."])},
        {
            "id": "both",
            "system": "Field wins.",
            "conversations": [{"from": "system", "value": "Turn loses."}, *_turns(["Hi?"], ["Ok."])],
        },
    ]
    ds = SupervisedDataset(ListRows(rows), proc, system="Dataset system.")
    texts = [proc.decode(ds[i]["input_ids"]) for i in range(len(rows))]
    header = "<|start_header_id|>system<|end_header_id|>"
    assert f"{header}Row system.<|eot_id|>" in texts[0] and "Dataset system." not in texts[0]
    assert f"{header}Turn system.<|eot_id|>" in texts[1] and "Dataset system." not in texts[1]
    assert f"{header}Dataset system.<|eot_id|>" in texts[2]
    assert f"{header}Field wins.<|eot_id|>" in texts[3] and "Turn loses." not in texts[3]
    # Without a dataset system the template default is used.
    default = SupervisedDataset(ListRows(rows[2:3]), proc)[0]
    assert "You are Cambrian" in proc.decode(default["input_ids"])


def test_too_long_rows_are_truncated_when_no_image_is_cut(tiny, images):
    _, proc = tiny
    rows = _rows(images)
    full = SupervisedDataset(ListRows(rows), proc, image_root=images, system="")[1]
    n = len(full["input_ids"]) - 2
    cut = SupervisedDataset(ListRows(rows), proc, image_root=images, system="", max_length=n)[1]
    assert cut["input_ids"].tolist() == full["input_ids"][:n].tolist()


# === Bad rows ===


class BrokenRows(ListRows):
    """Rows whose second entry is undecodable JSON, like a row index over a damaged file."""

    def row(self, i):
        if i == 1:
            raise ValueError("line 2: Expecting ',' delimiter: line 1 column 12 (char 11)")
        return super().row(i)

    def line(self, i):
        return 10 + i


def test_bad_rows_come_back_as_skipped(tiny, images):
    _, proc = tiny
    (images / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    good = (images / "square.png").read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    one = _turns(["<image>\nDescribe."], ["A cube."])
    late_image = _turns(
        ["Describe the scene in a lot of detail, please.", "<image>\nAnd now?"], ["Sure.", "A cube."]
    )
    rows = [
        {"id": "ok", "conversations": _turns(["Hi?"], ["Hello."])},
        {"id": "never seen"},
        {"id": "missing", "image": "nope.png", "conversations": one},
        {"id": "garbage", "image": "garbage.png", "conversations": one},
        {"id": "truncated", "image": "truncated.png", "conversations": one},
        {"id": "mismatch", "image": ["wide.png", "square.png"], "conversations": one},
        {"id": "too long", "image": "wide.png", "conversations": late_image},
        {
            "id": "too long text",
            "conversations": _turns(["Is the red cube left of the blue star? " * 4], ["No."]),
        },
        {"id": "no conv"},
        {"id": "bad image field", "image": 7, "conversations": one},
        {"id": "bad turns", "conversations": [{"from": "robot", "value": "beep"}]},
    ]
    ds = SupervisedDataset(BrokenRows(rows), proc, image_root=images, max_length=20, system="")
    got = [ds[i] for i in range(len(rows))]
    assert not isinstance(got[0], Skipped)
    assert all(isinstance(s, Skipped) for s in got[1:]), got
    by_id = {s.id: s for s in got[1:]}
    assert got[1] == Skipped(
        None, 1, 11, "unreadable row: line 2: Expecting ',' delimiter: line 1 column 12 (char 11)"
    )
    assert by_id["missing"].reason == f"image file not found: {images / 'nope.png'}"
    assert by_id["garbage"].reason.startswith(f"cannot read image {images / 'garbage.png'}")
    assert by_id["truncated"].reason.startswith(f"cannot read image {images / 'truncated.png'}")
    # Row problems are the ones `cambrian data validate` reports (records.check_row), word for word.
    assert by_id["mismatch"].reason == "2 images but 1 <image> placeholder in the human turns"
    assert "> max_length 20 and truncation would cut image 0" in by_id["too long"].reason
    assert (
        by_id["too long text"].reason == "truncating to max_length 20 leaves no supervised (assistant) token"
    )
    assert by_id["no conv"].reason == "missing 'conversations'"
    assert "'image' must be a path string" in by_id["bad image field"].reason
    assert by_id["bad turns"].reason == (
        "turn 0: 'from' is 'robot'; valid: human, gpt, system; no 'gpt' turn (nothing to learn from)"
    )
    assert (by_id["missing"].index, by_id["missing"].line) == (2, 12)
    assert str(by_id["missing"]).startswith("row 2 (line 12) id 'missing' skipped: image file not found")


def test_configuration_errors_raise_at_construction(tiny):
    _, proc = tiny
    with pytest.raises(KeyError, match="unknown conversation template 'llama3'; valid"):
        SupervisedDataset(ListRows([]), proc, template="llama3")
    with pytest.raises(ValueError, match="padding_side 'middle' is not one of left, right"):
        Collator(pad_token_id=0, padding_side="middle")


# === Collation ===


def _mixed_examples(proc, images):
    ds = SupervisedDataset(ListRows([*_rows(images), {"id": "broken"}]), proc, image_root=images, system="S.")
    return [ds[i] for i in (1, 0, 3, 2)]  # text-only, two images, skipped, one image


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_to_the_longest_and_concatenates_images_in_order(tiny, images, side):
    _, proc = tiny
    examples = _mixed_examples(proc, images)
    kept = [examples[i] for i in (0, 1, 3)]
    pad = proc.tokenizer.pad_token_id
    batch = collate(examples, pad, padding_side=side)

    lengths = [len(e["input_ids"]) for e in kept]
    assert (
        batch["input_ids"].shape
        == batch["labels"].shape
        == batch["attention_mask"].shape
        == (3, max(lengths))
    )
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == batch["labels"].dtype == torch.long
    assert batch["ids"] == ["text", "two", "one"]
    assert [s.id for s in batch["skipped"]] == ["broken"]
    for b, e in enumerate(kept):
        real = batch["attention_mask"][b].bool()
        assert int(real.sum()) == lengths[b]
        assert real[-1] if side == "left" else real[0]  # padding sits on the requested side
        assert torch.equal(batch["input_ids"][b][real], e["input_ids"])
        assert (batch["input_ids"][b][~real] == pad).all()
        assert (batch["labels"][b][~real] == IGNORE_INDEX).all()
        assert torch.equal(batch["labels"][b][real][1:], e["labels"][1:])
    assert batch["num_label_tokens"] == sum(int((e["labels"][1:] != IGNORE_INDEX).sum()) for e in kept)
    # Images of "two" then "one", in placeholder order.
    assert batch["image_sizes"].tolist() == [[64, 40], [30, 70], [48, 48]]
    for t, pv in enumerate(batch["pixel_values"]):
        torch.testing.assert_close(pv, torch.cat([kept[1]["pixel_values"][t], kept[2]["pixel_values"][t]]))


def test_collate_text_only_and_all_skipped(tiny, images):
    _, proc = tiny
    examples = _mixed_examples(proc, images)
    text_only = collate([examples[0]], proc.tokenizer.pad_token_id)
    assert "pixel_values" not in text_only and "image_sizes" not in text_only
    assert collate([examples[2], examples[2]], 0) == {"skipped": [examples[2]] * 2, "num_label_tokens": 0}


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_loss_is_the_token_weighted_mean_of_per_sample_losses(tiny, images, side):
    model, proc = tiny
    examples = _mixed_examples(proc, images)
    pad = proc.tokenizer.pad_token_id
    batch = collate(examples, pad, padding_side=side)

    model.zero_grad()
    loss = model(**model_inputs(batch)).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    with torch.no_grad():
        singles = [collate([e], pad) for e in examples if not isinstance(e, Skipped)]
        per_sample = torch.stack([model(**model_inputs(s)).loss for s in singles])
        counts = torch.tensor([s["num_label_tokens"] for s in singles], dtype=per_sample.dtype)
        # num_label_tokens is exactly the count the model's shifted loss divides by.
        summed = model(**model_inputs(batch), num_items_in_batch=batch["num_label_tokens"]).loss
    assert counts.sum() == batch["num_label_tokens"]
    torch.testing.assert_close(loss.detach(), (per_sample * counts).sum() / counts.sum(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(summed, loss.detach(), atol=TOL, rtol=TOL)
    model.zero_grad()


def test_dataloader_workers_give_the_same_batches(tiny, images):
    _, proc = tiny
    rows = [*_rows(images), {"id": "broken"}, *_rows(images)]
    ds = SupervisedDataset(ListRows(rows), proc, image_root=images, system="S.")
    collator = Collator(proc.tokenizer.pad_token_id)
    serial = list(DataLoader(ds, batch_size=3, collate_fn=collator, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=3, collate_fn=collator, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for key in a:
            if key == "pixel_values":
                assert all(torch.equal(x, y) for x, y in zip(a[key], b[key]))
            elif isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key])
            else:
                assert a[key] == b[key]
