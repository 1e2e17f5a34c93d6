"""Qieemo's emotion modules: MMF, CMA, pooling and the classifier head."""

from qieemo_sb.modules.classifier import EmotionClassifier, MaskedMeanPooling
from qieemo_sb.modules.cma import CrossModalAttention
from qieemo_sb.modules.emotion_head import EmotionHead, EmotionHeadOutput
from qieemo_sb.modules.mmf import MultiBlockFusion

__all__ = [
    "CrossModalAttention",
    "EmotionClassifier",
    "EmotionHead",
    "EmotionHeadOutput",
    "MaskedMeanPooling",
    "MultiBlockFusion",
]
