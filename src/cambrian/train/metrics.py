"""Training metrics: JSONL in the run directory (the source of truth), optional TensorBoard / W&B, a loss PNG.

``metrics.jsonl`` has one JSON object per optimizer step. On resume the lines after the checkpoint's
step are dropped first, so the file always describes one uninterrupted sequence of steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                break
    return out


class MetricsWriter:
    """Appends step records; mirrors scalars to TensorBoard / Weights & Biases when asked (and installed)."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int = 0,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "cambrian",
        config: dict[str, Any] | None = None,
    ):
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError(
                    "tensorboard=true needs the `tensorboard` package: pip install tensorboard"
                ) from e
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError as e:
                raise RuntimeError("wandb=true needs the `wandb` package: pip install wandb") from e
            self._wandb = wb.init(
                project=wandb_project, name=Path(run_dir).name, config=config, resume="allow"
            )

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def plot_loss(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path | None:
    """Loss (and learning rate) against step from ``metrics.jsonl`` as a PNG; None without metrics."""
    records = read_metrics(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [r["loss"] for r in records], lw=1.2, label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over supervised tokens)")
    ax.grid(alpha=0.3)
    if "lr" in records[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in records], color="tab:orange", lw=0.8, alpha=0.7, label="lr")
        ax2.set_ylabel("learning rate (main group)")
    ax.set_title(title or f"{Path(run_dir).name}: training loss")
    fig.tight_layout()
    out = Path(out) if out is not None else Path(run_dir) / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
