"""The stage-1 -> stage-2 hand-off: an exported ASR encoder folder, loaded strictly.

``export_asr_encoder`` writes, after stage-1 training::

    <out_dir>/
        encoder.ckpt      state dict of the (checkpoint-averaged) encoder
        normalizer.ckpt   global mean/std statistics of the feature normalizer
        tokenizer.model   SentencePiece model of the ASR (not needed by stage 2)
        backbone.yaml     self-contained HyperPyYAML rebuilding this exact
                          encoder: compute_features, normalize, encoder, ...
        export.json       what is in the folder and where it came from

Stage 2 builds the encoder from its own backbone YAML (the package's file,
or this ``backbone.yaml``) and its Pretrainer loads the two checkpoints with
:func:`load_state_dict_strict` and :func:`load_normalizer_strict`: a missing,
unexpected or mis-shaped key (another backbone or size) is an error naming
it, never a silent partial load.

Example
-------
>>> import tempfile
>>> from torch import nn
>>> path = tempfile.mkdtemp() + "/layer.ckpt"
>>> torch.save(nn.Linear(2, 3).state_dict(), path)
>>> load_state_dict_strict(nn.Linear(2, 3), path)
>>> load_state_dict_strict(nn.Linear(2, 4), path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: .../layer.ckpt does not fit Linear: shape of 'weight' is (3, 2) in the checkpoint, (4, 2) in the model; ...
"""

import io
import json
from pathlib import Path
from typing import Union

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml
from torch import nn

ENCODER_FILE = "encoder.ckpt"
NORMALIZER_FILE = "normalizer.ckpt"
TOKENIZER_FILE = "tokenizer.model"
BACKBONE_FILE = "backbone.yaml"


def load_state_dict_strict(module: nn.Module, path: Union[str, Path]) -> None:
    """Loads ``path`` into ``module``; any key or shape mismatch is a ValueError.

    The message names the file, the module, and every missing, unexpected and
    mis-shaped key (the first few of each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [
        f"shape of '{k}' is {tuple(state[k].shape)} in the checkpoint, "
        f"{tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = mis_shaped[:3]
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    if problems:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: " + "; ".join(problems)
            + "; was it saved from another backbone or size?"
        )
    module.load_state_dict(state, strict=True)


NORMALIZER_STATS = ("count", "glob_mean", "glob_std")


def load_normalizer_strict(normalizer: nn.Module, path: Union[str, Path]) -> None:
    """Loads stage-1 global statistics into a SpeechBrain ``InputNormalization``.

    A Pretrainer transfer hook: the file must hold the statistics of a
    normalizer that has seen data (``count > 0``), else a ValueError naming it.
    Whether the statistics keep updating is the caller's choice (stage 2 keeps
    the normalizer in eval mode, so they do not).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"normalizer statistics not found: {path}")
    stats = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stats, dict) or any(key not in stats for key in NORMALIZER_STATS):
        found = sorted(stats) if isinstance(stats, dict) else type(stats).__name__
        raise ValueError(
            f"{path} is not a global normalizer's statistics: expected keys "
            f"{list(NORMALIZER_STATS)}, found {found}"
        )
    if int(stats["count"]) <= 0 or stats["glob_mean"].numel() == 0:
        raise ValueError(f"{path}: the normalizer statistics are empty (count 0)")
    normalizer._load_statistics_dict(stats)


def backbone_yaml_from_resolved(resolved_hparams_text: str) -> str:
    """The ``backbone`` section of a resolved recipe YAML, as a file of its own."""
    yaml = ruamel.yaml.YAML()
    tree = yaml.load(resolved_hparams_text)
    if "backbone" not in tree:
        raise ValueError("the resolved hyperparameters have no 'backbone' section")
    out = io.StringIO()
    yaml.dump(tree["backbone"], out)
    return out.getvalue()


def export_asr_encoder(
    out_dir: Union[str, Path],
    resolved_hparams: Union[str, Path],
    encoder: nn.Module,
    normalizer: nn.Module,
    tokenizer=None,
) -> Path:
    """Writes the stage-2 hand-off folder (see the module docstring).

    Arguments
    ---------
    out_dir : str or Path
        Folder to (over)write.
    resolved_hparams : str or Path
        The run's fully resolved hyperparams.yaml (it has a ``backbone`` section).
    encoder : nn.Module
        The trained encoder.
    normalizer : nn.Module
        The trained SpeechBrain ``InputNormalization``.
    tokenizer : sentencepiece.SentencePieceProcessor, optional
        The ASR's tokenizer.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone_text = backbone_yaml_from_resolved(
        Path(resolved_hparams).read_text(encoding="utf-8")
    )
    (out_dir / BACKBONE_FILE).write_text(
        "# Backbone of a stage-1 ASR run, resolved: rebuilds the encoder whose\n"
        f"# weights are in {ENCODER_FILE}. Written by qieemo_sb.pretrained.\n"
        + backbone_text,
        encoding="utf-8",
    )
    torch.save(encoder.state_dict(), out_dir / ENCODER_FILE)
    normalizer._save(out_dir / NORMALIZER_FILE)
    files = [BACKBONE_FILE, ENCODER_FILE, NORMALIZER_FILE]
    if tokenizer is not None:
        (out_dir / TOKENIZER_FILE).write_bytes(tokenizer.serialized_model_proto())
        files.append(TOKENIZER_FILE)

    # The folder must rebuild the same encoder: check it before anyone relies on it.
    rebuilt = load_exported_backbone(out_dir)["encoder"]
    load_state_dict_strict(rebuilt, out_dir / ENCODER_FILE)
    (out_dir / "export.json").write_text(
        json.dumps(
            {
                "files": files,
                "encoder_class": type(encoder).__name__,
                "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
                "num_blocks": len(rebuilt.subsampling),
                "subsampling": rebuilt.subsampling,
                "source_hparams": str(Path(resolved_hparams).resolve()),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return out_dir


def load_exported_backbone(folder: Union[str, Path]) -> dict:
    """Builds the (untrained) objects of an exported folder's backbone.yaml."""
    path = Path(folder) / BACKBONE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: is {folder} the 'pretrained' folder of a stage-1 run?"
        )
    with open(path, encoding="utf-8") as stream:
        return load_hyperpyyaml(stream)


def check_exported_folder(folder: Union[str, Path], *, need_encoder: bool = True) -> Path:
    """The stage-1 ``pretrained`` folder, or a FileNotFoundError saying what is wrong.

    Arguments
    ---------
    folder : str or Path
        What the user gave as the stage-1 output.
    need_encoder : bool
        Whether ``encoder.ckpt`` must be there (the normalizer always must).
    """
    folder = Path(folder)
    needed = [NORMALIZER_FILE] + ([ENCODER_FILE] if need_encoder else [])
    missing = [name for name in needed if not (folder / name).is_file()]
    if not missing:
        return folder
    hint = ""
    if all((folder / "pretrained" / name).is_file() for name in needed):
        hint = f"; the stage-1 run's export is {folder / 'pretrained'}"
    raise FileNotFoundError(
        f"{folder} is not a stage-1 'pretrained' folder: {', '.join(missing)} missing "
        f"(recipes/LibriSpeech/ASR writes <output_folder>/pretrained){hint}"
    )
