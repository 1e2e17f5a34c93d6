"""Finds and loads the backbone YAMLs shipped in ``qieemo_sb/hparams/backbones``.

The recipes ``!include`` these files; this module is for code that needs a
backbone outside a recipe (tests, benchmarks, the inference interface).

Example
-------
>>> sorted(BACKBONES)
['conformer', 'conformer_tiny', 'efficient_conformer', 'efficient_conformer_tiny', 'whisper']
>>> backbone = load_backbone("efficient_conformer_tiny")
>>> backbone["encoder"].frame_periods_ms[:4]
[20.0, 20.0, 20.0, 40.0]
"""

from pathlib import Path
from typing import Dict, Optional

from hyperpyyaml import load_hyperpyyaml

from qieemo_sb import HPARAMS_DIR

BACKBONE_DIR = HPARAMS_DIR / "backbones"
BACKBONES = {path.stem: path for path in BACKBONE_DIR.glob("*.yaml")}


def backbone_yaml_path(name: str) -> Path:
    """Path of a packaged backbone YAML by name (e.g. ``"conformer_tiny"``)."""
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; packaged backbones: {sorted(BACKBONES)}"
        )
    return BACKBONES[name]


def load_backbone(name_or_path: str, overrides: Optional[Dict] = None) -> Dict:
    """Loads a backbone YAML (a packaged name or a file path) into objects.

    Returns the HyperPyYAML dict with at least ``compute_features``,
    ``normalize`` and ``encoder``.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = backbone_yaml_path(str(name_or_path))
    elif not path.is_file():
        raise FileNotFoundError(f"backbone YAML not found: {path}")
    with open(path, encoding="utf-8") as stream:
        return load_hyperpyyaml(stream, overrides or {})
