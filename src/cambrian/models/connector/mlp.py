"""LLaVA-style ``mlp2x_gelu`` connector: Linear -> GELU -> Linear on the towers' tokens.

Every tower's tokens are resized to the S x S image-token grid and concatenated along channels
(with one tower this is exactly LLaVA-1.5's projector). Unpadding and newline tokens are available
through the same layout code as the SVA connector, but off by default as in LLaVA-1.5.
"""

from __future__ import annotations

import torch
from torch import nn

from cambrian.models.connector.geometry import image_token_counts, token_layout
from cambrian.models.connector.output import ConnectorOutput, pack_image_tokens
from cambrian.models.vision.base import resize_tokens


class MLPConnector(nn.Module):
    def __init__(
        self,
        tower_dims: list[int],
        llm_hidden_size: int,
        image_token_len: int,
        image_newline: bool = False,
        unpad: bool = False,
    ):
        super().__init__()
        self.side = round(image_token_len**0.5)
        self.use_newline, self.unpad = image_newline, unpad
        self.projector = nn.Sequential(
            nn.Linear(sum(tower_dims), llm_hidden_size),
            nn.GELU(),
            nn.Linear(llm_hidden_size, llm_hidden_size),
        )
        self.image_newline = (
            nn.Parameter(torch.randn(llm_hidden_size) / llm_hidden_size**0.5) if image_newline else None
        )
        self.llm_layers = nn.ModuleList()

    def forward(self, tower_feats: list[torch.Tensor], image_sizes: torch.Tensor):

        S = self.side
        query_index, is_query = token_layout(image_sizes, S, self.unpad, self.use_newline)
        x = torch.cat([resize_tokens(f, S) for f in tower_feats], dim=-1)  # (B, S*S, sum C_i)
        queries = self.projector(x.flatten(0, 1)[query_index])  # (Nq, H)
        embeds = pack_image_tokens(queries, is_query, self.image_newline)
        return ConnectorOutput(
            embeds=embeds,
            is_query=is_query,
            tokens_per_image=image_token_counts(image_sizes, S, self.unpad, self.use_newline),
            vision_state=None,
        )
