"""``stream_reply``: pieces joined equal the non-streaming greedy reply, stop strings cut cleanly, many
pieces arrive for a long reply, and leaving the loop early stops generation."""

from __future__ import annotations

import threading

from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from cambrian.serve.streaming import stream_reply

QUESTION = [{"role": "user", "content": "what is in the picture?"}]
# With this image the tiny seed-3 model answers in many space-separated words; the streamer hands text
# out at word boundaries, so this is the prompt that shows streaming granularity.
WORDY = [{"role": "user", "content": "<image>\nwhat colour?"}]


def _red():
    return [Image.new("RGB", (40, 30), (200, 40, 40))]


class _Steps(LogitsProcessor):
    """Counts decoding steps (generate calls it once per new token)."""

    def __init__(self):
        self.steps = 0

    def __call__(self, input_ids, scores):
        self.steps += 1
        return scores


def _images():
    return [Image.new("RGB", (40, 30), (200, 40, 40)), Image.new("RGB", (24, 48), (10, 90, 220))]


def test_greedy_pieces_join_to_generate_replies_without_images(tiny):
    model, proc = tiny
    want = proc.generate_replies(model, [QUESTION], None, 24)[0]
    pieces = list(stream_reply(model, proc, QUESTION, None, 24))
    assert "".join(pieces) == want
    assert len(pieces) >= 2 and all(pieces)  # streamed, and no empty pieces handed out


def test_greedy_pieces_join_to_generate_replies_with_images(tiny):
    model, proc = tiny
    messages = [
        {"role": "user", "content": "<image>\n<image>\ncompare them"},
        {"role": "assistant", "content": "the first is red"},
        {"role": "user", "content": "and the second?"},
    ]
    want = proc.generate_replies(model, [messages], _images(), 16)[0]
    assert "".join(stream_reply(model, proc, messages, _images(), 16)) == want


def test_several_pieces_for_a_long_reply(tiny):
    model, proc = tiny
    steps = _Steps()
    pieces = list(stream_reply(model, proc, WORDY, _red(), 12, logits_processor=LogitsProcessorList([steps])))
    assert steps.steps >= 8  # the reply really is >= 8 tokens long
    assert "".join(pieces).count(" ") >= 3  # ... and several words (the streamer's unit)
    assert len(pieces) >= 4, pieces  # not one blob at the end


def test_stop_string_cuts_the_reply_and_never_leaks(tiny):
    model, proc = tiny
    full = proc.generate_replies(model, [WORDY], _red(), 24)[0]
    # A stop string from the middle of the reply, spanning several characters, no whitespace at its ends
    # and no replacement character (those are held back for a different reason).
    start = next(
        i
        for i in range(len(full) // 3, len(full) - 4)
        if not full[i].isspace() and not full[i + 3].isspace() and "\ufffd" not in full[i : i + 4]
    )
    stop = full[start : start + 4]
    cut = full.find(stop)
    assert cut > 0, (full, stop)
    want = full[:cut].strip()
    pieces = list(stream_reply(model, proc, WORDY, _red(), 24, stop=[stop, "never-generated-@@"]))
    assert "".join(pieces) == want and len(pieces) >= 2, (full, stop, pieces)
    assert not any(stop in p for p in pieces)
    # Nothing past the cut: the joined text is exactly the reply before the stop string, so no prefix of
    # the stop string (held back while it could still grow into it) was handed out either.
    assert len("".join(pieces)) <= cut


def test_leaving_the_loop_early_stops_generation(tiny):
    model, proc = tiny
    full_steps = _Steps()
    list(stream_reply(model, proc, WORDY, _red(), 200, logits_processor=LogitsProcessorList([full_steps])))
    assert full_steps.steps == 200  # this prompt runs to the token limit when left alone

    steps = _Steps()
    gen = stream_reply(model, proc, WORDY, _red(), 200, logits_processor=LogitsProcessorList([steps]))
    first = next(gen)
    gen.close()  # what a `break` out of a for loop does to the generator
    assert first
    assert steps.steps < full_steps.steps  # generation stopped early instead of running to the limit
    assert not any(t.name == "cambrian-stream" and t.is_alive() for t in threading.enumerate())
    # The same model streams normally afterwards (nothing left locked or half-finished).
    want = proc.generate_replies(model, [QUESTION], None, 8)[0]
    assert "".join(stream_reply(model, proc, QUESTION, None, 8)) == want


def test_for_loop_break_returns(tiny):
    model, proc = tiny
    seen = []
    for piece in stream_reply(model, proc, WORDY, _red(), 200):
        seen.append(piece)
        if len(seen) == 2:
            break
    assert len(seen) == 2
