"""Connectors: turn the towers' tokens into LLM-width image tokens. A registry with exact ids.

A connector is built from the ``CambrianConfig`` and the towers' channel widths and grid sides, and
maps ``tower_feats[i]`` (B_img, N_i, C_i) plus ``image_sizes`` (B_img, 2) to a ``ConnectorOutput``:
the packed image tokens of all images in order, which tokens are latent queries (vs newline
tokens), how many tokens each image owns, and the vision state the in-LLM SVA layers need (None
for connectors without them). ``ConnectorOutput.select_images`` re-selects images without re-encoding.
Adding a connector is one file plus one registration below.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cambrian.models.connector.output import ConnectorOutput, pack_image_tokens
from cambrian.registry import Registry

__all__ = ["CONNECTORS", "ConnectorOutput", "build_connector", "pack_image_tokens"]


CONNECTORS: Registry[Callable[..., nn.Module]] = Registry("connector")


@CONNECTORS.register("sva")
def _build_sva(config, tower_dims: list[int], tower_grids: list[int]) -> nn.Module:
    from cambrian.models.connector.sva import SVAConnector

    return SVAConnector(
        tower_dims=tower_dims,
        tower_grids=tower_grids,
        llm_hidden_size=config.llm_hidden_size,
        dim=config.vision_hidden_size,
        image_token_len=config.image_token_len,
        query_num_list=config.query_num_list,
        depth=config.connector_depth,
        num_heads=config.sva_num_heads,
        num_llm_layers=len(config.sva_layer_indices),
        image_newline=config.image_newline,
        unpad=config.unpad,
    )


@CONNECTORS.register("mlp2x_gelu")
def _build_mlp(config, tower_dims: list[int], tower_grids: list[int]) -> nn.Module:
    from cambrian.models.connector.mlp import MLPConnector

    return MLPConnector(
        tower_dims=tower_dims,
        llm_hidden_size=config.llm_hidden_size,
        image_token_len=config.image_token_len,
        image_newline=config.image_newline,
        unpad=config.unpad,
    )


def build_connector(config, tower_dims: list[int], tower_grids: list[int]) -> nn.Module:
    return CONNECTORS.get(config.mm_projector_type)(config, tower_dims, tower_grids)
