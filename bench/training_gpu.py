"""GPU training step of a ~1B-parameter Cambrian in bf16 with FSDP2: peak memory and tokens/s.

Prepared for a machine with CUDA (runs on CPU with ``--small`` as a smoke test of the same path):

    torchrun --nproc_per_node=1 bench/training_gpu.py            # or N GPUs
    python bench/training_gpu.py --small                          # CPU smoke test, tiny widths

The model is built from a config (random weights, nothing downloaded): a TinyLlama-shaped LLM
(H=2048, 22 layers, 32000 vocab, ~1.1B parameters), the released SVA widths (V=1024, 576 queries, depth 3,
in-LLM SVA after layers 0, 3, 6, ...), and four small frozen towers whose tokens are resized to the
released grids (576/576/576/2304). The step is the trainer's own: FSDP2 sharding (``wrap_model``),
bf16 autocast, the summed-token loss, AdamW with the trainer's parameter groups, gradient clipping.
It prints the trainable / frozen parameter counts, the median step time, tokens/s, samples/s and peak
GPU memory, and the same step without in-LLM SVA (a baseline for what the SVA layers cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
from rich.console import Console
from rich.table import Table


def _config(small: bool, in_llm_sva: bool):
    from cambrian.models.presets import tiny_config

    cfg = tiny_config("llama")
    if small:
        text = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=512)  # fmt: skip
        dim, queries, grids = 64, 64, (64, 64, 64, 256)
    else:
        text = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096)  # fmt: skip
        dim, queries, grids = 1024, 576, (576, 576, 576, 2304)
    for key, value in text.items():
        setattr(cfg.text_config, key, value)
    for tower, n in zip(cfg.vision_towers, grids):
        tower["token_len"] = n
    cfg.vision_hidden_size = dim
    cfg.image_token_len = queries
    cfg.query_num_list = [queries]
    cfg.num_of_vision_sampler_layers = len(range(0, text["num_hidden_layers"], 3)) if in_llm_sva else 0
    cfg.start_of_vision_sampler_layers, cfg.stride_of_vision_sampler_layers = 0, 3
    cfg.validate()
    return cfg


def _batch(processor, batch: int, seq: int, device):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    vocab = 400
    texts, images = [], []
    for i in range(batch):
        words = torch.randint(10, vocab, (seq,), generator=g).tolist()
        texts.append(processor.image_token + processor.tokenizer.decode(words))
        images.append(Image.new("RGB", (640 - 40 * (i % 3), 480), (i * 30 % 255, 90, 160)))
    inputs = processor(text=texts, images=images, padding_side="right")
    inputs = inputs.to(device)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels = labels.masked_fill(labels == processor.image_token_id, -100)
    return inputs, labels


def run(small: bool, batch: int, seq: int, steps: int, in_llm_sva: bool, console: Console) -> dict:
    from cambrian import CambrianForCausalLM, CambrianProcessor
    from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer
    from cambrian.train.config import TrainConfig
    from cambrian.train.distributed import DistContext, wrap_model
    from cambrian.train.trainer import group_lrs, param_groups, set_trainable, token_loss_sum

    rank, world = dist.get_rank(), dist.get_world_size()
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    cfg = _config(small, in_llm_sva)
    processor = CambrianProcessor.from_config(cfg, build_tiny_tokenizer())
    torch.manual_seed(0)
    model = CambrianForCausalLM(cfg)
    tcfg = TrainConfig(stage=2)
    set_trainable(model, tcfg)
    model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device).train()
    model.vision_towers.eval()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    ctx = DistContext(rank=rank, world_size=world, local_rank=device.index or 0, device=device)
    wrapped = wrap_model(model, "fsdp", ctx)
    opt = torch.optim.AdamW(param_groups(model, group_lrs(tcfg, 1.0), 0.0), fused=device.type == "cuda")
    params = [p for g in opt.param_groups for p in g["params"]]
    inputs, labels = _batch(processor, batch, seq, device)
    tokens = int(inputs["attention_mask"].sum()) * world
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with amp:
            loss = token_loss_sum(wrapped(**inputs, use_cache=False).logits, labels) / (labels != -100).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"trainable": n_train, "frozen": n_frozen, "step_s": step, "tokens_s": tokens / step,
            "samples_s": batch * world / step, "peak_gib": peak, "loss": float(loss)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny widths (CPU smoke test of the same path)")
    ap.add_argument("--batch", type=int, default=8, help="samples per GPU")
    ap.add_argument("--seq", type=int, default=512, help="text tokens per sample (plus the image tokens)")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    if "RANK" not in os.environ:  # plain `python`: a one-process group
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533"
        )
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    console = Console()
    rows = {}
    for name, sva in (("Cambrian (in-LLM SVA)", True), ("no in-LLM SVA", False)):
        rows[name] = run(args.small, args.batch, args.seq, args.steps, sva, console)
    if dist.get_rank() == 0:
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        t = Table(title=f"one training step, bf16 autocast, FSDP2 on {dist.get_world_size()} x {dev}, "
                  f"batch {args.batch}/device, {args.seq} text tokens + image")  # fmt: skip
        for col in ("model", "trainable", "frozen", "step s", "tokens/s", "samples/s", "peak GiB", "loss"):
            t.add_column(col, justify="right")
        for name, r in rows.items():
            t.add_row(name, f"{r['trainable'] / 1e6:,.0f}M", f"{r['frozen'] / 1e6:.1f}M", f"{r['step_s']:.3f}",
                      f"{r['tokens_s']:,.0f}", f"{r['samples_s']:.1f}", f"{r['peak_gib']:.1f}", f"{r['loss']:.3f}")  # fmt: skip
        console.print(t)
        a, b = rows["Cambrian (in-LLM SVA)"], rows["no in-LLM SVA"]
        console.print(
            f"in-LLM SVA costs {a['step_s'] / b['step_s']:.2f}x the step time of the same model without it"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
