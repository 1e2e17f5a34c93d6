"""``qieemo evaluate MODEL_DIR MANIFEST``: an exported model on any labelled manifest.

For cross-corpus tests: the model of ``qieemo export`` classifies every clip
of a manifest and is scored against the manifest's labels.

Manifest
--------
The CSV or JSON formats of :mod:`qieemo_sb.data.manifest` (``wav`` and
``emo`` required, relative ``wav`` paths start at the manifest's folder,
optional ``id`` and ``duration``; other fields are ignored). Its rows are
checked as there: a missing field or wav file or a duplicate id is a
:class:`~qieemo_sb.data.manifest.ManifestError` naming the manifest and the
row.

Labels
------
Manifest labels are matched by name with the model's labels
(``classifier.labels``). A manifest label the model does not know is a
:class:`LabelError` listing the unknown labels and the model's labels, unless
the labels map sends it somewhere: ``--labels-map exc=hap,happy=hap`` (or a
JSON file ``{"exc": "hap", ...}``) maps manifest labels to model labels; a
label mapped to ``""`` or ``-`` (JSON: also ``null``) has its rows dropped
(their number is reported). A map to a label the model does not have is a
:class:`LabelError` too. Labels absent from the map are kept as they are.

Audio
-----
Clips are read as ``classify_file`` reads them (any rate, any channels;
:meth:`~qieemo_sb.inference.QieemoClassifier.load_audio`) and classified in
padded batches of ``batch_size`` clips of similar length, which gives each
clip what ``classify_file`` gives it (probabilities within 1e-5; clips
longer than the model's ``max_chunk`` go through ``classify_file`` itself;
``batch_size=1`` is ``classify_file`` exactly). A clip that cannot be
used (unreadable, empty, NaN, shorter than the model's minimum) stops the
evaluation with an :class:`~qieemo_sb.audio.AudioError` naming the file and
nothing is written: scores over a silently reduced set would not compare
with other corpora's or papers' scores. Fix or drop the row.

Outputs
-------
In ``out_dir`` (the command's ``--out``, default ``qieemo_evaluation``),
written once every clip is classified; an existing non-empty
``metrics.json`` is replaced only with ``overwrite`` (``--overwrite``):

- ``predictions.csv``: ``id, wav, label`` (the manifest's), ``mapped_label``
  (the target), ``prediction`` and ``p_<label>`` per model label, in manifest
  order (dropped rows left out);
- ``confusion.png``: the confusion matrix (rows: targets);
- ``metrics.json`` (last): WA, UA, WF1, macro-F1
  (:mod:`qieemo_sb.metrics`), per-class precision/recall/F1/support, the
  confusion matrix, counts, the labels map used, the model and the manifest,
  and the ids, targets and predictions (class indices, as the recipe's
  ``test_metrics.json``).

Example
-------
>>> parse_labels_map("exc=hap, happy=hap,other=-")
{'exc': 'hap', 'happy': 'hap', 'other': '-'}
>>> resolve_labels(["neu", "exc", "other"], ["neu", "hap"], {"exc": "hap", "other": "-"})
{'exc': 'hap', 'neu': 'neu', 'other': None}
>>> resolve_labels(["neu", "fru"], ["neu", "hap"])
Traceback (most recent call last):
...
qieemo_sb.evaluate.LabelError: the manifest's labels ['fru'] are not labels of the model; the model's labels: ['neu', 'hap']; the manifest's labels: ['fru', 'neu']. Map them with --labels-map (labels_map), e.g. fru=LABEL, or drop their rows with fru=-
"""

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

#: Files written in the output folder (metrics last: its presence means done).
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion.png"
#: Map targets that drop a label's rows.
DROP = ("", "-")
DEFAULT_OUT = "qieemo_evaluation"
SCORE_TITLES = (("wa", "WA"), ("ua", "UA"), ("wf1", "WF1"), ("macro_f1", "macro-F1"))


class LabelError(ValueError):
    """Manifest labels or a labels map that do not fit the model's labels."""


def parse_labels_map(spec: str) -> Dict[str, str]:
    """``'a=b,c=d,e=-'`` -> ``{'a': 'b', 'c': 'd', 'e': '-'}`` (spaces stripped).

    Empty items are ignored; an item without ``=``, an empty manifest label or
    a label given two different targets is a :class:`LabelError`. Labels with
    ``,`` or ``=`` in them need the JSON file form (:func:`load_labels_map`).
    """
    mapping: Dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise LabelError(f"labels map item {item.strip()!r} is not SOURCE=TARGET (e.g. exc=hap, or exc=- to drop)")
        source, target = (part.strip() for part in item.split("=", 1))
        if not source:
            raise LabelError(f"labels map item {item.strip()!r} has no manifest label before '='")
        if source in mapping and mapping[source] != target:
            raise LabelError(f"labels map sends {source!r} to both {mapping[source]!r} and {target!r}")
        mapping[source] = target
    return mapping


def load_labels_map(value: Union[None, str, Path, Mapping]) -> Dict[str, str]:
    """A labels map from a dict, a JSON file (``{"exc": "hap"}``) or ``'a=b,c=d'``.

    ``None`` is an empty map. In a JSON file, ``null`` means drop (as ``-``).
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        mapping = dict(value)
    elif Path(str(value)).suffix.lower() == ".json" or Path(str(value)).is_file():
        path = Path(str(value))
        if not path.is_file():
            raise FileNotFoundError(f"labels map file not found: {path}")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LabelError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(mapping, dict):
            raise LabelError(f"{path}: a labels map file holds one JSON object {{manifest label: model label}}")
    else:
        return parse_labels_map(str(value))
    return {str(source): "-" if target is None else str(target) for source, target in mapping.items()}


def resolve_labels(
    manifest_labels: Sequence[str],
    model_labels: Sequence[str],
    labels_map: Optional[Mapping[str, str]] = None,
    *,
    where: str = "",
) -> Dict[str, Optional[str]]:
    """Model label (or None: drop) of each manifest label, sorted by manifest label.

    Arguments
    ---------
    manifest_labels : sequence of str
        The labels found in the manifest.
    model_labels : sequence of str
        ``classifier.labels``.
    labels_map : mapping, optional
        Manifest label -> model label, or ``""``/``-`` to drop its rows.
    where : str
        Prefix of error messages (e.g. the manifest's path).

    Raises
    ------
    LabelError
        A map target that is not a model label, or a manifest label that is
        neither a model label nor mapped; the message lists both label sets.
    """
    labels_map = dict(labels_map or {})
    model = list(model_labels)
    prefix = f"{where}: " if where else ""
    bad_targets = {source: target for source, target in labels_map.items()
                   if target.strip() not in DROP and target not in model}
    if bad_targets:
        raise LabelError(
            f"{prefix}the labels map sends {bad_targets} to labels the model does not have; "
            f"the model's labels: {model} (map a label to '-' to drop its rows)"
        )
    found = sorted(set(manifest_labels))
    resolved: Dict[str, Optional[str]] = {}
    for label in found:
        target = labels_map.get(label, label)
        resolved[label] = None if target.strip() in DROP else target
    unknown = [label for label in found if resolved[label] is not None and resolved[label] not in model]
    if unknown:
        raise LabelError(
            f"{prefix}the manifest's labels {unknown} are not labels of the model; the model's labels: {model}; "
            f"the manifest's labels: {found}. Map them with --labels-map (labels_map), e.g. "
            f"{unknown[0]}=LABEL, or drop their rows with {unknown[0]}=-"
        )
    return resolved


def _classify_rows(classifier, rows: List[dict], *, batch_size: int, progress: bool) -> List[tuple]:
    """(predicted index, probabilities) per row, in row order; batches of similar length."""
    import torch
    from tqdm import tqdm

    rate = classifier.hparams.sample_rate
    max_chunk = classifier.hparams.max_chunk
    order = sorted(range(len(rows)), key=lambda i: float(rows[i]["duration"]))
    results: List[Optional[tuple]] = [None] * len(rows)
    with tqdm(total=len(rows), desc="qieemo evaluate", unit="clip", file=sys.stderr,
              disable=not progress) as bar:
        for first in range(0, len(order), batch_size):
            batch = []
            for i in order[first:first + batch_size]:
                wav = classifier.load_audio(rows[i]["wav"])
                if max_chunk is not None and wav.shape[0] > max_chunk * rate:
                    out_prob = classifier.classify_file(rows[i]["wav"])[0]  # chunked, as classify_file does
                    results[i] = (int(out_prob[0].argmax()), out_prob[0].exp().tolist())
                else:
                    batch.append((i, wav))
            if batch:
                lengths = [wav.shape[0] for _, wav in batch]
                wavs = torch.zeros(len(batch), max(lengths))
                for row, (_, wav) in enumerate(batch):
                    wavs[row, :wav.shape[0]] = wav
                wav_lens = torch.tensor(lengths, dtype=torch.float32) / max(lengths)
                out_prob, _, index, _ = classifier.classify_batch(wavs, wav_lens)
                for row, (i, _) in enumerate(batch):
                    results[i] = (int(index[row]), out_prob[row].exp().tolist())
            bar.update(len(order[first:first + batch_size]))
    return results


def evaluate_manifest(
    classifier,
    manifest: Union[str, Path],
    *,
    labels_map: Union[None, str, Path, Mapping[str, str]] = None,
    out_dir: Union[None, str, Path] = None,
    overwrite: bool = False,
    batch_size: int = 8,
    progress: bool = False,
    device: str = "cpu",
    model_dir: Optional[str] = None,
) -> Dict:
    """Scores an exported model on a labelled manifest (rules in the module docstring).

    Arguments
    ---------
    classifier : QieemoClassifier, str or Path
        A loaded classifier, or the folder written by ``qieemo export`` (or a
        hub id), loaded with ``device`` once the manifest has been checked.
    manifest : str or Path
        A CSV or JSON manifest with ``wav`` and ``emo`` fields.
    labels_map : dict, str or Path, optional
        Manifest label -> model label (``""``/``-``: drop the rows), as a
        dict, ``'exc=hap,fru=-'`` or a JSON file.
    out_dir : str or Path, optional
        Where ``metrics.json``, ``predictions.csv`` and ``confusion.png`` go;
        None writes nothing.
    overwrite : bool
        Replace an existing non-empty ``out_dir/metrics.json``.
    batch_size : int
        Clips classified together (padded; 1: one ``classify_file`` per clip).
    progress : bool
        A tqdm progress bar on stderr.
    device : str
        Torch device when ``classifier`` is a path.
    model_dir : str, optional
        Recorded in the metrics as the model (default: ``classifier`` when a path).

    Returns
    -------
    dict
        The content of ``metrics.json``: scores (fractions), ``per_class``,
        ``confusion``, ``counts``, ``labels_map``, ``model_dir``,
        ``manifest``, ids/targets/predictions.

    Raises
    ------
    ManifestError, LabelError, AudioError
        (all ValueErrors) A bad row, labels that do not fit, a clip that
        cannot be classified; nothing is written then.
    FileExistsError
        ``out_dir/metrics.json`` exists and ``overwrite`` is False.
    """
    from qieemo_sb import __version__
    from qieemo_sb.data.manifest import ManifestError, read_labelled_rows

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    manifest = Path(manifest)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not overwrite:
        existing = out / METRICS_FILE
        if existing.is_file() and existing.stat().st_size > 0:
            raise FileExistsError(f"{existing} exists: pass --overwrite (overwrite=True) or choose another --out")
    mapping = load_labels_map(labels_map)
    rows = read_labelled_rows(manifest)

    if not hasattr(classifier, "classify_batch"):
        from qieemo_sb.inference import QieemoClassifier

        source = str(classifier)
        if model_dir is None:
            model_dir = str(Path(source).resolve()) if Path(source).is_dir() else source
        classifier = QieemoClassifier.from_hparams(source=source, run_opts={"device": device})
    labels = list(classifier.labels)
    resolved = resolve_labels([row["emo"] for row in rows], labels, mapping, where=str(manifest))
    kept = [row for row in rows if resolved[row["emo"]] is not None]
    if not kept:
        raise ManifestError(f"{manifest}: the labels map drops every row ({len(rows)}); nothing to evaluate")

    results = _classify_rows(classifier, kept, batch_size=batch_size, progress=progress)
    targets = [labels.index(resolved[row["emo"]]) for row in kept]
    predictions = [index for index, _ in results]
    metrics = _scores(targets, predictions, labels)
    metrics.update(
        model_dir=model_dir,
        manifest=str(manifest.resolve()),
        labels=labels,
        labels_map=mapping,
        labels_map_unused=sorted(set(mapping) - set(resolved)),
        counts={
            "manifest_rows": len(rows),
            "dropped": len(rows) - len(kept),
            "evaluated": len(kept),
            "manifest_labels": dict(sorted(Counter(row["emo"] for row in rows).items())),
            "targets": {label: sum(1 for t in targets if t == k) for k, label in enumerate(labels)},
            "predictions": {label: sum(1 for p in predictions if p == k) for k, label in enumerate(labels)},
        },
        ids=[row["id"] for row in kept],
        targets=targets,
        predictions=predictions,
        batch_size=batch_size,
        device=str(classifier.device),
        seconds=round(time.perf_counter() - start, 2),
        qieemo_version=__version__,
    )
    if out is not None:
        _write_outputs(out, metrics, kept, results)
    return metrics


def _scores(targets: List[int], predictions: List[int], labels: List[str]) -> Dict:
    """``classification_metrics`` plus a ``per_class`` dict keyed by label."""
    from qieemo_sb.metrics import classification_metrics

    scores = classification_metrics(targets, predictions, len(labels))
    scores["per_class"] = {
        label: {key: scores[key][k] for key in ("precision", "recall", "f1", "support")}
        for k, label in enumerate(labels)
    }
    return scores


def _write_outputs(out: Path, metrics: Dict, rows: List[dict], results: List[tuple]) -> None:
    """predictions.csv, confusion.png, then metrics.json (the recipe's conventions)."""
    import numpy as np

    from qieemo_sb.plots import plot_confusion

    labels = metrics["labels"]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PREDICTIONS_FILE, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "wav", "label", "mapped_label", "prediction", *[f"p_{lab}" for lab in labels]])
        for row, target, (predicted, probs) in zip(rows, metrics["targets"], results):
            writer.writerow([row["id"], row["wav"], row["emo"], labels[target], labels[predicted],
                             *[f"{p:.5f}" for p in probs]])
    plot_confusion(np.array(metrics["confusion"]), labels, out / CONFUSION_FILE,
                   title=f"{Path(metrics['manifest']).name}: {len(rows)} clips, "
                         f"WA {100 * metrics['wa']:.1f} %, UA {100 * metrics['ua']:.1f} %")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1), encoding="utf-8")


def summary_lines(metrics: Dict, out_dir: Optional[Union[str, Path]] = None) -> List[str]:
    """The command's short report: clips, dropped rows, scores in %, files."""
    counts = metrics["counts"]
    lines = [f"evaluated {counts['evaluated']} clips of {metrics['manifest']}"
             + (f" ({counts['dropped']} rows dropped by the labels map)" if counts["dropped"] else "")]
    lines.append("  ".join(f"{title} {100 * metrics[key]:.2f} %" for key, title in SCORE_TITLES))
    if out_dir is not None:
        out = Path(out_dir)
        lines.append(f"wrote {out / METRICS_FILE}, {out / PREDICTIONS_FILE}, {out / CONFUSION_FILE}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qieemo evaluate``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by `qieemo export` (or a hub id)")
    parser.add_argument("manifest", metavar="MANIFEST",
                        help="CSV or JSON manifest with wav and emo fields (relative wavs start at its folder)")
    parser.add_argument("--labels-map", default=None, metavar="MAP",
                        help="manifest label -> model label: 'exc=hap,happy=hap' or a JSON file; "
                             "a label mapped to '' or '-' has its rows dropped")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"folder for metrics.json, predictions.csv, confusion.png (default: ./{DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json in --out")
    parser.add_argument("--batch-size", type=int, default=8, help="clips classified together (default: 8)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo evaluate``; returns 0, or 1 with a message on stderr."""
    try:
        metrics = evaluate_manifest(
            args.model_dir, args.manifest, labels_map=args.labels_map, out_dir=args.out,
            overwrite=args.overwrite, batch_size=args.batch_size, progress=not args.no_progress,
            device=args.device,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"qieemo evaluate: error: {error}", file=sys.stderr)
        return 1
    if metrics["labels_map_unused"]:
        print(f"qieemo evaluate: note: labels map entries for labels not in the manifest: "
              f"{metrics['labels_map_unused']}", file=sys.stderr)
    print("\n".join(summary_lines(metrics, args.out)))
    return 0
