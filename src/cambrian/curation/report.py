"""The curation report: what each step did, per source and per category, as Markdown, JSON and PNG charts.

``build_report`` turns the scan, the selection and its steps into one plain dict (``report.json``);
``write_report`` renders it as ``report.md`` and three charts: rows per source before and after
(``sources.png``), achieved versus target category ratios (``categories.png``) and the answer-length
histogram before and after (``answer_lengths.png``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Answer-length bins (words of the longest assistant turn): edges are inclusive upper bounds.
LENGTH_EDGES = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200)


def length_bins() -> list[str]:
    labels, lo = [], 0
    for hi in LENGTH_EDGES:
        labels.append(str(hi) if hi == lo else f"{lo}-{hi}")
        lo = hi + 1
    return [*labels, f">{LENGTH_EDGES[-1]}"]


def length_histogram(words: np.ndarray) -> list[int]:
    """Rows per answer-length bin (``length_bins``)."""
    idx = np.searchsorted(np.asarray(LENGTH_EDGES), np.asarray(words, np.int64), side="left")
    return np.bincount(idx, minlength=len(LENGTH_EDGES) + 1).tolist()


def build_report(cfg: Any, sc: Any, df: Any, steps: list[Any], out: Path) -> dict[str, Any]:
    from cambrian.utils.config import to_dict

    final = steps[-1]
    total = max(final.rows_out, 1)
    before = steps[0]
    sources = sorted(before.by_source)
    cat_of = {}
    if sc.frame.height:
        pairs = sc.frame.select("source", "category").unique()
        cat_of = {str(s): str(c) for s, c in zip(pairs["source"].to_list(), pairs["category"].to_list())}
    targets = cfg.ratios or {}
    tsum = sum(targets.values()) or 1.0
    categories = list(targets) + sorted(set(before.by_category) - set(targets))
    # What rebalancing can aim for: the ratios renormalised over the categories that have rows.
    present = [c for c in targets if final.by_category.get(c, 0) > 0 and targets[c] > 0]
    psum = sum(targets[c] for c in present) or 1.0
    bad_examples = [f"{b['file']}:{b['line']}: id={b.get('id')}: {b['reason']}" for b in sc.bad[:20]]
    return {
        "output": str(out),
        "rows_out": final.rows_out,
        "rows_read": sc.n_rows,
        "bad_rows": len(sc.bad),
        "bad_examples": bad_examples,
        "config": to_dict(cfg),
        "steps": [
            {"name": s.name, "detail": s.detail, "rows_in": s.rows_in, "rows_out": s.rows_out} for s in steps
        ],
        "sources": {
            s: {"category": cat_of.get(s), **{st.name: st.by_source.get(s, 0) for st in steps}}
            for s in sources
        },
        "categories": {
            c: {
                "before": before.by_category.get(c, 0),
                "after": final.by_category.get(c, 0),
                "ratio": 100.0 * final.by_category.get(c, 0) / total,
                "target": 100.0 * targets[c] / tsum if c in targets else None,
                "target_present": 100.0 * targets[c] / psum if c in present else None,
            }
            for c in categories
        },
        "system_prompt": {
            "prompt": cfg.system_prompt,
            "added": int(df["add_system"].sum()) if df.height else 0,
            "had_own": int(df["has_system"].sum()) if df.height else 0,
            "rule": f"every assistant turn at most {cfg.short_max_words} words",
        },
        "answer_lengths": {
            "bins": length_bins(),
            "before": length_histogram(sc.frame["words"].to_numpy()),
            "after": length_histogram(df["words"].to_numpy()),
        },
    }


def markdown(r: dict[str, Any]) -> str:
    """``report.md``: the steps, the category ratios, every source, the answer lengths, bad-row examples."""
    lines = [
        "# Curation report",
        "",
        f"Output: `{r['output']}`: **{r['rows_out']:,} rows** from {r['rows_read']:,} read "
        f"({r['bad_rows']:,} bad rows skipped, listed in `bad_rows.jsonl`).",
        "",
        "## Steps",
        "",
        "| step | rows in | rows out | what |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {s['name']} | {s['rows_in']:,} | {s['rows_out']:,} | {s['detail']} |" for s in r["steps"]]
    lines += [
        "",
        "## Categories",
        "",
        "| category | before | after | ratio % | target % | target over the categories present % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, v in r["categories"].items():
        target = "-" if v["target"] is None else f"{v['target']:.2f}"
        tp = "-" if v["target_present"] is None else f"{v['target_present']:.2f}"
        lines.append(f"| {c} | {v['before']:,} | {v['after']:,} | {v['ratio']:.2f} | {target} | {tp} |")
    names = [s["name"] for s in r["steps"]]
    lines += ["", "## Sources", "", "| source | category | " + " | ".join(names) + " |",
              "|---|---|" + "---:|" * len(names)]  # fmt: skip
    for s, v in r["sources"].items():
        lines.append(f"| {s} | {v['category']} | " + " | ".join(f"{v[n]:,}" for n in names) + " |")
    sp = r["system_prompt"]
    if sp["prompt"] is not None:
        lines += ["", "## System prompt", "",
                  f"Added \"{sp['prompt']}\" to {sp['added']:,} rows ({sp['rule']}); "
                  f"{sp['had_own']:,} kept rows bring their own."]  # fmt: skip
    al = r["answer_lengths"]
    lines += ["", "## Answer lengths (words of the longest assistant turn)", "",
              "| words | before | after |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {b} | {x:,} | {y:,} |" for b, x, y in zip(al["bins"], al["before"], al["after"])]
    if r["bad_examples"]:
        lines += ["", "## Bad rows (first 20)", "", *[f"- `{e}`" for e in r["bad_examples"]]]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], out_dir: Path) -> list[Path]:
    """The three PNG charts; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [s["name"] for s in r["steps"]]
    srcs = sorted(r["sources"], key=lambda s: -r["sources"][s][names[0]])[:40]
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(srcs) + 1.5))
    y = np.arange(len(srcs))
    ax.barh(y + 0.2, [r["sources"][s][names[0]] for s in srcs], 0.4, label="before", color="#bbbbbb")
    ax.barh(y - 0.2, [r["sources"][s][names[-1]] for s in srcs], 0.4, label="after", color="#3a78c3")
    ax.set_yticks(y, srcs)
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.set_title("rows per source (largest 40)")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "sources.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    cats = list(r["categories"])
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(cats))
    ax.bar(x - 0.2, [r["categories"][c]["ratio"] for c in cats], 0.4, label="achieved", color="#3a78c3")
    ax.bar(x + 0.2, [r["categories"][c]["target_present"] or 0 for c in cats], 0.4,
           label="target (over the categories present)", color="#e39b2d")  # fmt: skip
    ax.set_xticks(x, cats, rotation=20)
    ax.set_ylabel("% of rows")
    ax.set_title("category ratios")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "categories.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    al = r["answer_lengths"]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(al["bins"]))
    ax.bar(x - 0.2, al["before"], 0.4, label="before", color="#bbbbbb")
    ax.bar(x + 0.2, al["after"], 0.4, label="after", color="#3a78c3")
    ax.set_xticks(x, al["bins"], rotation=30)
    ax.set_xlabel("words in the longest assistant turn")
    ax.set_ylabel("rows")
    if max(al["before"] + [1]) > 0:
        ax.set_yscale("symlog")
    ax.set_title("answer lengths")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "answer_lengths.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(r: dict[str, Any], out_dir: Path) -> None:
    """``report.json``, ``report.md`` and the PNG charts in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(markdown(r))
    plot(r, out_dir)
