"""The conversation behind ``cambrian chat``: history, images for the next turn, ``/commands``, saving.

``ChatSession`` keeps the messages (``{"role", "content"}``), the image paths of each user turn and the
images waiting for the next user turn; ``ask`` streams the assistant's answer through ``stream_reply``
and records it. ``repl`` is the interactive loop over any line reader and writers, so the command line
stays a thin wrapper and the loop is testable without a terminal. Images are opened with
``open_image``: a missing, broken or oversized file is one ``ImageError`` line, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from transformers import LogitsProcessor, LogitsProcessorList

from cambrian.serve.streaming import stream_reply
from cambrian.utils import images as image_utils
from cambrian.utils.images import ImageError, open_image

__all__ = ["COMMANDS", "ChatError", "ChatSession", "CommandResult", "ImageError", "PendingImage"]
__all__ += ["check_settings", "load_image", "repl"]

# Usage -> what it does; the order of /help. Empty line and Ctrl-D also quit (handled by ``repl``).
COMMANDS = {
    "/image PATH": "add an image to your next message (repeat for several)",
    "/reset": "forget the conversation and any pending images",
    "/save FILE": "write the conversation (messages, image paths, model, settings) as JSON",
    "/help": "show this list",
    "/quit": "end the chat (so do an empty line and Ctrl-D)",
}
_NAMES = tuple(usage.split()[0] for usage in COMMANDS)


class ChatError(ValueError):
    """A message or setting the chat cannot use; the text is one line saying what and why."""


@dataclass
class PendingImage:
    """An opened image and the path it came from (as saved with the conversation)."""

    path: str
    image: object  # an RGB PIL image


@dataclass
class CommandResult:
    """What a ``/command`` has to say (one or more lines), whether it failed, whether to end the chat."""

    message: str = ""
    error: bool = False
    quit: bool = False


def check_settings(max_new_tokens: int, temperature: float) -> None:
    """``ChatError`` unless ``max_new_tokens >= 1`` and ``temperature`` is a finite number >= 0."""
    if max_new_tokens < 1:
        raise ChatError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ChatError(f"--temperature must be >= 0 (0 = greedy, > 0 samples), got {temperature}")


def load_image(path: str | Path, max_pixels: int | None = None) -> PendingImage:
    """Open ``path`` (``~`` expanded) for a chat turn; ``ImageError`` (one line) when it cannot be used.

    ``max_pixels`` defaults to ``cambrian.utils.images.DEFAULT_MAX_PIXELS`` as it is at call time.
    """
    resolved = Path(path).expanduser().resolve()
    max_pixels = image_utils.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return PendingImage(str(resolved), open_image(resolved, where=str(path), max_pixels=max_pixels))


class _StepCounter(LogitsProcessor):
    """A pass-through logits processor counting decoding steps, i.e. tokens generated (stop token
    included); ``generate`` calls it once per step with scores (B, vocab)."""

    def __init__(self):
        self.steps = 0

    def __call__(self, input_ids, scores):
        self.steps += 1
        return scores


class ChatSession:
    """One conversation with a model: ``ask`` a message (streamed), ``command`` a ``/command``."""

    def __init__(
        self,
        model,
        processor,
        model_id: str,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        images: list[PendingImage] | tuple = (),
        max_pixels: int | None = None,
    ):
        check_settings(max_new_tokens, temperature)
        self.model, self.processor, self.model_id = model, processor, model_id
        self.max_new_tokens, self.temperature, self.max_pixels = max_new_tokens, temperature, max_pixels
        self.messages: list[dict[str, str]] = []
        self.turn_images: list[list[str]] = []  # one list of image paths per message (empty for answers)
        self.images: list = []  # every image sent so far, in the order of the <image> placeholders
        self.pending: list[PendingImage] = list(images)  # for the next user message
        self.last: dict | None = None  # the last completed turn: prompt, images, reply, generated_tokens

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "do_sample": self.temperature > 0,
        }

    def _generate_kwargs(self) -> dict:
        return {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {}

    # ------------------------------------------------------------------ turns
    def add_image(self, path: str | Path) -> PendingImage:
        """Open ``path`` and keep it for the next user message; ``ImageError`` leaves nothing changed."""
        item = load_image(path, self.max_pixels)
        self.pending.append(item)
        return item

    def reset(self) -> None:
        """Forget the conversation and the pending images (settings stay)."""
        self.messages, self.turn_images, self.images, self.pending, self.last = [], [], [], [], None

    def user_content(self, text: str) -> str:
        """The user message as sent: one placeholder per pending image first, unless ``text`` has them.

        ``ChatError`` when ``text`` has placeholders but not one per pending image.
        """
        tag, n = self.processor.image_token, len(self.pending)
        typed = text.count(tag)
        if typed == 0:
            return f"{tag}\n" * n + text
        if typed != n:
            raise ChatError(
                f"the message has {typed} {tag} placeholder(s) but {n} image(s) are pending (/image PATH); "
                f"type one {tag} per image, or none to put all images first"
            )
        return text

    def ask(self, text: str) -> Iterator[str]:
        """Send ``text`` (with the pending images); the answer's pieces as they are generated.

        Checks happen now (``ChatError``); the turn is recorded when the pieces run out. If the caller
        stops early (closes the iterator, Ctrl-C) the part shown so far is recorded as the answer, so
        history matches the screen; if generation fails the turn is undone and the images stay pending.
        """
        content = self.user_content(text)
        return self._answer(text, content)

    def _answer(self, text: str, content: str) -> Iterator[str]:
        pending = self.pending
        self.messages.append({"role": "user", "content": content})
        self.turn_images.append([p.path for p in pending])
        self.images.extend(p.image for p in pending)
        self.pending = []
        counter, pieces, failed = _StepCounter(), [], False
        try:
            for piece in stream_reply(
                self.model, self.processor, self.messages, self.images, self.max_new_tokens,
                logits_processor=LogitsProcessorList([counter]), **self._generate_kwargs(),
            ):  # fmt: skip
                pieces.append(piece)
                yield piece
        except Exception:
            failed = True
            self.messages.pop()
            self.turn_images.pop()
            del self.images[len(self.images) - len(pending) :]
            self.pending = pending
            raise
        finally:  # also on GeneratorExit / KeyboardInterrupt: keep what was shown
            if not failed:
                reply = "".join(pieces)
                self.messages.append({"role": "assistant", "content": reply})
                self.turn_images.append([])
                self.last = {
                    "prompt": text,
                    "images": [p.path for p in pending],
                    "reply": reply,
                    "generated_tokens": counter.steps,
                }

    # ------------------------------------------------------------------ commands
    def command(self, line: str) -> CommandResult:
        """Run a ``/command`` line (``/image PATH``, ``/reset``, ``/save FILE``, ``/help``, ``/quit``)."""
        name, _, arg = line.strip().partition(" ")
        name, arg = name.lower(), _unquote(arg.strip())
        if name == "/image":
            if not arg:
                return CommandResult("usage: /image PATH", error=True)
            try:
                item = self.add_image(arg)
            except ImageError as e:
                return CommandResult(f"error: {e}", error=True)
            w, h = item.image.size
            return CommandResult(f"image {len(self.pending)} for your next message: {arg} ({w}x{h})")
        if name == "/reset":
            n = len(self.pending)
            self.reset()
            return CommandResult(f"conversation forgotten ({n} pending image(s) dropped)")
        if name == "/save":
            if not arg:
                return CommandResult("usage: /save FILE", error=True)
            try:
                path = self.save(arg)
            except OSError as e:
                return CommandResult(f"error: cannot write {arg}: {e.strerror or e}", error=True)
            return CommandResult(f"saved {len(self.messages)} message(s) to {path}")
        if name == "/help":
            return CommandResult(help_text())
        if name == "/quit":
            return CommandResult(quit=True)
        return CommandResult(f"unknown command {name}; valid: {', '.join(COMMANDS)}", error=True)

    # ------------------------------------------------------------------ records
    def to_dict(self) -> dict:
        """The conversation for ``/save``: model, settings, messages with each user turn's image paths."""
        messages = []
        for message, paths in zip(self.messages, self.turn_images):
            entry = dict(message)
            if message["role"] == "user":
                entry["images"] = paths
            messages.append(entry)
        return {
            "model": self.model_id,
            "settings": self.settings,
            "messages": messages,
            "pending_images": [p.path for p in self.pending],
        }

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict`` as pretty-printed JSON (UTF-8); returns the path written."""
        path = Path(path).expanduser()
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def result(self) -> dict:
        """The last turn for ``--json``: prompt, images, reply, model, settings, generated token count."""
        if self.last is None:
            raise ChatError("nothing has been answered yet")
        return {**self.last, "model": self.model_id, "settings": self.settings}


def _unquote(arg: str) -> str:
    """A path pasted in matching quotes (as file managers copy them) without the quotes."""
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1]
    return arg


def help_text() -> str:
    width = max(len(usage) for usage in COMMANDS)
    lines = [f"  {usage:<{width}}  {what}" for usage, what in COMMANDS.items()]
    lines.append("  start a message with // to send a line that begins with /")
    return "commands:\n" + "\n".join(lines)


def is_command(line: str) -> bool:
    """A ``/command`` line (``//...`` is a message starting with ``/``)."""
    return line.startswith("/") and not line.startswith("//")


def repl(
    session: ChatSession,
    read_line: Callable[[str], str],
    write: Callable[[str], None],
    write_error: Callable[[str], None],
) -> None:
    """The interactive chat: read lines with ``read_line(prompt)`` (EOFError = Ctrl-D), stream answers
    through ``write``, report errors (one line each) through ``write_error``; returns when the user quits.
    """
    pending = f"; {len(session.pending)} image(s) go with your first message" if session.pending else ""
    write(
        f"chatting with {session.model_id}{pending}. /help for commands; empty line, Ctrl-D or /quit ends\n"
    )
    while True:
        try:
            text = read_line("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if not text:
            return
        if is_command(text):
            result = session.command(text)
            if result.message:
                (write_error if result.error else write)(result.message + "\n")
            if result.quit:
                return
            continue
        if text.startswith("//"):
            text = text[1:]
        try:
            pieces = session.ask(text)
        except ChatError as e:
            write_error(f"error: {e}\n")
            continue
        write("cambrian> ")
        try:
            with closing(pieces):  # Ctrl-C: stop generating now, keep the chat
                for piece in pieces:
                    write(piece)
        except KeyboardInterrupt:
            write(" [stopped]")
        except (RuntimeError, ValueError) as e:  # the turn was undone; the conversation goes on
            write("\n")
            write_error(f"error: generation failed ({type(e).__name__}: {e})\n")
            continue
        write("\n")
