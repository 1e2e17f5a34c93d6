"""Relative-position multi-head self-attention (Transformer-XL) on fused SDPA."""

import math
from typing import Optional

import torch
from torch import nn


class RelPositionSelfAttention(nn.Module):
    """Transformer-XL relative-position self-attention, as SpeechBrain's ``RelPosMHAXL``.

    The same parameters under the same names as
    ``speechbrain.nnet.attention.RelPosMHAXL`` (``in_proj_weight``,
    ``out_proj``, ``linear_pos``, ``pos_bias_u``, ``pos_bias_v``), with the same
    arithmetic (its head layout and its ``1 / sqrt(embed_dim)`` scale), so
    checkpoints load strictly either way and outputs agree to float rounding.
    What differs is the cost on long inputs: queries are taken in blocks;
    each block computes only the band of position scores it needs,
    relative-shifts it by a strided view (no pad-and-copy), and runs content
    attention, softmax and the value product in one
    ``scaled_dot_product_attention`` call with the position scores as its
    additive mask, so no ``[time, 2 * time - 1]`` score matrix is ever
    built. The key-padding mask is applied only when a batch has padding.
    The position table may be longer than the input (its centre rows are
    used), so one table can serve every length.

    Arguments
    ---------
    embed_dim : int
        Model dimension ``E``.
    num_heads : int
        Heads ``H``; must divide ``embed_dim``.
    dropout : float
        Dropout on the attention weights (training only).
    query_block : int
        Query frames per attention call (memory and speed; no effect on results).

    Example
    -------
    >>> from speechbrain.nnet.attention import RelPosEncXL
    >>> attention = RelPositionSelfAttention(embed_dim=16, num_heads=2)
    >>> x, pad = torch.rand(2, 5, 16), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    >>> attention(x, RelPosEncXL(16).make_pe(5), key_padding_mask=pad).shape
    torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        query_block: int = 256,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        if query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {query_block}")
        self.dropout, self.query_block = dropout, query_block
        self.scale = 1 / math.sqrt(embed_dim)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.linear_pos = nn.Linear(embed_dim, embed_dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.head_dim, num_heads))
        self.pos_bias_v = nn.Parameter(torch.empty(self.head_dim, num_heads))
        for weight in (self.in_proj_weight, self.pos_bias_u, self.pos_bias_v):
            nn.init.xavier_uniform_(weight)

    @staticmethod
    def _relative_shift(scores: torch.Tensor) -> torch.Tensor:
        """``[B, H, R, T+R-1]`` -> ``[B, H, R, T]``: entry ``(i, j)`` is ``(i, R-1-i+j)``.

        A view with a row stride one smaller, no copy. With the position band of
        query rows ``start .. start+R`` this gives each query its keys' relative
        positions in key order.
        """
        batch, heads, rows, width = scores.shape
        stride = scores.stride()
        return scores.as_strided(
            (batch, heads, rows, width - rows + 1),
            (stride[0], stride[1], stride[2] - 1, stride[3]),
            scores.storage_offset() + rows - 1,
        )

    def forward(
        self,
        x: torch.Tensor,
        pos_embs: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Self-attention of ``x`` with relative positions.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, time, embed_dim]``.
        pos_embs : torch.Tensor
            ``[1, 2 * n - 1, embed_dim]`` from ``RelPosEncXL.make_pe(n)``,
            ``n >= time`` (offsets ``n - 1`` down to ``-(n - 1)``; the
            ``2 * time - 1`` centre rows are used).
        key_padding_mask : torch.Tensor, optional
            ``[batch, time]`` bool, True on padded frames (never attended to).

        Returns
        -------
        torch.Tensor
            ``[batch, time, embed_dim]``.
        """
        batch, time, _ = x.shape
        query_u, query_v, key, value = self._split_heads(nn.functional.linear(x, self.in_proj_weight))
        positions = self._projected_positions(pos_embs, time)
        attended = self._attend(query_u, query_v, key, value, positions, key_padding_mask)
        return self.out_proj(attended)

    def _split_heads(self, projected: torch.Tensor):
        """``[batch, time, 3 * embed_dim]`` (``x @ in_proj_weight.T``) -> per-head
        ``query_u``, ``query_v`` (biased, ``query_v`` scaled), ``key``, ``value``,
        each ``[batch, heads, time, head_dim]``."""
        batch, time, _ = projected.shape
        heads, head_dim = self.num_heads, self.head_dim
        # RelPosMHAXL's layout: per head, [q | k | v] are adjacent in in_proj.
        query, key, value = projected.view(batch, time, heads, 3 * head_dim).chunk(3, dim=-1)
        key, value = key.transpose(1, 2), value.transpose(1, 2)
        query_u = (query + self.pos_bias_u.view(1, 1, heads, head_dim)).transpose(1, 2)
        query_v = (
            ((query + self.pos_bias_v.view(1, 1, heads, head_dim)) * self.scale)
            .transpose(1, 2)
            .contiguous()
        )
        return query_u, query_v, key, value

    def _attend(
        self,
        query_u: torch.Tensor,
        query_v: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        positions: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Attention of :meth:`_split_heads`' tensors with the ``[heads, 2 * time - 1,
        head_dim]`` projected positions: ``[batch, time, embed_dim]`` before ``out_proj``."""
        batch, _, time, _ = query_u.shape
        padding = None
        if key_padding_mask is not None:
            padding = key_padding_mask[:, None, None, :]
        # Query rows in blocks: each block needs only the band of positions its
        # rows see (time + rows - 1 of them): half the work, bounded memory.
        attended = []
        for start in range(0, time, self.query_block):
            end = min(time, start + self.query_block)
            band = positions[:, time - end : 2 * time - 1 - start]
            position_scores = self._relative_shift(
                torch.matmul(query_v[:, :, start:end], band.transpose(1, 2))
            )
            if padding is not None:
                position_scores = position_scores.masked_fill(padding, float("-inf"))
            attended.append(
                nn.functional.scaled_dot_product_attention(
                    query_u[:, :, start:end],
                    key,
                    value,
                    attn_mask=position_scores,
                    dropout_p=self.dropout if self.training else 0.0,
                    scale=self.scale,
                )
            )
        attended = torch.cat(attended, dim=2) if len(attended) > 1 else attended[0]
        return attended.transpose(1, 2).reshape(batch, time, -1)

    def _projected_positions(self, pos_embs: torch.Tensor, time: int) -> torch.Tensor:
        """``[heads, 2 * time - 1, head_dim]``: ``linear_pos`` of the centre rows of ``pos_embs``."""
        return self._project_positions(pos_embs[:, self._position_centre(pos_embs, time)])

    def _position_centre(self, pos_embs: torch.Tensor, time: int) -> slice:
        """The ``2 * time - 1`` centre rows of a ``[1, 2 * n - 1, embed_dim]`` table, ``n >= time``."""
        rows = pos_embs.shape[1]
        table = (rows + 1) // 2
        if pos_embs.dim() != 3 or rows % 2 == 0 or table < time:
            raise ValueError(
                f"pos_embs must be [1, 2 * n - 1, {self.embed_dim}] with n >= {time} "
                f"(the input's frames), got {tuple(pos_embs.shape)}"
            )
        return slice(table - time, table + time - 1)

    def _project_positions(self, pos_embs: torch.Tensor) -> torch.Tensor:
        """``[1, rows, embed_dim]`` -> ``[heads, rows, head_dim]`` by ``linear_pos``."""
        projected = self.linear_pos(pos_embs).view(-1, self.num_heads, self.head_dim)
        return projected.transpose(0, 1).contiguous()
