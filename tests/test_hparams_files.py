"""Variant files (`extends`) and overrides: backbone swaps, include arguments, errors."""

import io

import pytest
from hyperpyyaml import load_hyperpyyaml

from qieemo_sb.backbones import BACKBONE_DIR
from qieemo_sb.hparams_files import load_hparams, resolved_hparams_text

BASE = f"""\
backbone: !include:{BACKBONE_DIR}/efficient_conformer_tiny.yaml
epochs: 3
encoder: !ref <backbone[encoder]>
head: !new:torch.nn.Linear
    in_features: !ref <backbone[d_model]>
    out_features: 4
modules:
    encoder: !ref <encoder>
    head: !ref <head>
"""


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    return tmp_path


def test_variant_swaps_the_backbone_and_keeps_objects_shared(recipe):
    (recipe / "backbone2.yaml").write_text(
        f"extends: base.yaml\nbackbone: !include:{BACKBONE_DIR}/conformer_tiny.yaml\n"
    )
    (recipe / "backbone2_long.yaml").write_text("extends: backbone2.yaml\nepochs: 9\n")
    base = load_hparams(recipe / "base.yaml")
    variant = load_hparams(recipe / "backbone2_long.yaml", "epochs: 11")
    assert base["encoder"].subsampling[0] == 2 and base["epochs"] == 3
    assert variant["encoder"].subsampling == [4] * 12
    assert variant["epochs"] == 11  # command line beats the file, which beats its base
    assert variant["modules"]["encoder"] is variant["encoder"]


def test_mapping_override_reaches_object_and_include_arguments(recipe):
    hparams = load_hparams(
        recipe / "base.yaml", {"head": {"out_features": 7}, "backbone": {"dropout": 0.0}}
    )
    assert hparams["head"].out_features == 7
    assert hparams["encoder"].blocks[0].dropout_mha.p == 0.0


def test_resolved_text_rebuilds_the_same_model(recipe):
    text = resolved_hparams_text(recipe / "base.yaml", "epochs: 5")
    assert "!include:" not in text and "!ref " not in text
    hparams = load_hyperpyyaml(io.StringIO(text))
    assert hparams["epochs"] == 5
    assert hparams["encoder"].subsampling == [2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8]
    assert hparams["modules"]["head"] is hparams["head"]


def test_unknown_key_names_the_file(recipe):
    (recipe / "typo.yaml").write_text("extends: base.yaml\nepohcs: 4\n")
    with pytest.raises(KeyError, match=r"typo.yaml: 'epohcs' overrides nothing"):
        load_hparams(recipe / "typo.yaml")
    with pytest.raises(KeyError, match=r"command-line overrides: 'head.bias_' overrides nothing"):
        load_hparams(recipe / "base.yaml", "head: {bias_: false}")


def test_missing_base_and_loops(recipe):
    (recipe / "orphan.yaml").write_text("extends: nowhere.yaml\nepochs: 1\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_hparams(recipe / "orphan.yaml")
    (recipe / "a.yaml").write_text("extends: b.yaml\n")
    (recipe / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_hparams(recipe / "a.yaml")


def test_include_arguments_must_exist_in_the_included_file(recipe):
    # `nhead` is a key of efficient_conformer.yaml, not of the tiny file that
    # the base includes: HyperPyYAML alone would accept it and change nothing.
    with pytest.raises(KeyError, match=r"'backbone.nhead' overrides nothing in .*efficient_conformer_tiny.yaml"):
        load_hparams(recipe / "base.yaml", {"backbone": {"nhead": 2}})


ENCODER_WEIGHTS_DIGEST = """
import hashlib, sys, torch
from qieemo_sb.hparams_files import load_hparams
encoder = load_hparams(sys.argv[1], sys.argv[2])["encoder"]
weights = torch.cat([p.detach().flatten() for p in encoder.parameters()])
print(hashlib.sha1(weights.numpy().tobytes()).hexdigest())
"""


@pytest.mark.parametrize("recipe_file, overrides", [
    ("LibriSpeech/ASR/hparams/efficient_conformer_tiny.yaml", "data_folder: x"),
    ("IEMOCAP/Qieemo/hparams/qieemo_tiny.yaml", "{pretrained_asr: x, data_folder: x}"),
])
def test_the_seed_is_set_before_the_encoder_is_built(recipe_file, overrides):
    """Two fresh processes build the same random encoder (the no-pretraining ablation, stage 1's start)."""
    import subprocess
    import sys

    from recipe_runs import ROOT

    digests = {
        subprocess.run([sys.executable, "-c", ENCODER_WEIGHTS_DIGEST, str(ROOT / "recipes" / recipe_file), overrides],
                       capture_output=True, text=True, check=True).stdout.split()[-1]
        for _ in range(2)
    }
    assert len(digests) == 1
