"""The Qieemo emotion head: MMF -> CMA (optional) -> masked mean -> classifier."""

from typing import NamedTuple, Optional

import torch
from torch import nn

from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.masking import masked_mean
from qieemo_sb.modules.classifier import EmotionClassifier
from qieemo_sb.modules.cma import CrossModalAttention
from qieemo_sb.modules.mmf import MultiBlockFusion


class EmotionHeadOutput(NamedTuple):
    """What :class:`EmotionHead` returns.

    Attributes
    ----------
    logits : torch.Tensor
        ``[batch, n_classes]`` class scores (before softmax).
    embedding : torch.Tensor
        ``[batch, dim]`` pooled utterance embedding the classifier reads.
    """

    logits: torch.Tensor
    embedding: torch.Tensor


class EmotionHead(nn.Module):
    """Everything after the encoder (paper Fig. 1).

    E = MMF(chosen blocks); with CMA, E attends to the last block h^l (the PPG
    features, eqs 6-8); the result is averaged over its valid frames and
    classified. ``cma=None`` is the paper's "no CMA" ablation: E is pooled
    directly. The PPG always comes from the encoder's last block.

    Arguments
    ---------
    mmf : MultiBlockFusion
        Fuses the chosen block outputs into E, ``[batch, n, d_emo]``.
    classifier : EmotionClassifier
        Maps the pooled ``[batch, dim]`` embedding to logits; its input size
        must be CMA's ``d_att`` (with CMA) or MMF's ``d_emo`` (without).
    cma : CrossModalAttention, optional
        Cross-modal attention from E to h^l; None skips it.

    Example
    -------
    >>> from qieemo_sb.encoders.output import EncoderOutput
    >>> hidden = [torch.rand(2, 6, 16)] * 4
    >>> encoder_out = EncoderOutput(hidden, [torch.tensor([6, 4])] * 4, [4] * 4)
    >>> mmf = MultiBlockFusion(d_model=16, blocks=[3, 4], d_emo=8, conv_channels=[4],
    ...                        time_strides=[1], feature_strides=[2])
    >>> head = EmotionHead(
    ...     mmf=mmf,
    ...     cma=CrossModalAttention(query_size=8, key_size=16, d_att=8),
    ...     classifier=EmotionClassifier(input_size=8, n_classes=4),
    ... )
    >>> out = head(encoder_out)
    >>> out.logits.shape, out.embedding.shape
    (torch.Size([2, 4]), torch.Size([2, 8]))
    """

    def __init__(
        self,
        mmf: MultiBlockFusion,
        classifier: EmotionClassifier,
        cma: Optional[CrossModalAttention] = None,
    ):
        super().__init__()
        pooled_size = mmf.projection.out_features if cma is None else cma.value.out_features
        if classifier.hidden.w.in_features != pooled_size:
            source = "MMF's d_emo" if cma is None else "CMA's d_att"
            raise ValueError(
                f"the classifier reads {classifier.hidden.w.in_features} features but "
                f"{source} gives {pooled_size}: set its input_size to match"
            )
        self.mmf = mmf
        self.cma = cma
        self.classifier = classifier

    def forward(self, encoder_out: EncoderOutput) -> EmotionHeadOutput:
        """Classifies a batch of encoder outputs (padded frames are ignored)."""
        emotion, lengths = self.mmf(encoder_out)
        if self.cma is not None:
            emotion, _ = self.cma(
                emotion, lengths, encoder_out.hidden_states[-1], encoder_out.lengths[-1]
            )
        embedding = masked_mean(emotion, lengths)
        return EmotionHeadOutput(self.classifier(embedding), embedding)
