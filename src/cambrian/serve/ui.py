"""The web chat page (Gradio) over the serving engine, mounted into the API server at ``/ui``.

Like the original Cambrian demo: attach images to a message, ask, and watch the answer stream in; the
conversation goes on over several turns, with temperature / top-p / max-tokens controls, a Stop button
(the engine stops that request at its next token) and Clear (a new conversation).

The engine is stateless, so every turn re-sends the whole conversation: each user turn keeps the paths
of its images (Gradio's upload cache) and gets one ``<image>`` placeholder per image, and all images of
the conversation are re-opened (``open_image``, under the page's pixel limit) in placeholder order. The
conversation lives in a per-browser-session ``gr.State``; the chat window only displays it. A refused
turn (bad image, too many images, queue full, a failed generation) shows a toast and leaves the
conversation as it was, with the message put back in the input box.

Nothing phones home: Gradio's analytics and version check are off and the theme uses system fonts, so
the page loads nothing from outside the server.
"""

from __future__ import annotations

import html
import os

# Read by Gradio when a Blocks is built (and by some Gradio versions at import): no telemetry, no version
# check against the internet.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from pathlib import Path
from typing import Any

import fastapi
import gradio as gr

from cambrian.serve.engine import Engine, QueueFull, SamplingParams
from cambrian.serve.protocol import ImageLimits
from cambrian.utils.images import ImageError, open_image

# One user or assistant turn as kept in the page's state: {"role", "text", "images": [cached paths]}.
Turn = dict[str, Any]

_DEFAULTS = ImageLimits()  # the same image limits as the OpenAI API by default


class _Refused(Exception):
    """A turn the page cannot run; the message is shown to the user as is."""


def to_messages(conv: list[Turn], image_token: str) -> tuple[list[dict[str, str]], list[str]]:
    """The engine's ``{"role", "content"}`` messages and the image paths in placeholder order.

    Each image becomes one ``image_token`` line before its turn's text (as the API does for image
    parts). A turn stopped before any text (an empty assistant turn) is left out, and consecutive turns
    of one role are merged, so the template always sees alternating roles.
    """
    messages: list[dict[str, str]] = []
    paths: list[str] = []
    for turn in conv:
        pieces = [image_token] * len(turn["images"]) + ([turn["text"]] if turn["text"] else [])
        if not pieces:
            continue
        paths.extend(turn["images"])
        content = "\n".join(pieces)
        if messages and messages[-1]["role"] == turn["role"]:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": turn["role"], "content": content})
    return messages, paths


def to_chatbot(conv: list[Turn]) -> list[dict[str, Any]]:
    """The chat window's messages: a user turn shows its images then its text (fresh objects each call,
    since Gradio diffs successive streamed values)."""
    shown = []
    for turn in conv:
        # Text as a {"type": "text"} part: a plain string would go through inspect.cleandoc.
        content = [{"path": p} for p in turn["images"]]
        content += [{"type": "text", "text": turn["text"]}] if turn["text"] else []
        if content:
            shown.append({"role": turn["role"], "content": content})
    return shown


class ChatPage:
    """The page's event handlers over one engine (all sessions share it; their state is a ``gr.State``)."""

    def __init__(self, engine: Engine, max_tokens_limit: int, max_images: int, max_pixels: int):
        if max_tokens_limit < 1 or max_images < 0 or max_pixels < 1:
            raise ValueError(
                f"max_tokens_limit ({max_tokens_limit}) and max_pixels ({max_pixels}) must be at least 1, "
                f"max_images ({max_images}) at least 0"
            )
        self.engine = engine
        self.max_tokens_limit, self.max_images, self.max_pixels = max_tokens_limit, max_images, max_pixels
        self.image_token: str = engine.processor.image_token

    def _open(self, path: str):
        return open_image(path, where=Path(path).name, max_pixels=self.max_pixels)

    def check_turn(self, message: dict | None, conv: list[Turn]) -> Turn:
        """The user turn for ``message`` (the multimodal box's ``{"text", "files"}``); ``_Refused`` when it
        cannot be sent: empty, the reserved image text typed in, too many images, or a bad image."""
        text = ((message or {}).get("text") or "").strip()
        files = [str(f) for f in (message or {}).get("files") or []]
        if not text and not files:
            raise _Refused("Type a question or attach an image first.")
        if self.image_token in text:
            raise _Refused(
                f"The message contains the reserved text {self.image_token}; attach images with the upload "
                "button instead."
            )
        total = sum(len(t["images"]) for t in conv) + len(files)
        if total > self.max_images:
            raise _Refused(
                f"{total} images in this conversation, over this server's limit of {self.max_images}; "
                "press Clear to start a new conversation."
            )
        for path in files:
            try:
                self._open(path)  # decoded now so a bad file is refused before the turn is taken
            except ImageError as e:
                raise _Refused(str(e)) from None
        return {"role": "user", "text": text, "images": files}

    def add_turn(self, message: dict | None, conv: list[Turn] | None):
        """Submit: check the message, show it, and lock the input box until the reply is done."""
        conv = list(conv or [])
        try:
            turn = self.check_turn(message, conv)
        except _Refused as e:
            # A user's mistake, not a server fault: no traceback in the log. Toasts render HTML: escaped.
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None
        conv.append(turn)
        return gr.MultimodalTextbox(value=None, interactive=False), to_chatbot(conv), conv

    def _start(self, conv: list[Turn], temperature: float, top_p: float, max_tokens: float):
        """Queue the reply to ``conv`` on the engine; ``_Refused`` with the reason when it cannot be."""
        messages, paths = to_messages(conv, self.image_token)
        try:
            images = [self._open(p) for p in paths]
        except ImageError as e:  # a cached upload removed or changed since its turn
            raise _Refused(f"{e}; press Clear to start a new conversation") from None
        prepared = self.engine.prepare(messages, images)
        room = self.engine.context_len - len(prepared.input_ids)
        if room < 1:
            raise _Refused(
                f"The conversation is {len(prepared.input_ids)} tokens, the model's context is "
                f"{self.engine.context_len}; press Clear to start a new conversation."
            )
        # The sliders bound these in the browser; a client calling the Gradio API directly is clamped.
        params = SamplingParams(
            max_tokens=max(1, min(int(max_tokens), self.max_tokens_limit, room)),
            temperature=min(max(float(temperature), 0.0), 2.0),
            top_p=min(max(float(top_p), 0.0), 1.0),
        )
        try:
            return self.engine.submit(prepared, params)
        except QueueFull as e:
            raise _Refused(f"The server is busy ({e}); try again in a moment.") from None
        except RuntimeError as e:  # the engine is closed: the server is shutting down
            raise _Refused(f"The server cannot answer: {e}.") from None

    async def respond(self, conv: list[Turn] | None, temperature: float, top_p: float, max_tokens: float):
        """Stream the reply to the last user turn: yields (chat window, state, input box) as it grows.

        On a refusal or a generation error the turn is undone (a warning toast says why, the message
        goes back into the input box). When Gradio closes this generator (Stop, Clear, the tab closed),
        the ``finally`` cancels the engine request, which then stops at its next token.
        """
        conv = list(conv or [])
        if not conv or conv[-1]["role"] != "user":
            return
        asked = conv[-1]
        request = None
        try:
            request = self._start(conv, temperature, top_p, max_tokens)
            reply = ""
            async for ev in request.events():
                if ev.kind == "text":
                    reply += ev.text
                    shown = [*conv, {"role": "assistant", "text": reply.lstrip(), "images": []}]
                    yield to_chatbot(shown), shown, gr.skip()
                elif ev.kind == "error":
                    raise _Refused(ev.text[:1].upper() + ev.text[1:] + ".")
                else:  # "done": the final text is stripped as ``generate_replies`` strips it
                    done = [*conv, {"role": "assistant", "text": reply.strip(), "images": []}]
                    yield to_chatbot(done), done, gr.skip()
                    if ev.finish_reason == "length":
                        gr.Info(f"The reply stopped at the {ev.completion_tokens}-token limit.", duration=4)
        except _Refused as e:
            gr.Warning(html.escape(str(e), quote=False), title="No reply")
            back = {"text": asked["text"], "files": asked["images"]}
            yield to_chatbot(conv[:-1]), conv[:-1], gr.MultimodalTextbox(value=back, interactive=True)
        finally:
            if request is not None:
                request.cancel()  # a no-op once finished; otherwise stops the row at its next token


def build_ui(
    engine: Engine,
    title: str = "Cambrian",
    max_tokens_limit: int = 2048,
    max_images: int = _DEFAULTS.max_images,
    max_pixels: int = _DEFAULTS.max_pixels,
) -> gr.Blocks:
    """The chat page over ``engine``: images per message (at most ``max_images`` per conversation, each
    at most ``max_pixels``), replies of at most ``max_tokens_limit`` tokens.

    The theme (system fonts) is given where the page is served (``mount_ui``), as Gradio 6 wants.
    """
    page = ChatPage(engine, max_tokens_limit, max_images, max_pixels)
    # Uploads live in Gradio's cache; files a day old are removed hourly (a conversation that still
    # refers to one is told to start again), so a long-running server does not fill its disk.
    with gr.Blocks(
        title=title, analytics_enabled=False, fill_height=True, delete_cache=(3600, 86400)
    ) as demo:
        conv = gr.State([])
        gr.Markdown(f"## {title}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=220):
                with gr.Accordion("Parameters", open=True):
                    temperature = gr.Slider(
                        0.0, 2.0, value=0.2, step=0.05, label="Temperature", info="0: greedy (deterministic)",
                        elem_id="cambrian-temperature",
                    )  # fmt: skip
                    top_p = gr.Slider(
                        0.05, 1.0, value=0.7, step=0.05, label="Top P", elem_id="cambrian-top-p"
                    )
                    max_tokens = gr.Slider(
                        1, max_tokens_limit, value=min(512, max_tokens_limit), step=1,
                        label="Max output tokens", elem_id="cambrian-max-tokens",
                    )  # fmt: skip
                gr.Markdown(
                    f"Attach up to {max_images} images per conversation (each at most "
                    f"{max_pixels / 1e6:g} megapixels). Every turn is answered with the whole conversation, "
                    "images included."
                )
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation", elem_id="cambrian-chat", height=520, buttons=["copy", "copy_all"],
                    feedback_options=None, placeholder="Attach an image, ask about it.",
                )  # fmt: skip
                box = gr.MultimodalTextbox(
                    placeholder="Ask about the image(s)…  (Enter sends, Shift+Enter: new line)",
                    file_types=["image"], file_count="multiple", sources=["upload"], show_label=False,
                    max_plain_text_length=1_000_000, elem_id="cambrian-input", autofocus=True,
                )  # fmt: skip
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="cambrian-stop")
                    clear = gr.Button("Clear", variant="secondary", elem_id="cambrian-clear")

        def unlock():
            return gr.MultimodalTextbox(interactive=True)

        def reset():
            return [], [], gr.MultimodalTextbox(value=None, interactive=True)

        # All events queued: Gradio 6 gives un-queued events of a mounted app file URLs without the mount
        # path. No concurrency limits: the engine batches concurrent sessions and bounds its own queue.
        free = {"concurrency_limit": None}
        answering = box.submit(page.add_turn, [box, conv], [box, chatbot, conv], **free).success(
            page.respond, [conv, temperature, top_p, max_tokens], [chatbot, conv, box],
            show_progress="minimal", **free,
        )  # fmt: skip
        answering.then(unlock, None, box, **free)
        # Cancelling closes ``respond``: its ``finally`` cancels the engine request.
        stop.click(unlock, None, box, cancels=[answering], **free)
        clear.click(reset, None, [chatbot, conv, box], cancels=[answering], **free)
        chatbot.clear(reset, None, [chatbot, conv, box], cancels=[answering], **free)
    return demo


def mount_ui(app: fastapi.FastAPI, engine: Engine, path: str = "/ui", **kwargs) -> fastapi.FastAPI:
    """Mount the chat page on ``app`` at ``path``.

    ``kwargs``: ``build_ui``'s (title, max_tokens_limit, max_images, max_pixels); the rest go to
    ``gr.mount_gradio_app`` (auth, root_path, max_file_size -- default 20 MiB as the API's image limit).
    """
    ui_keys = ("title", "max_tokens_limit", "max_images", "max_pixels")
    demo = build_ui(engine, **{k: kwargs.pop(k) for k in ui_keys if k in kwargs})
    kwargs.setdefault("max_file_size", _DEFAULTS.max_image_bytes)
    kwargs.setdefault("footer_links", [])
    kwargs.setdefault("run_history", False)  # conversations stay out of the browser's storage
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    kwargs.setdefault("theme", theme)  # system fonts: nothing fetched from font services
    return gr.mount_gradio_app(app, demo, path=path, **kwargs)
