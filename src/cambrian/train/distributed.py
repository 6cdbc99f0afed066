"""Process-group setup and model wrapping for DDP and FSDP2 (``fully_shard``), launched by ``torchrun``.

Works the same on one CPU process, N CPU processes (gloo) and N GPUs (nccl). With FSDP2 the decoder
layers, every in-LLM SVA layer (it runs inside the LLM's forward, from a hook, so it must gather its
own parameters), the connector and the language model are sharded; frozen towers are kept out of
sharding (``ignored_params``): they get no gradients, so replicating them costs nothing but memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few scalars over processes (float64, on the communication device)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed() -> DistContext:
    """Join the process group torchrun set up (env ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of the wrapped HF causal LM (``model.language_model.model.layers``)."""
    inner = model.language_model.get_decoder()
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(inner).__name__} has no `layers` ModuleList to shard")
    return layers


def wrap_model(model: nn.Module, mode: str, ctx: DistContext) -> nn.Module:
    """``mode`` 'none' | 'ddp' | 'fsdp' -> the model to train (DDP wrapper or FSDP2-sharded in place)."""
    if mode == "none":
        return model
    if not dist.is_initialized():
        raise ValueError(f"distributed={mode!r} needs a process group: launch with torchrun")
    if mode == "ddp":
        # Every trainable parameter is used in every step (the trainer runs a zero-weighted image
        # through the model on text-only micro-batches), so unused-parameter search stays off.
        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # Parameters stay fp32 (bf16 comes from autocast), so gradients reduce in fp32.
        kw: dict[str, Any] = {"mesh": init_device_mesh(ctx.device.type, (ctx.world_size,))}
        for layer in model.connector.llm_layers:
            fully_shard(layer, **kw)
        for layer in decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model.connector, **kw)
        frozen_towers = {p for p in model.vision_towers.parameters() if not p.requires_grad}
        fully_shard(model, ignored_params=frozen_towers or None, **kw)
        return model
    raise ValueError(f"distributed mode {mode!r} is not one of 'none', 'ddp', 'fsdp'")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
