"""Turning a growing decoded reply into stream pieces whose concatenation is the final reply exactly.

The non-streaming reply is ``decode(new_tokens).strip()`` cut at the first stop string. A streamed piece
must never have to be taken back, so ``TextDeltas`` holds back what may still change: leading
whitespace (it is stripped), trailing whitespace (stripped if nothing follows), an incomplete UTF-8
character (decoded as U+FFFD until its last byte arrives) and a tail that may be the start of a stop
string. Used by ``stream_reply`` and by the server's batched engine alike.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextDeltas:
    """Feed the whole text decoded so far; get back the new piece that is safe to show."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(s for s in stop if s)
        self.sent = ""  # what has been handed out so far; always a prefix of the final reply
        self.stopped = False  # a stop string was seen: the reply is complete

    def _cut(self, text: str) -> str:
        """``text`` up to the first stop string (sets ``stopped``)."""
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return text[: min(hits)]
        return text

    def feed(self, text: str) -> str:
        """The next piece given the full decoded ``text`` so far ("" when nothing is safe yet)."""
        text = self._cut(text).lstrip()
        if self.stopped:
            return self.finish(text)
        safe = len(text)
        while safe and text[safe - 1] == "\ufffd":  # an incomplete multi-byte character
            safe -= 1
        for s in self.stop:  # the longest tail that could still grow into a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[safe - k : safe] == s[:k]:
                    safe -= k
                    break
        safe = len(text[:safe].rstrip())
        return self._emit(text[:safe])

    def finish(self, text: str) -> str:
        """The last piece once generation ended; afterwards ``sent`` is the final reply."""
        return self._emit(self._cut(text).strip())

    def _emit(self, upto: str) -> str:
        if len(upto) <= len(self.sent) or not upto.startswith(self.sent):
            # Nothing new, or a re-decoding changed earlier text (tokenizers may merge across a token
            # boundary): never take text back; the difference shows up in the final piece if at all.
            return ""
        piece, self.sent = upto[len(self.sent) :], upto
        return piece
