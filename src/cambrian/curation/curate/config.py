"""What ``cambrian data curate`` is asked to do: ``CurateConfig`` (the YAML's schema and its checks),
``SourceSpec`` and the paper's defaults (category ratios, the short-answer system prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cambrian.utils.config import ConfigError

PAPER_RATIOS = {
    "Language": 21.00,
    "General": 34.52,
    "OCR": 27.22,
    "Counting": 8.71,
    "Math": 7.20,
    "Code": 0.87,
    "Science": 0.88,
}  # percent, Cambrian-1 README "Data Curation"
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."


@dataclass
class SourceSpec:
    """One source of the mixture: its category and (optionally) the files that hold only its rows."""

    category: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class CurateConfig:
    """What to curate and how. Files listed under ``sources`` take that source for all their rows; files
    in ``inputs`` must carry a ``source`` field per row (and a ``category`` unless the map gives one)."""

    inputs: list[str] = field(default_factory=list)
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    cap: int | None = 350_000  # per-source cap t; null: no cap
    ratios: dict[str, float] | None = field(
        default_factory=lambda: dict(PAPER_RATIOS)
    )  # null: no rebalancing
    budget: int | None = None  # total rows after rebalancing; null: the largest mixture with exact ratios
    dedup: bool = True
    system_prompt: str | None = SHORT_ANSWER_PROMPT  # null: add none
    short_max_words: int = 3  # "short answer": every assistant turn at most this many words
    images: str | None = None  # image root: drop rows whose images are missing there
    seed: int = 0
    workers: int = 2  # scan processes
    block_rows: int = 200_000  # rows per scan block (the unit of caching and of parallel work)

    def validate(self, base: Path | None = None) -> None:
        if not self.inputs and not any(s.files for s in self.sources.values()):
            raise ConfigError("no input files: list them under `inputs:` or under `sources.<name>.files`")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"cap: must be >= 1 (or null for no cap), got {self.cap}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget: must be >= 1 (or null), got {self.budget}")
        if self.ratios is not None:
            if not self.ratios or any(v < 0 for v in self.ratios.values()) or sum(self.ratios.values()) <= 0:
                raise ConfigError(f"ratios: need non-negative numbers with a positive sum, got {self.ratios}")
        for name, spec in self.sources.items():
            if spec.category is not None and self.ratios is not None:
                self.category_of(spec.category, f"sources.{name}.category")
        if self.short_max_words < 0:
            raise ConfigError(f"short_max_words: must be >= 0, got {self.short_max_words}")
        if self.workers < 1 or self.block_rows < 1:
            raise ConfigError("workers and block_rows must be >= 1")
        seen: dict[str, str] = {}
        for path, src in self.files(base):
            where = f"sources.{src}.files" if src is not None else "inputs"
            if not Path(path).is_file():
                raise ConfigError(f"{where}: data file {path} does not exist")
            if Path(path).stat().st_size == 0:
                raise ConfigError(f"{where}: data file {path} is empty (no rows)")
            if path in seen:
                raise ConfigError(f"data file {path} is listed twice ({seen[path]} and {src or 'inputs'})")
            seen[path] = src or "inputs"
        if self.images is not None and not Path(self.images).is_dir():
            raise ConfigError(f"images: directory {self.images} does not exist")

    def category_of(self, name: str, where: str) -> str:
        """``name`` as one of the target categories (case-insensitive); raises naming the valid ones."""
        if self.ratios is None:
            return name
        canon = {k.lower(): k for k in self.ratios}
        if name.lower() not in canon:
            raise ConfigError(f"{where}: unknown category {name!r}; valid: {', '.join(self.ratios)}")
        return canon[name.lower()]

    def files(self, base: Path | None = None) -> list[tuple[str, str | None]]:
        """(path, source or None) for every input file, in config order: ``sources`` first."""
        root = base or Path(".")
        out = [(str(root / f), name) for name, spec in self.sources.items() for f in spec.files]
        return out + [(str(root / f), None) for f in self.inputs]
