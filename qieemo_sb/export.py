"""``qieemo export``: a trained emotion run -> a self-contained inference folder.

``qieemo export RUN_DIR OUT_DIR`` reads one fold's output folder of the
emotion recipe (its resolved ``hyperparams.yaml`` and the checkpoint kept by
``keep_best_by``) and writes::

    OUT_DIR/
        hyperparams.yaml      inference HyperPyYAML: fbank, normalizer,
                              encoder and head, a Pretrainer with paths
                              relative to the folder (strict loading)
        encoder.ckpt, head.ckpt, normalizer.ckpt
        label_encoder.txt     the classes, in output order
        custom_interface.py   re-exports qieemo_sb.inference.QieemoClassifier
        export.json           where it came from, the fold's scores
        README.md             how to use it
        features.onnx, model.onnx, model.int8.onnx, onnx.json
                              with ``--onnx``: fbank and model graphs for
                              onnxruntime (qieemo_sb.onnx_export)

Nothing in the folder names the machine it was made on, so it works the
same from any path or uploaded to a model hub::

    from speechbrain.inference.interfaces import foreign_class
    clf = foreign_class(source=OUT_DIR, pymodule_file="custom_interface.py",
                        classname="QieemoClassifier")

The folder is written beside OUT_DIR first and checked by loading it; only
then does it replace OUT_DIR, so a failed export loses nothing. An existing
OUT_DIR is replaced only with ``overwrite`` and only if it is an earlier
export.
"""

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Union

import ruamel.yaml
from ruamel.yaml.comments import CommentedMap

from qieemo_sb import __version__
from qieemo_sb.hparams_files import yaml_tag

CHECKPOINT_FILES = ("encoder.ckpt", "head.ckpt", "normalizer.ckpt")
LABEL_FILE = "label_encoder.txt"
INTERFACE_FILE = "custom_interface.py"
CLASS_NAME = "QieemoClassifier"
# Keys of the run's resolved YAML the inference needs (the head's MMF, CMA and
# classifier come along inside `head`).
RUN_KEYS = ("sample_rate", "labels", "backbone", "compute_features", "normalize", "encoder", "head")

INFERENCE_YAML = """
# ---------------------------------------------------------------- inference
# Clips shorter than this (seconds) are refused with an error naming the file.
min_duration: {min_duration}
# classify_file: clips longer than this (seconds) are encoded in equal chunks
# of at most this length, their embeddings averaged; null: whole clips, as
# in training.
max_chunk: {max_chunk}
# classify_timeline: window length and hop (seconds).
timeline_window: {timeline_window}
timeline_hop: {timeline_hop}

# The classes in output order (label_encoder.txt holds the same, in
# SpeechBrain's format).
label_encoder: !apply:qieemo_sb.inference.label_encoder_for [!ref <labels>]

modules:
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    encoder: !ref <encoder>
    head: !ref <head>

# No paths: each loadable is <name>.ckpt in the folder (or hub repository)
# the model is loaded from, wherever that is. Strict: a missing, unexpected
# or mis-shaped key is an error naming it.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        head: !ref <head>
        normalizer: !ref <normalize>
    custom_hooks:
        encoder: !name:qieemo_sb.pretrained.load_state_dict_strict
        head: !name:qieemo_sb.pretrained.load_state_dict_strict
        normalizer: !name:qieemo_sb.pretrained.load_normalizer_strict
"""

INTERFACE_PY = '''"""Loaded by speechbrain's foreign_class: the Qieemo inference interface.

Needs the qieemo_sb package (pip install qieemo-sb, or the repository).
"""

from qieemo_sb.inference import QieemoClassifier

__all__ = ["QieemoClassifier"]
'''

MODEL_CARD = """# Qieemo emotion classifier

Speech emotion recognition on a conformer ASR encoder (Qieemo: MMF over
blocks {blocks}, {cma}), exported by `qieemo export` (qieemo_sb {version}).

Classes, in output order: {labels}.

```python
from speechbrain.inference.interfaces import foreign_class
clf = foreign_class(source="<this folder or hub id>", pymodule_file="custom_interface.py",
                    classname="QieemoClassifier")
out_prob, score, index, text_lab = clf.classify_file("clip.wav")
timeline = clf.classify_timeline("long_recording.wav")  # window {window} s, hop {hop} s
```

or `qieemo predict <this folder> clip.wav [--json] [--timeline]`.
Audio: any rate and channel count libsndfile reads (wav, flac, ogg); at
least {min_duration} s. Scores of the exported fold: see export.json.
"""


def _read_run_hparams(run_dir: Path):
    path = run_dir / "hyperparams.yaml"
    if not path.is_file():
        folds = sorted(p.name for p in run_dir.glob("fold_*") if (p / "hyperparams.yaml").is_file())
        if folds:
            raise FileNotFoundError(
                f"{run_dir} is an experiment folder with folds {folds}: export one fold, "
                f"e.g. {run_dir / folds[0]}"
            )
        raise FileNotFoundError(
            f"{path} not found: RUN_DIR must be a fold's output folder of the emotion "
            "recipe (recipes/IEMOCAP/Qieemo writes <experiment_folder>/fold_<k>)"
        )
    tree = ruamel.yaml.YAML().load(path.read_text(encoding="utf-8"))
    missing = [key for key in RUN_KEYS + ("keep_best_by",) if key not in tree]
    if missing:
        raise ValueError(f"{path} has no {missing}: is it an emotion run's hyperparams.yaml?")
    return tree


def _kept_checkpoint(run_dir: Path, keep_best_by: str):
    from speechbrain.utils.checkpoints import Checkpointer

    save_folder = run_dir / "save"
    checkpoint = Checkpointer(save_folder).find_checkpoint(max_key=keep_best_by)
    if checkpoint is None:
        raise FileNotFoundError(
            f"{save_folder} holds no checkpoint with a validation {keep_best_by}: "
            "has the run finished an epoch?"
        )
    missing = [name for name in CHECKPOINT_FILES if not (checkpoint.path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint.path} lacks {missing}")
    return checkpoint


def _checkpoint_source(checkpoint_dir: Path, name: str) -> str:
    """The file exported as ``name``: a run that averages the head's weights was
    validated and tested with the average (``head_average.ckpt``), so that is the model."""
    if name == "head.ckpt" and (checkpoint_dir / "head_average.ckpt").is_file():
        return "head_average.ckpt"
    return name


def _test_scores(test_metrics: Path):
    """The fold's test scores (None before the run has tested)."""
    if not test_metrics.is_file():
        return None
    metrics = json.loads(test_metrics.read_text(encoding="utf-8"))
    return {key: metrics[key] for key in ("fold", "epoch", "wa", "ua", "wf1", "macro_f1", "support") if key in metrics}


WHISPER_ENCODER_TAG = "!new:qieemo_sb.encoders.whisper.WhisperEncoder"


def _without_sources(run_tree) -> None:
    """A Whisper encoder is built from a local folder or hub id: rebuild it from its config instead.

    The exported folder then needs neither (its ``encoder.ckpt`` holds the
    weights), and names no path of the machine it was made on.
    """
    from qieemo_sb.encoders.whisper import portable_config

    backbone = run_tree["backbone"]
    encoder = backbone.get("encoder") if isinstance(backbone, dict) else None
    if encoder is None or yaml_tag(encoder) != WHISPER_ENCODER_TAG:
        return
    source = encoder.pop("source")
    encoder["config"] = portable_config(source)
    backbone["whisper_source"] = None


def inference_hparams_text(
    run_tree, *, min_duration: float, max_chunk: Optional[float], timeline_window: float, timeline_hop: float
) -> str:
    """The exported hyperparams.yaml from the run's resolved YAML tree."""
    _without_sources(run_tree)
    kept = CommentedMap((key, run_tree[key]) for key in RUN_KEYS)
    out = io.StringIO()
    ruamel.yaml.YAML().dump(kept, out)
    # The run's comments were about training: keep the objects only.
    body = "\n".join(line for line in out.getvalue().splitlines() if not line.lstrip().startswith("#"))
    return (
        "# Qieemo emotion classifier for inference, written by `qieemo export`.\n"
        "# Load with speechbrain.inference.interfaces.foreign_class (see README.md).\n\n"
        + body + "\n"
        + INFERENCE_YAML.format(min_duration=min_duration, max_chunk="null" if max_chunk is None else max_chunk,
                                timeline_window=timeline_window,
                                timeline_hop=timeline_hop)
    )


def export_emotion_model(
    run_dir: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    overwrite: bool = False,
    max_chunk: Optional[float] = None,
    timeline_window: float = 3.0,
    timeline_hop: float = 1.0,
    onnx: bool = False,
) -> Path:
    """Writes the inference folder of one trained fold (see the module docstring).

    Arguments
    ---------
    run_dir : str or Path
        A fold's output folder (``.../fold_<k>``) of the emotion recipe.
    out_dir : str or Path
        The folder to write.
    overwrite : bool
        Replace ``out_dir`` if it holds an earlier export.
    max_chunk : float, optional
        ``classify_file`` encodes longer clips in chunks of at most this
        many seconds; None (default) encodes whole clips, as in training.
    timeline_window, timeline_hop : float
        Default window and hop (seconds) of ``classify_timeline``.
    onnx : bool
        Also write the ONNX graphs (checked against PyTorch by onnxruntime)
        and ``onnx.json``.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from speechbrain.dataio.encoder import CategoricalEncoder

    from qieemo_sb.inference import MIN_DURATION, QieemoClassifier

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty: pass --overwrite to replace an earlier export")
        if not (out_dir / "export.json").is_file():
            raise FileExistsError(f"{out_dir} is not an earlier export (no export.json): not overwriting it")
    tree = _read_run_hparams(run_dir)
    keep_best_by = str(tree["keep_best_by"])
    checkpoint = _kept_checkpoint(run_dir, keep_best_by)
    label_file = run_dir / "save" / LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file} not found")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / "hyperparams.yaml").write_text(
            inference_hparams_text(tree, min_duration=MIN_DURATION, max_chunk=max_chunk,
                                   timeline_window=timeline_window,
                                   timeline_hop=timeline_hop),
            encoding="utf-8",
        )
        for name in CHECKPOINT_FILES:
            shutil.copyfile(checkpoint.path / _checkpoint_source(checkpoint.path, name), staging / name)
        shutil.copyfile(label_file, staging / LABEL_FILE)
        (staging / INTERFACE_FILE).write_text(INTERFACE_PY, encoding="utf-8")

        # The folder must load on its own before it replaces anything.
        classifier = QieemoClassifier.from_hparams(source=str(staging), run_opts={"device": "cpu"})
        labels = classifier.labels
        trained = CategoricalEncoder()
        trained.load(label_file)
        if [trained.ind2lab[index] for index in range(len(trained))] != labels:
            raise ValueError(f"{label_file} lists {dict(trained.ind2lab)} but the run's labels are {labels}")
        test_metrics = run_dir / "test_metrics.json"
        facts = {
            "qieemo_sb_version": __version__,
            "source_run": run_dir.resolve().name,
            "checkpoint": {"name": checkpoint.path.name,
                           "kept_by": "last epoch" if keep_best_by == "epoch" else f"best validation {keep_best_by}",
                           "validation": dict(checkpoint.meta)},
            "test": _test_scores(test_metrics),
            "labels": labels,
            "sample_rate": int(tree["sample_rate"]),
            "encoder_class": type(classifier.mods.encoder).__name__,
            "parameters": sum(p.numel() for p in classifier.mods.parameters()),
            "mmf_blocks": list(classifier.mods.head.mmf.blocks),
            "cma": classifier.mods.head.cma is not None,
        }
        if onnx:
            from qieemo_sb.onnx_export import export_onnx

            plain = QieemoClassifier.from_hparams(source=str(staging), run_opts={"device": "cpu"}, kernels=None)
            export_onnx(plain, staging, int8=True)
        (staging / "export.json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        (staging / "README.md").write_text(
            MODEL_CARD.format(
                blocks=facts["mmf_blocks"], cma="CMA to the last block" if facts["cma"] else "no CMA",
                version=__version__, labels=", ".join(labels), window=timeline_window, hop=timeline_hop,
                min_duration=MIN_DURATION,
            ),
            encoding="utf-8",
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qieemo export``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a fold's output folder of the emotion recipe (.../fold_<k>)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the inference folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it holds an earlier export")
    parser.add_argument("--max-chunk", type=float, default=None,
                        help="classify_file encodes clips longer than this (seconds) in chunks (default: whole clips)")
    parser.add_argument("--timeline-window", type=float, default=3.0, help="default timeline window, seconds")
    parser.add_argument("--timeline-hop", type=float, default=1.0, help="default timeline hop, seconds")
    parser.add_argument("--onnx", action="store_true",
                        help="also write the ONNX graphs for onnxruntime (conformer backbones)")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo export``; returns the exit code."""
    try:
        out_dir = export_emotion_model(args.run_dir, args.out_dir, overwrite=args.overwrite, max_chunk=args.max_chunk,
                                       timeline_window=args.timeline_window, timeline_hop=args.timeline_hop,
                                       onnx=args.onnx)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as error:
        print(f"qieemo export: error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.run_dir} -> {out_dir}")
    print(f'use: foreign_class(source="{out_dir}", pymodule_file="{INTERFACE_FILE}", classname="{CLASS_NAME}")')
    print(f"  or: qieemo predict {out_dir} FILE...")
    return 0
