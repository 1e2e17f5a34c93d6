"""ASR encoders usable as Qieemo backbones; each returns an :class:`EncoderOutput`."""

from qieemo_sb.encoders.conformer import ConformerEncoder
from qieemo_sb.encoders.output import EncoderOutput

__all__ = ["ConformerEncoder", "EncoderOutput"]
