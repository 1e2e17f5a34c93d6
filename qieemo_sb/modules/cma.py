"""CMA: cross-modal attention from emotion features E to PPG features h^l (eqs 6-8)."""

import math
from typing import Tuple

import torch
from torch import nn

from qieemo_sb.masking import lengths_to_padding_mask, zero_padding
from qieemo_sb.modules.standardization import FrameStandardization


class CrossModalAttention(nn.Module):
    """Two rounds of attention with E as queries and h^l as keys and values.

    ``Q = W_Q E``, ``K = W_K h^l``, ``V = W_V h^l`` (eq 6);
    ``Q_att = ReLU(softmax(Q K^T / sqrt(d_att)) V)`` (eq 7);
    ``O_att = ReLU(softmax(Q_att K^T / sqrt(d_att)) V)`` (eq 8).

    The paper typesets V inside the softmax; the usual reading (softmax of the
    scaled scores, then times V) is the one implemented. Padded frames of h^l
    get zero attention weight; padded query frames give zero outputs.

    Arguments
    ---------
    query_size : int
        Dimension of E.
    key_size : int
        Dimension of h^l.
    d_att : int
        Attention dimension (of Q, K, V and the output).
    standardize_ppg : bool
        Standardise h^l's features first (:class:`FrameStandardization`).
    residual : bool
        Return ``E + O_att`` instead of ``O_att``, so the pooled embedding
        keeps the MMF features when the attention adds little (needs
        ``query_size == d_att``). Off in the paper.

    Example
    -------
    >>> cma = CrossModalAttention(query_size=8, key_size=16, d_att=4)
    >>> emotion, ppg = torch.rand(2, 5, 8), torch.rand(2, 7, 16)
    >>> out, (att1, att2) = cma(emotion, torch.tensor([5, 3]), ppg, torch.tensor([7, 2]))
    >>> out.shape, att2.shape
    (torch.Size([2, 5, 4]), torch.Size([2, 5, 7]))
    >>> torch.count_nonzero(att1[1, :, 2:]).item()  # padded keys: no weight
    0
    >>> residual = CrossModalAttention(query_size=8, key_size=16, d_att=8, residual=True)
    >>> residual(emotion, torch.tensor([5, 3]), ppg, torch.tensor([7, 2]))[0].shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        d_att: int = 256,
        standardize_ppg: bool = False,
        residual: bool = False,
    ):
        super().__init__()
        if residual and query_size != d_att:
            raise ValueError(
                f"a residual CMA adds E ({query_size} features) to O_att ({d_att}): "
                "query_size must equal d_att"
            )
        self.residual = residual
        self.ppg_norm = FrameStandardization(key_size) if standardize_ppg else None
        self.query = nn.Linear(query_size, d_att)
        self.key = nn.Linear(key_size, d_att)
        self.value = nn.Linear(key_size, d_att)
        self.scale = 1.0 / math.sqrt(d_att)

    def forward(
        self,
        emotion: torch.Tensor,
        emotion_lengths: torch.Tensor,
        ppg: torch.Tensor,
        ppg_lengths: torch.Tensor,
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Attends from E to h^l twice.

        Arguments
        ---------
        emotion : torch.Tensor
            ``[batch, n, query_size]`` emotion features E.
        emotion_lengths : torch.Tensor
            ``[batch]`` valid frame counts of E.
        ppg : torch.Tensor
            ``[batch, time, key_size]`` last-block features h^l.
        ppg_lengths : torch.Tensor
            ``[batch]`` valid frame counts of h^l.

        Returns
        -------
        output : torch.Tensor
            ``[batch, n, d_att]`` O_att (``E + O_att`` if residual), zero on
            padded query frames.
        attention : tuple of torch.Tensor
            The ``[batch, n, time]`` weights of eq 7 and of eq 8.
        """
        if self.ppg_norm is not None:
            ppg = self.ppg_norm(ppg, ppg_lengths)
        keys, values = self.key(ppg), self.value(ppg)
        key_pad = lengths_to_padding_mask(ppg_lengths, ppg.shape[1]).unsqueeze(1)

        def attend(queries):
            scores = torch.matmul(queries, keys.transpose(1, 2)) * self.scale
            weights = torch.softmax(scores.masked_fill(key_pad, float("-inf")), dim=-1)
            return torch.relu(torch.matmul(weights, values)), weights

        first, first_weights = attend(self.query(emotion))
        output, second_weights = attend(first)
        if self.residual:
            output = output + emotion
        return zero_padding(output, emotion_lengths), (first_weights, second_weights)
