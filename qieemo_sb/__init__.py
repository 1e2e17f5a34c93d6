"""Qieemo on SpeechBrain: emotion recognition from a pretrained conformer ASR encoder.

The library behind the recipes in ``recipes/``: the two ASR backbones
(:mod:`qieemo_sb.encoders`), the fusion modules MMF and CMA and the classifier
head (:mod:`qieemo_sb.modules`), metrics (:mod:`qieemo_sb.metrics`) and data
preparation (:mod:`qieemo_sb.data`).
"""

from pathlib import Path

__version__ = "0.1.0"

#: Folder of the HyperPyYAML files shipped with the package (backbones, ...).
HPARAMS_DIR = Path(__file__).resolve().parent / "hparams"
