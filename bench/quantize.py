"""What weight-only quantisation of the LLM buys and costs: memory, decode speed, logit drift, answers.

Run: ``.venv/bin/python bench/quantize.py [--model DIR_OR_PRESET] [--hidden H --layers L]``. Prints one
table per device (CPU always, CUDA when present): the unquantised model (``--dtype``, default float32)
against ``int8`` (optimum-quanto) and, on CUDA, ``nf4`` and ``int8-bnb`` (bitsandbytes), each applied by
``cambrian.models.quantize.quantize_model`` to a copy of the same model:

- memory: the loaded model's parameter + buffer storage (quantised tensors count their int8/4-bit data
  and scales), and the LLM linears alone (what quantisation touches);
- decode tokens/s: ``model.generate`` greedy, batch 1, one rendered scene and its question, exactly
  ``--new-tokens`` new tokens (``min_new_tokens`` = ``max_new_tokens``), median of ``--repeats`` after
  a warm-up;
- logit drift: max / mean |logits - reference logits| at the last prompt position of that prompt (the
  reference is the unquantised model on the same device), and the reference logits' standard deviation
  for scale;
- answers: the share of ``--items`` CV-Bench-style questions (rendered scenes, one image each) whose
  greedy ``CambrianProcessor.generate_replies`` answer is identical to the unquantised model's.

Default model: the quickstart architecture (``cambrian.quickstart.model_config``: SigLIP + ConvNeXt
tiny towers, SVA with in-LLM SVA layers, a 128-wide 4-layer Llama, tied lm_head) with random weights;
``--hidden``/``--layers`` scale its LLM. ``--model`` takes a trained quickstart run directory (its
``cambrian/stage2/final`` is used), a model directory, or a preset id. ``measure`` returns the figures
as a dict (bench/serving.py imports it). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from cambrian.models.quantize import llm_linear_names, quantize_model, storage_bytes


def resolve_model_dir(path: Path) -> Path:
    """A model directory, or the final model of a quickstart run directory (``cambrian/stage2/final``)."""
    if (path / "config.json").exists():
        return path
    for candidate in (path / "cambrian" / "stage2" / "final", path / "stage2" / "final"):
        if (candidate / "config.json").exists():
            return candidate
    finals = sorted(path.glob("**/final/config.json"), key=lambda p: p.stat().st_mtime)
    if not finals:
        raise ValueError(f"{path} holds no model (no config.json, nor a quickstart run's */stage2/final)")
    return finals[-1].parent


def load_base(
    model: str | None = None, hidden: int | None = None, layers: int | None = None, seed: int = 0,
    dtype: str = "float32",
):  # fmt: skip
    """(model in ``dtype``, eval mode, on CPU; processor; description)."""
    from cambrian.models.loading import load_model

    if model is None or model == "quickstart":
        from cambrian import CambrianForCausalLM, CambrianProcessor
        from cambrian.quickstart import QuickstartConfig, model_config
        from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

        qc = QuickstartConfig(
            hidden_size=hidden or QuickstartConfig.hidden_size, layers=layers or QuickstartConfig.layers
        )
        tokenizer = build_tiny_tokenizer(vocab_size=qc.vocab_size)
        config = model_config(qc, len(tokenizer))
        processor = CambrianProcessor.from_config(config, tokenizer)
        processor.system = qc.system
        torch.manual_seed(seed)
        desc = f"quickstart architecture, random weights (LLM hidden {qc.hidden_size}, {qc.layers} layers)"
        return CambrianForCausalLM(config).eval().to(getattr(torch, dtype)), processor, desc
    if hidden or layers:
        raise ValueError("--hidden/--layers scale the default quickstart architecture only, not --model")
    path = Path(model)
    target = str(resolve_model_dir(path)) if path.exists() else model
    m, processor = load_model(target, dtype=dtype, random_ok=True)  # a preset id: random weights, as asked
    return m, processor, target


def scene_items(n: int, seed: int = 0) -> list[tuple[Any, list[dict[str, str]]]]:
    """``n`` (image, conversation) pairs: rendered quickstart scenes with a CV-Bench-style question each."""
    from cambrian.eval.cvbench import ANSWER_SUFFIX
    from cambrian.models.tokenization import IMAGE_TOKEN
    from cambrian.quickstart.questions import TASKS, make_question
    from cambrian.quickstart.render import render
    from cambrian.quickstart.sampling import sample_scene
    from cambrian.quickstart.scenes import SceneConfig

    cfg, rng, items = SceneConfig(), np.random.default_rng(seed), []
    while len(items) < n:
        scene = sample_scene(rng, cfg)
        q = make_question(TASKS[len(items) % len(TASKS)], scene, cfg, rng, answer_pos=len(items) % 2)
        if q is not None:
            text = f"{IMAGE_TOKEN}\n{q.prompt}\n{ANSWER_SUFFIX}"
            items.append((render(scene, cfg), [{"role": "user", "content": text}]))
    return items


def _inputs(processor, item, device):
    image, conversation = item
    return processor(text=[processor.apply_chat_template(conversation)], images=[image]).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def _tokens_per_s(model, inputs, new_tokens: int, repeats: int, device: str, pad: int) -> float:
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
    model.generate(**inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = model.generate(**inputs, **kwargs)
        _sync(device)
        times.append(time.perf_counter() - start)
    assert out.shape[1] - inputs["input_ids"].shape[1] == new_tokens
    return new_tokens / statistics.median(times)


def measure(
    model_dir_or_preset: str | None = None,
    modes: tuple[str, ...] | None = None,
    device: str = "cpu",
    new_tokens: int = 32,
    repeats: int = 3,
    items: int = 8,
    hidden: int | None = None,
    layers: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Figures for the model in ``dtype`` and each quantise mode on ``device``: {"model", "device", "rows"}.

    ``modes``: default ``int8`` on CPU, ``int8``, ``nf4``, ``int8-bnb`` on CUDA. Each row: mode,
    memory_mb, llm_linear_mb, tokens_per_s, drift_max, drift_mean, logit_std, answers_match, answers.
    """
    base, processor, desc = load_base(model_dir_or_preset, hidden, layers, seed, dtype)
    plain = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    cuda = device.startswith("cuda")
    modes = modes or (("int8", "nf4", "int8-bnb") if cuda else ("int8",))
    questions = scene_items(items, seed)
    linears = llm_linear_names(base)
    rows, ref_logits, ref_answers = [], None, None
    for mode in (plain, *modes):
        model = copy.deepcopy(base).to(device)
        if mode != plain:
            model = quantize_model(model, mode)
        inputs = _inputs(processor, questions[0], device)
        with torch.inference_mode():
            logits = model(**inputs).logits[0, -1].float().cpu()  # (V,)
        answers = [
            processor.generate_replies(model, [conv], images=[[img]], max_new_tokens=new_tokens)[0]
            for img, conv in questions
        ]
        if mode == plain:
            ref_logits, ref_answers = logits, answers
        drift = (logits - ref_logits).abs()
        llm = model.language_model
        rows.append({
            "mode": mode,
            "memory_mb": storage_bytes(model) / 1e6,
            "llm_linear_mb": sum(storage_bytes(llm.get_submodule(n)) for n in linears) / 1e6,
            "tokens_per_s": _tokens_per_s(model, inputs, new_tokens, repeats, device, processor.tokenizer.pad_token_id),
            "drift_max": float(drift.max()),
            "drift_mean": float(drift.mean()),
            "logit_std": float(ref_logits.std()),
            "answers_match": sum(a == r for a, r in zip(answers, ref_answers)) / len(answers),
            "answers": answers,
        })  # fmt: skip
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return {
        "model": f"{desc}, {dtype}",
        "device": device,
        "new_tokens": new_tokens,
        "items": items,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"{result['model']} on {result['device']} ({result['new_tokens']} new tokens, batch 1)")
    for col in ("mode", "memory MB", "LLM linears MB", "decode tok/s", "drift max", "drift mean",
                "ref logit std", f"answers = ref ({result['items']})"):  # fmt: skip
        t.add_column(col, justify="left" if col == "mode" else "right")
    for r in result["rows"]:
        t.add_row(
            r["mode"], f"{r['memory_mb']:.2f}", f"{r['llm_linear_mb']:.2f}", f"{r['tokens_per_s']:.1f}",
            f"{r['drift_max']:.4f}", f"{r['drift_mean']:.5f}", f"{r['logit_std']:.3f}",
            f"{r['answers_match']:.0%}",
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=None, help="quickstart run dir, model dir or preset (default: quickstart arch)"
    )
    ap.add_argument(
        "--hidden", type=int, default=None, help="LLM width of the default quickstart architecture"
    )
    ap.add_argument(
        "--layers", type=int, default=None, help="LLM layers of the default quickstart architecture"
    )
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="loading dtype"
    )
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, then CUDA if present"
    )
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else [args.device]
    devices = ["cpu"] if devices == ["auto"] else devices
    console = Console()
    for device in devices:
        result = measure(
            args.model, device=device, new_tokens=args.new_tokens, repeats=args.repeats, items=args.items,
            hidden=args.hidden, layers=args.layers, dtype=args.dtype,
        )  # fmt: skip
        console.print(table(result))
        for r in result["rows"]:
            console.print(f"  {r['mode']}: first answer {r['answers'][0]!r}")


if __name__ == "__main__":
    main()
