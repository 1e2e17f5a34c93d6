"""Attention decoder of the stage-1 ASR (joint CTC/attention training)."""

from typing import Optional, Tuple

import torch
from speechbrain.decoders.ctc import ctc_greedy_decode
from speechbrain.lobes.models.transformer.Transformer import (
    NormalizedEmbedding,
    PositionalEncoding,
    TransformerDecoder,
    get_lookahead_mask,
)
from torch import nn

from qieemo_sb.masking import lengths_to_padding_mask


class AttentionDecoder(nn.Module):
    """Token embedding + sinusoidal positions + SpeechBrain's TransformerDecoder.

    ``forward`` is teacher forcing for training; ``decode`` is the interface
    SpeechBrain's ``S2STransformerBeamSearcher`` and
    ``S2STransformerGreedySearcher`` call (``modules=[decoder, seq_lin]``).
    The output projection to tokens stays outside (``seq_lin`` in the YAML),
    as in SpeechBrain's transformer recipes.

    Arguments
    ---------
    vocab_size : int
        Number of output tokens.
    d_model : int
        Model dimension (the encoder's).
    nhead : int
        Attention heads.
    num_layers : int
        Decoder layers.
    d_ffn : int
        Feed-forward hidden size.
    dropout : float
        Dropout.
    pad_index : int
        Token that pads targets (masked as keys of the self-attention).

    Example
    -------
    >>> decoder = AttentionDecoder(vocab_size=10, d_model=16, nhead=2, num_layers=1, d_ffn=32)
    >>> tokens = torch.randint(1, 10, (2, 5))
    >>> memory = torch.rand(2, 7, 16)
    >>> decoder(tokens, memory, torch.tensor([7, 4])).shape
    torch.Size([2, 5, 16])
    >>> hidden, attention = decoder.decode(tokens, memory, torch.tensor([7, 4]))
    >>> attention.shape
    torch.Size([2, 5, 7])
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        nhead: int = 4,
        num_layers: int = 6,
        d_ffn: int = 2048,
        dropout: float = 0.1,
        pad_index: int = 0,
    ):
        super().__init__()
        self.embedding = NormalizedEmbedding(d_model, vocab_size)
        self.positional_encoding = PositionalEncoding(d_model, max_len=2500)
        self.decoder = TransformerDecoder(
            num_layers=num_layers,
            nhead=nhead,
            d_ffn=d_ffn,
            d_model=d_model,
            dropout=dropout,
            activation=nn.GELU,
            normalize_before=True,
        )
        self.pad_index = pad_index

    def _run(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        memory_lengths: torch.Tensor,
        token_padding: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.embedding(tokens)
        x = x + self.positional_encoding(x)
        hidden, _, cross_attentions = self.decoder(
            x,
            memory,
            # Boolean like the padding masks (True = masked): PyTorch deprecates mixing types.
            tgt_mask=torch.isinf(get_lookahead_mask(tokens)),
            tgt_key_padding_mask=token_padding,
            memory_key_padding_mask=lengths_to_padding_mask(
                memory_lengths.long(), memory.shape[1]
            ),
        )
        return hidden, cross_attentions[-1]

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Teacher forcing: ``[batch, U]`` tokens (BOS first) -> ``[batch, U, d_model]``.

        ``memory`` is the last encoder block ``[batch, T, d_model]`` and
        ``memory_lengths`` its ``[batch]`` valid frame counts.
        """
        hidden, _ = self._run(tokens, memory, memory_lengths, tokens == self.pad_index)
        return hidden

    def decode(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One search step over the hypotheses so far (no padding among them).

        Returns the ``[batch, U, d_model]`` states and the last layer's
        ``[batch, U, T]`` cross-attention, as SpeechBrain's searchers expect.
        """
        return self._run(tokens, memory, memory_lengths, None)


class CTCGreedySearcher(nn.Module):
    """Best-path CTC decoding with the call signature of SpeechBrain's searchers.

    ``searcher(enc_states, wav_lens)`` returns ``(hyps, None, None, None)``
    like ``S2STransformerGreedySearcher``, so a recipe YAML can pick either as
    its validation search. CTC greedy decoding is cheap and does not loop on a
    young model, which makes it the better progress measure early in training.

    Arguments
    ---------
    ctc_lin : nn.Module
        The CTC output layer (``d_model`` -> tokens).
    blank_index : int
        The CTC blank token.

    Example
    -------
    >>> searcher = CTCGreedySearcher(nn.Linear(4, 3), blank_index=0)
    >>> hyps, _, _, _ = searcher(torch.rand(2, 6, 4), torch.tensor([1.0, 0.5]))
    >>> len(hyps), all(0 not in h for h in hyps)
    (2, True)
    """

    def __init__(self, ctc_lin: nn.Module, blank_index: int = 0):
        super().__init__()
        self.ctc_lin = ctc_lin
        self.blank_index = blank_index

    def forward(self, enc_states: torch.Tensor, wav_lens: torch.Tensor):
        """``[batch, T, d_model]`` states and relative lengths -> token id lists."""
        log_probs = torch.log_softmax(self.ctc_lin(enc_states), dim=-1)
        hyps = ctc_greedy_decode(log_probs, wav_lens, blank_id=self.blank_index)
        return hyps, None, None, None
