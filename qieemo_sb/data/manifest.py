"""Emotion data of one's own: one manifest in, the recipe's fold manifests out.

The emotion recipe trains on ``<save_folder>/fold_<k>/{train,valid,test}.json``
(the format :mod:`qieemo_sb.data.iemocap` writes). ``prepare_manifest_folds``
makes them from a single CSV or JSON manifest with any label set.

Manifest
--------
- CSV with a header row, or JSON: a dict ``{id: {field: value}}`` (SpeechBrain
  style) or a list of ``{field: value}`` objects.
- Required fields: ``wav`` (path; relative paths start at the manifest's
  folder) and ``emo`` (the label, one of ``labels``).
- Optional: ``id`` (default: the wav file name without extension; ids must be
  unique), ``duration`` (seconds; read from the file header when absent),
  ``speaker``, and one partition field:

  - ``split``: ``train``/``valid``/``test`` per row, used as given;
  - ``fold``: the test fold of each row; fold ``k`` tests on the rows whose
    fold is ``k`` and trains on the others;
  - ``speaker`` only: speakers are dealt to the folds in sorted order
    (speaker i -> ``folds[i % len(folds)]``), so no speaker is in both the
    training and the test data of a fold.

  Without ``split``, validation is ``valid_ratio`` of the fold's training
  rows, drawn with ``random.Random(seed)`` from the id-sorted rows.
- Any other field is kept in the output entries.

Errors name the manifest and the row: a missing field or wav file, a label
outside ``labels`` (the message lists the labels found), a duplicate id, a
fold without test rows.

Example
-------
>>> import tempfile, pathlib, numpy as np, soundfile as sf
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> rows = ["wav,emo,speaker"]
>>> for i in range(8):
...     sf.write(folder / f"c{i}.wav", np.zeros(1600), 16000)
...     rows.append(f"c{i}.wav,{'calm' if i % 2 else 'angry'},spk{i % 4}")
>>> _ = (folder / "data.csv").write_text("\\n".join(rows) + "\\n")
>>> summary = prepare_manifest_folds(
...     manifest=folder / "data.csv", save_folder=folder / "prepared",
...     labels=["calm", "angry"], folds=[1, 2], valid_ratio=0.25)
>>> summary["folds"]["1"]
{'train': 3, 'valid': 1, 'test': 4}
"""

import csv
import json
import math
import random
from pathlib import Path
from typing import Dict, List, Sequence, Union

from qieemo_sb.audio import audio_duration

SPLITS = ("train", "valid", "test")


class ManifestError(ValueError):
    """A manifest row that cannot be used; the message names file and row."""


def read_manifest(path: Union[str, Path]) -> List[dict]:
    """Rows of a CSV or JSON manifest, each a dict with an ``id``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            rows = [{"id": str(key), **value} for key, value in data.items()]
        elif isinstance(data, list):
            rows = [dict(row) for row in data]
        else:
            raise ManifestError(f"{path}: a JSON manifest is a dict of entries or a list")
    elif path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    else:
        raise ManifestError(f"{path}: the manifest must be a .csv or .json file")
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    return rows


def _check_rows(rows: List[dict], path: Path, labels: Sequence[str]) -> List[dict]:
    """Absolute wav paths, ids, durations; errors name the manifest and row."""
    checked, seen, found_labels = [], set(), set()
    for number, row in enumerate(rows, start=1):
        where = f"{path}, row {number}"
        for field in ("wav", "emo"):
            if not str(row.get(field) or "").strip():
                raise ManifestError(f"{where}: the '{field}' field is missing or empty")
        wav = Path(str(row["wav"]))
        wav = wav if wav.is_absolute() else path.parent / wav
        if not wav.is_file():
            raise ManifestError(f"{where}: wav file not found: {wav}")
        utt_id = str(row.get("id") or wav.stem)
        if utt_id in seen:
            raise ManifestError(f"{where}: duplicate id {utt_id!r}")
        seen.add(utt_id)
        found_labels.add(str(row["emo"]))
        duration = row.get("duration")
        entry = {**row, "id": utt_id, "wav": str(wav.resolve()), "emo": str(row["emo"])}
        entry["duration"] = float(duration) if duration not in (None, "") else audio_duration(wav)
        checked.append(entry)
    unknown = sorted(found_labels - set(labels))
    if unknown:
        raise ManifestError(
            f"{path}: labels {unknown} are not in labels {list(labels)}; the manifest "
            f"has {sorted(found_labels)}: set labels (e.g. --labels "
            f"'[{', '.join(sorted(found_labels))}]') to the classes to learn"
        )
    return checked


def read_labelled_rows(path: Union[str, Path]) -> List[dict]:
    """Checked rows of a manifest, whatever their labels (for evaluation).

    The checks of :func:`prepare_manifest_folds` except the label set: each
    row gets an absolute ``wav``, a unique ``id``, its ``emo`` as a string
    and a ``duration`` (seconds); errors name the manifest and the row
    (missing field or wav file, duplicate id).
    """
    path = Path(path)
    rows = read_manifest(path)
    return _check_rows(rows, path, labels=sorted({str(row.get("emo")) for row in rows}))


def _assign_test_folds(rows: List[dict], path: Path, folds: Sequence) -> None:
    """Sets each row's ``fold`` (as a string) from its fold or speaker field."""
    if all(str(row.get("fold") or "") for row in rows):
        for row in rows:
            row["fold"] = str(row["fold"])
        return
    if not all(str(row.get("speaker") or "") for row in rows):
        raise ManifestError(
            f"{path}: every row needs a 'split', 'fold' or 'speaker' field, so that "
            "test speakers are kept out of training"
        )
    speakers = sorted({str(row["speaker"]) for row in rows})
    fold_of = {spk: str(folds[i % len(folds)]) for i, spk in enumerate(speakers)}
    for row in rows:
        row["fold"] = fold_of[str(row["speaker"])]


def split_rows(
    rows: List[dict], *, path: Path, fold, folds: Sequence, valid_ratio: float, seed: int
) -> Dict[str, List[dict]]:
    """Train/valid/test rows of one fold (rules in the module docstring)."""
    if all(str(row.get("split") or "") for row in rows):
        parts = {split: [r for r in rows if r["split"] == split] for split in SPLITS}
        others = sorted({r["split"] for r in rows} - set(SPLITS))
        if others:
            raise ManifestError(f"{path}: split values must be {SPLITS}, found {others}")
    else:
        _assign_test_folds(rows, path, folds)
        test = [r for r in rows if r["fold"] == str(fold)]
        pool = sorted((r for r in rows if r["fold"] != str(fold)), key=lambda r: r["id"])
        n_valid = int(math.floor(valid_ratio * len(pool) + 0.5))
        chosen = set(random.Random(seed).sample([r["id"] for r in pool], n_valid))
        parts = {
            "train": [r for r in pool if r["id"] not in chosen],
            "valid": [r for r in pool if r["id"] in chosen],
            "test": test,
        }
    for split in SPLITS:
        if not parts[split]:
            raise ManifestError(f"{path}: fold {fold} has no {split} rows")
    return parts


def prepare_manifest_folds(
    *,
    manifest: Union[str, Path],
    save_folder: Union[str, Path],
    labels: Sequence[str],
    folds: Sequence = (1, 2, 3, 4, 5),
    valid_ratio: float = 0.2,
    seed: int = 1234,
) -> dict:
    """Writes ``<save_folder>/fold_<k>/{train,valid,test}.json`` for each fold.

    Arguments
    ---------
    manifest : str or Path
        The CSV or JSON manifest (format in the module docstring).
    save_folder : str or Path
        Output folder; also gets ``summary.json``.
    labels : sequence of str
        The classes to learn; a row with another label is an error.
    folds : sequence
        The folds to write (values of the ``fold`` field, or the fold names
        speakers are dealt to). Ignored with a ``split`` field (one "fold").
    valid_ratio : float
        Share of each fold's training rows held out for validation.
    seed : int
        Seed of the validation draw.

    Returns
    -------
    dict
        ``{"folds": {k: {"train": n, "valid": n, "test": n}}, "labels": ...}``.
    """
    path = Path(manifest)
    if not 0.0 < valid_ratio < 1.0:
        raise ValueError(f"valid_ratio must be in (0, 1), got {valid_ratio}")
    if not folds:
        raise ValueError("folds is empty")
    rows = _check_rows(read_manifest(path), path, labels)
    save = Path(save_folder)
    summary = {"manifest": str(path.resolve()), "labels": list(labels), "folds": {}}
    for fold in folds:
        parts = split_rows(
            rows, path=path, fold=fold, folds=folds, valid_ratio=valid_ratio, seed=seed
        )
        folder = save / f"fold_{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            entries = {
                r["id"]: {k: v for k, v in r.items() if k != "id"} for r in parts[split]
            }
            (folder / f"{split}.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
        summary["folds"][str(fold)] = {split: len(parts[split]) for split in SPLITS}
    (save / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
