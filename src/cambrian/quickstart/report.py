"""What ``make quickstart`` shows and saves about its runs: tables, the verdict, a chat example, figures.

Console output (the variant comparison, points above chance against the targets, a ready-to-paste
``cambrian chat`` command) and the figures of the run directory (loss curves, accuracy versus training
time, test images with the model's answers). ``run`` trains; everything here only reads its results.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


# ------------------------------------------------------------------------------------------- console
def headline(score) -> dict[str, Any]:
    """Flat accuracies in percent from a ``CVBenchScore``: per task, official 2D / 3D / overall."""
    out = {f"acc_{task}": 100 * g.accuracy for task, g in score.by_task.items()}
    out.update({k: 100 * v for k, v in score.official.items()})
    return out


def balanced_subset(items: list, n: int) -> list:
    """The first ``n`` items, taking tasks in turn (the curve compares tasks at every point)."""
    by_task: dict[str, list] = {}
    for it in items:
        by_task.setdefault(it.task, []).append(it)
    out, k = [], 0
    while len(out) < min(n, len(items)):
        for task_items in by_task.values():
            if k < len(task_items) and len(out) < n:
                out.append(task_items[k])
        k += 1
    return out


def compare_table(runs: dict[str, dict[str, Any]]) -> Table:
    """The paper's connector study in miniature: accuracy per task, variant by variant."""
    names = list(runs)
    t = Table(title="SVA over two towers vs a single-tower MLP projector (same data, same budget)")
    t.add_column("")
    for n in names:
        t.add_column(n, justify="right")
    t.add_column("chance", justify="right")
    first = runs[names[0]]["score"]
    for task, g in first.by_task.items():
        t.add_row(
            task,
            *[f"{100 * runs[n]['score'].by_task[task].accuracy:.1f}" for n in names],
            f"{100 * g.chance:.0f}",
        )
    for key in ("CV-Bench-2D", "CV-Bench-3D", "CV-Bench"):
        t.add_row(key, *[f"{100 * runs[n]['score'].official[key]:.1f}" for n in names],
                  f"{100 * first.official_chance[key]:.1f}")  # fmt: skip
    return t


def print_verdict(console: Console, score) -> None:
    """The issue's targets, checked against this run (reported, never hidden)."""
    above = {t: 100 * (g.accuracy - g.chance) for t, g in score.by_task.items()}
    every10 = all(v >= 10 for v in above.values())
    count25 = above.get("Count", 0) >= 25
    goal = 100 * score.official["CV-Bench"] >= 75 and all(v >= 25 for v in above.values())
    fmt = ", ".join(f"{t} {v:+.1f}" for t, v in above.items())
    console.print(f"points above chance: {fmt}")
    console.print(
        f"targets: every task >= +10: {'met' if every10 else 'NOT met'}; Count >= +25: "
        f"{'met' if count25 else 'NOT met'}; goal (overall >= 75%, every task >= +25): {'met' if goal else 'not yet'}"
    )


def chat_example(console: Console, run: dict[str, Any], item, data_dir: Path) -> None:
    """What `cambrian chat` answers on one test image (computed here the way the command does)."""
    from PIL import Image

    from cambrian.eval.cvbench import model_prompt

    model, proc = run["model"], run["processor"]
    prompt = model_prompt(item)
    image = Image.open(data_dir / item.filename).convert("RGB")
    messages = [{"role": "user", "content": f"{proc.image_token}\n{prompt}"}]
    # 128 new tokens: `cambrian chat`'s default
    answer = proc.generate_replies(model, [messages], [image], max_new_tokens=128)[0]
    quoted = prompt.replace('"', '\\"')
    console.print("\ntry it yourself:", style="bold")
    console.print(
        f'cambrian chat {run["final_dir"]} -i {data_dir / item.filename} -p "{quoted}"', markup=False
    )
    console.print(f"-> {answer}    (truth: {item.answer})", markup=False)


# ------------------------------------------------------------------------------------------- figures
def _plt():
    # Loaded on first use (matplotlib is slow to import) with the Agg backend: figures only go to files,
    # and the machine running the quickstart may have no display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Stage 1 and stage 2 loss curves of every variant, one panel per stage."""
    from cambrian.train.metrics import read_metrics

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, stage in zip(axes, ("stage1", "stage2")):
        for name, r in runs.items():
            m = read_metrics(Path(r["run_dir"]) / stage)
            ax.plot([x["step"] for x in m], [x["loss"] for x in m], lw=1, label=name)
        ax.set_title(f"{stage}: {'grounded captions' if stage == 'stage1' else 'instructions'}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curve(runs: dict[str, dict[str, Any]], chance: dict[str, float], path: Path) -> Path:
    """Accuracy on the curve subset against training minutes, per task (and overall), chance dashed."""
    plt = _plt()
    tasks = sorted(k for k in chance if not k.startswith("_"))  # "_overall" is the CV-Bench panel
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.2 * (len(tasks) + 1), 3.2), dpi=110, sharey=True)
    for ax, key in zip(axes, [*tasks, "CV-Bench"]):
        for name, r in runs.items():
            pts = r["curve"]
            col = key if key == "CV-Bench" else f"acc_{key}"
            ax.plot(
                [p["train_minutes"] for p in pts],
                [p.get(col, 0.0) for p in pts],
                marker="o",
                ms=3,
                label=name,
            )
        ax.axhline(100 * chance[key] if key in chance else 100 * chance["_overall"], ls="--", c="gray", lw=1)
        ax.set_title(key)
        ax.set_xlabel("training minutes")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy % (dashed: chance)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_answers(items: list, preds: dict, data_dir: Path, path: Path, n: int = 12) -> Path:
    """A grid of test images with the question, the options, the model's answer and the truth."""
    from PIL import Image

    from cambrian.eval.cvbench import is_correct

    plt = _plt()
    chosen = balanced_subset(items, n)
    cols = 4
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 4.5 * rows), dpi=100)
    for ax, it in zip(axes.flat, chosen):
        ax.imshow(Image.open(data_dir / it.filename).convert("RGB"))
        ax.set_xticks([])
        ax.set_yticks([])
        pred = preds.get(it.idx, "")
        ok = is_correct(pred, it.answer)
        opts = "  ".join(f"({chr(65 + k)}) {c}" for k, c in enumerate(it.choices))
        ax.set_title(f"{it.task}: {it.question}\n{opts}", fontsize=7, wrap=True)
        said = textwrap.fill(pred, 48, max_lines=4, placeholder=" ...")
        ax.set_xlabel(f"{said}\ntruth: {it.answer}", fontsize=6.5, color="green" if ok else "red")
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
