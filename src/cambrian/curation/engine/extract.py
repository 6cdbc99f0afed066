"""From a wiki page's HTML to figures (image URL + caption) and the text of the section around each.

Parsed with the standard library's ``html.parser``. Understands both MediaWiki renderings:
Parsoid's ``<figure><img><figcaption>`` and the legacy ``<div class="thumb">...<div class="thumbcaption">``
(galleries and infobox images too); an image outside any figure keeps its ``alt`` text as caption. Text
in citations, edit links, navigation boxes, tables and the trailing reference sections is ignored so the
LLM sees prose.

``candidate_figures`` then keeps what is worth downloading: raster files (not SVG/GIF/video, including
SVGs that MediaWiki serves as PNG thumbnails), not icon-sized, with some caption, once per page.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlparse

# Elements without an end tag: never pushed on the stack.
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
BLOCKS_CLOSING_P = frozenset("p div figure table ul ol dl h1 h2 h3 h4 h5 h6 blockquote pre".split())
TEXT_BLOCKS = frozenset({"p", "li", "dd", "blockquote"})
HEADINGS = frozenset({"h2", "h3", "h4"})
SKIP_TAGS = frozenset({"script", "style", "noscript", "math", "svg"})  # neither text nor images
NO_TEXT_TAGS = frozenset({"table"})  # infobox data and the like: images and captions yes, prose no
SKIP_CLASSES = frozenset(
    "reference mw-editsection navbox vertical-navbox metadata noprint reflist references mw-references-wrap "
    "hatnote shortdescription ambox sistersitebox mw-empty-elt magnify toc portalbox".split()
)
FIGURE_CLASSES = frozenset({"thumb", "gallerybox", "infobox-image"})
CAPTION_CLASSES = frozenset({"thumbcaption", "gallerytext", "infobox-caption"})
# Sections whose text is bibliography or links, and whose images (if any) are not about the topic.
TAIL_SECTIONS = frozenset(
    {"references", "notes", "see also", "external links", "further reading", "bibliography", "sources",
     "citations", "footnotes"}
)  # fmt: skip
RASTER_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass
class Figure:
    """One image on the page: its URL as written (best ``srcset`` candidate), caption, alt, declared size."""

    src: str
    caption: str = ""
    alt: str = ""
    width: int | None = None
    height: int | None = None
    section: int = 0  # index into ParsedPage.sections


@dataclass
class Section:
    title: str  # "" for the lead
    text: str = ""


@dataclass
class ParsedPage:
    sections: list[Section] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def _space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None


def best_src(attrs: dict[str, str]) -> str:
    """The largest ``srcset`` candidate (``2x`` beats ``1.5x``; ``800w`` beats ``400w``), else ``src``."""
    best, best_scale = attrs.get("src", ""), 1.0
    for part in (attrs.get("srcset") or "").split(","):
        bits = part.split()
        if len(bits) != 2 or not bits[1][:-1]:
            continue
        try:
            scale = float(bits[1][:-1])
        except ValueError:
            continue
        if bits[1][-1] == "w":  # widths: compare against the declared width
            scale = scale / max(1, _int(attrs.get("width")) or scale)
        if scale > best_scale:
            best, best_scale = bits[0], scale
    return best


@dataclass
class _Frame:
    tag: str
    skip: bool = False
    notext: bool = False
    figure: bool = False
    caption: bool = False
    text: bool = False
    heading: bool = False


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[_Frame] = []
        self.sections = [Section("")]
        self.section_parts: list[list[str]] = [[]]
        self.tail = False  # inside References / External links / ...
        self.figures: list[Figure] = []
        self.open_figures: list[tuple[list[Figure], list[str]]] = []  # (images, caption parts) per container
        self.heading_parts: list[str] = []
        self.skip = self.notext = self.caption = self.text = self.heading = 0

    def _push(self, frame: _Frame) -> None:
        self.stack.append(frame)
        self.skip += frame.skip
        self.notext += frame.notext
        self.caption += frame.caption
        self.text += frame.text
        self.heading += frame.heading
        if frame.figure:
            self.open_figures.append(([], []))

    def _pop(self) -> None:
        frame = self.stack.pop()
        self.skip -= frame.skip
        self.notext -= frame.notext
        self.caption -= frame.caption
        self.text -= frame.text
        self.heading -= frame.heading
        if frame.text:
            self.section_parts[-1].append("\n")
        if frame.heading and not self.heading:
            title = _space("".join(self.heading_parts))
            self.heading_parts = []
            self.tail = title.lower() in TAIL_SECTIONS
            self.sections.append(Section(title))
            self.section_parts.append([])
        if frame.figure:
            images, caption = self.open_figures.pop()
            if self.open_figures:  # a thumb inside a gallery box: the outer container owns the caption
                self.open_figures[-1][0].extend(images)
                self.open_figures[-1][1].extend(caption)
            else:
                text = _space("".join(caption))
                for fig in images:
                    fig.caption = text
                    self.figures.append(fig)

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attr_list}
        classes = set(attrs.get("class", "").split())
        if tag == "img":
            if not self.skip and not self.tail:
                fig = Figure(
                    src=best_src(attrs), alt=_space(attrs.get("alt", "")), width=_int(attrs.get("width")),
                    height=_int(attrs.get("height")), section=len(self.sections) - 1,
                )  # fmt: skip
                if self.open_figures:
                    self.open_figures[-1][0].append(fig)
                else:
                    self.figures.append(fig)
            return
        if tag in VOID:
            return
        if tag in BLOCKS_CLOSING_P and self.stack and self.stack[-1].tag == "p":
            self._pop()  # HTML closes an open <p> at the next block element
        if tag == "p" and self.stack and self.stack[-1].tag == "p":
            self._pop()
        self._push(
            _Frame(
                tag,
                skip=tag in SKIP_TAGS or bool(classes & SKIP_CLASSES),
                notext=tag in NO_TEXT_TAGS,
                figure=tag == "figure" or bool(classes & FIGURE_CLASSES),
                caption=tag == "figcaption" or bool(classes & CAPTION_CLASSES),
                text=tag in TEXT_BLOCKS,
                heading=tag in HEADINGS,
            )
        )

    def handle_endtag(self, tag: str) -> None:
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k].tag == tag:
                while len(self.stack) > k:
                    self._pop()
                return
        # a stray end tag: ignore it, as browsers do

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.heading:
            self.heading_parts.append(data)
        elif self.caption and self.open_figures:
            self.open_figures[-1][1].append(data)
        elif self.text and not self.notext and not self.open_figures and not self.tail:
            self.section_parts[-1].append(data)

    def result(self) -> ParsedPage:
        while self.stack:
            self._pop()
        for section, parts in zip(self.sections, self.section_parts):
            section.text = _space("".join(parts))
        return ParsedPage(self.sections, self.figures)


def parse_html(html: str) -> ParsedPage:
    """Sections (title, prose) and figures (with captions) of one page's HTML."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.result()


def original_name(url: str) -> str:
    """The uploaded file's name: ``.../thumb/a/ab/Foo.svg/220px-Foo.svg.png`` -> ``Foo.svg``."""
    parts = unquote(urlparse(url).path).split("/")
    if "thumb" in parts[:-1] and len(parts) >= 2:
        return parts[-2]
    return parts[-1]


def context_for(page: ParsedPage, fig: Figure, max_chars: int) -> str:
    """The text of the figure's section, topped up with the lead when short, cut at a word boundary."""
    section = page.sections[fig.section]
    parts = [section.text] if section.text else []
    lead = page.sections[0].text
    if fig.section != 0 and lead and len(section.text) < max_chars // 3:
        parts.append(lead)
    text = " ".join(parts)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
    return text


def candidate_figures(
    page: ParsedPage, *, base_url: str, min_side: int, max_chars: int
) -> tuple[list[dict[str, str]], Counter[str]]:
    """Figures worth downloading as ``{url, caption, section, context}`` and counts of the rest by reason."""
    kept: list[dict[str, str]] = []
    rejected: Counter[str] = Counter()
    seen: set[str] = set()
    for fig in page.figures:
        if not fig.src or fig.src.startswith("data:"):
            rejected["no source"] += 1
            continue
        url = urljoin(base_url, fig.src)
        name = original_name(url).lower()
        if os.path.splitext(name)[1] not in RASTER_EXTENSIONS or ".svg." in name:
            rejected["non-raster"] += 1
            continue
        sides = [s for s in (fig.width, fig.height) if s]
        if sides and max(sides) < min_side:
            rejected["icon"] += 1
            continue
        caption = fig.caption or fig.alt
        if not caption:
            rejected["no caption"] += 1
            continue
        if url in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(url)
        kept.append(
            {
                "url": url,
                "caption": caption,
                "section": page.sections[fig.section].title,
                "context": context_for(page, fig, max_chars),
            }
        )
    return kept, rejected
