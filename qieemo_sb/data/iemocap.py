"""IEMOCAP preparation: 4 classes, leave-one-session-out folds, JSON manifests.

Input: the release folder ``IEMOCAP_full_release`` (or a folder holding it)
with ``Session{1..5}/dialog/EmoEvaluation/<dialog>.txt`` and
``Session{s}/sentences/wav/<dialog>/<utterance>.wav``; the synthetic corpus of
:mod:`qieemo_sb.data.synthetic` has the same layout and takes the same path.

Rules
-----
- Labels: neu, hap, exc (merged into hap), sad, ang are kept; xxx, fru, sur,
  fea, oth, dis are dropped (counted in the summary). Any other label code is
  an error.
- Label files: only the ``*.txt`` files directly in ``EmoEvaluation`` (its
  ``Categorical``/``Attribute``/``Self-evaluation`` sub-folders are not label
  files); hidden files (``._Ses01F_impro01.txt`` copies) are skipped and
  listed in the summary. Lines are a ``%`` header, blank, annotator lines
  (``C-E2:``, ``A-F1:``...) or turn lines ``[start - end]<TAB>utterance<TAB>
  label<TAB>[v, a, d]``; anything else, or a turn line that does not parse, is
  an :class:`IemocapFormatError` naming the file and line.
- Speaker: session + the letter that starts the utterance name's last field
  (``Ses03M_impro05a_F012`` -> ``Ses03F``), never the dialog name.
- Audio: ``sentences/wav/<dialog>/<utterance>.wav`` with ``<dialog>`` the label
  file's name; it must be 16 kHz mono. A missing wav of a kept turn is an error
  naming the label file, line and wav (``missing_wav="error"``, default) or is
  skipped and counted (``missing_wav="skip"``). A session without kept turns is
  an error.
- Folds: fold k (1..5) tests on Session k and trains on the four others. Each
  fold has its own folder ``<save_folder>/fold_<k>/{train,valid,test}.json``.
- Validation (``valid_mode``): ``"random"`` (default, EmoBox-style) takes
  ``floor(valid_ratio * N + 0.5)`` utterances of the N training-pool utterances
  of the fold, drawn by ``random.Random(seed * 1000 + k).sample`` from the
  ID-sorted pool; ``"speaker"`` holds out one speaker of another session:
  fold k validates on Session (k mod 5) + 1, its female actor for odd k and
  its male actor for even k (fold 1: Ses02F, 2: Ses03M, 3: Ses04F, 4: Ses05M,
  5: Ses01F), so validation never shares a speaker with training or test.
- Manifests: JSON dictionaries keyed by utterance ID (SpeechBrain
  ``DynamicItemDataset.from_json``), each entry ``{"wav": absolute path,
  "duration": seconds, "emo": neu|hap|sad|ang, "label": release label,
  "speaker": "Ses01F", "gender": "F", "session": 1, "dialog": ..., "fold": k}``.
- Summary: ``summary.json`` and ``summary.txt`` (counts per session and class,
  dropped labels, skips, fold sizes, and whether the data are the full
  release: 5531 utterances, neu 1708, hap 1636, ang 1103, sad 1084; test
  sessions 1085/1023/1151/1031/1241).
- Re-runs: ``prepare_options.json`` stores the options and a fingerprint of the
  data (label file names, sizes, modification times; wav count and bytes).
  Same options and data: the manifests are reused (logged). Anything else:
  every file this function wrote before is removed and rewritten.

Example
-------
>>> line = "[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5000, 2.5000, 2.5000]"
>>> parse_label_line(line)
LabelLine(start=6.2901, end=8.2357, utt_id='Ses01F_impro01_F000', label='neu', vad=(2.5, 2.5, 2.5))
>>> parse_label_line("C-E2:\\tNeutral;\\t()") is None
True
>>> speaker_of("Ses03M_impro05a_F012")
'Ses03F'
"""

import argparse
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SESSIONS = (1, 2, 3, 4, 5)
CLASSES = ("neu", "hap", "sad", "ang")
#: Release label -> 4-class label; the other release labels are dropped.
KEEP = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
DROP = ("xxx", "fru", "sur", "fea", "oth", "dis")
#: The published 4-class counts of the full release.
FULL_RELEASE = {
    "total": 5531,
    "classes": {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084},
    "sessions": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
    "turns": 10039,
}
VALID_MODES = ("random", "speaker")
SPLITS = ("train", "valid", "test")
OPTIONS_FILE = "prepare_options.json"

_TURN = re.compile(
    r"^\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\]\s+(\S+)\s+(\S+)\s+"
    r"\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]\s*$"
)
_ANNOTATOR = re.compile(r"^[A-Z]-[A-Z]+\d*:")
_UTTERANCE = re.compile(r"^Ses(\d\d)[FM]_\w+_([FM])\w*\d$")


class IemocapFormatError(ValueError):
    """A label file or folder that does not follow the IEMOCAP layout."""


@dataclass(frozen=True)
class LabelLine:
    """One turn line of an EmoEvaluation file."""

    start: float
    end: float
    utt_id: str
    label: str
    vad: Tuple[float, float, float]


def parse_label_line(line: str, *, path: str = "<string>", line_no: int = 0) -> Optional[LabelLine]:
    """Parses one line of an EmoEvaluation file.

    Arguments
    ---------
    line : str
        The line (with or without its newline).
    path, line_no : str, int
        Where it comes from, for the error message.

    Returns
    -------
    LabelLine or None
        None for header, blank and annotator lines.

    Raises
    ------
    IemocapFormatError
        ``path:line_no: ...`` for a turn line that does not parse, an unknown
        label, or a line of no known kind.

    Example
    -------
    >>> parse_label_line("[1.0 - 2.0]\\tSes01F_impro01_F000\\tangry\\t[1, 2, 3]",
    ...                  path="x.txt", line_no=7)
    Traceback (most recent call last):
    ...
    qieemo_sb.data.iemocap.IemocapFormatError: x.txt:7: unknown emotion label 'angry' (known: neu, hap, exc, sad, ang, xxx, fru, sur, fea, oth, dis)
    """
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if not stripped or stripped.startswith("%") or _ANNOTATOR.match(stripped):
        return None
    if not stripped.startswith("["):
        raise IemocapFormatError(
            f"{path}:{line_no}: not a header, annotator or turn line: {text!r}"
        )
    match = _TURN.match(stripped)
    if match is None:
        raise IemocapFormatError(
            f"{path}:{line_no}: cannot parse turn line (expected "
            f"'[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]'): {text!r}"
        )
    start, end, utt_id, label, v, a, d = match.groups()
    if label not in KEEP and label not in DROP:
        known = ", ".join(list(KEEP) + list(DROP))
        raise IemocapFormatError(
            f"{path}:{line_no}: unknown emotion label {label!r} (known: {known})"
        )
    return LabelLine(float(start), float(end), utt_id, label, (float(v), float(a), float(d)))


def speaker_of(utt_id: str, *, path: str = "<string>", line_no: int = 0) -> str:
    """Speaker of an utterance: session + first letter of its last field.

    Example
    -------
    >>> speaker_of("Ses01F_script01_1_M021")
    'Ses01M'
    >>> speaker_of("Ses01F_impro01")
    Traceback (most recent call last):
    ...
    qieemo_sb.data.iemocap.IemocapFormatError: <string>:0: utterance name 'Ses01F_impro01' is not Ses<nn><F|M>_<dialog>_<F|M><nnn>
    """
    match = _UTTERANCE.match(utt_id)
    if match is None:
        raise IemocapFormatError(
            f"{path}:{line_no}: utterance name {utt_id!r} is not Ses<nn><F|M>_<dialog>_<F|M><nnn>"
        )
    return f"Ses{match.group(1)}{match.group(2)}"


def find_release(data_folder: Path) -> Path:
    """The folder holding ``Session1..5``: ``data_folder`` or its
    ``IEMOCAP_full_release`` sub-folder."""
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(f"IEMOCAP data folder not found: {data_folder}")
    for candidate in (data_folder, data_folder / "IEMOCAP_full_release"):
        if any((candidate / f"Session{s}").is_dir() for s in SESSIONS):
            return candidate
    raise FileNotFoundError(
        f"no Session1..Session5 folders in {data_folder} "
        f"(nor in {data_folder / 'IEMOCAP_full_release'})"
    )


def _session_dirs(release: Path) -> Dict[int, Path]:
    dirs = {}
    for s in SESSIONS:
        folder = release / f"Session{s}"
        for needed in (folder, folder / "dialog" / "EmoEvaluation", folder / "sentences" / "wav"):
            if not needed.is_dir():
                raise FileNotFoundError(f"IEMOCAP folder missing: {needed}")
        dirs[s] = folder
    return dirs


def _label_files(session_dir: Path) -> Tuple[List[Path], List[Path]]:
    folder = session_dir / "dialog" / "EmoEvaluation"
    files, ignored = [], []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        if entry.name.startswith(".") or entry.suffix != ".txt":
            ignored.append(entry)
        else:
            files.append(entry)
    return files, ignored


def fingerprint(release: Path) -> Dict[str, object]:
    """Identifies the data for re-run detection (cheap: names, sizes, times).

    Arguments
    ---------
    release : Path
        Folder with Session1..5.

    Returns
    -------
    dict
        ``label_files``, ``label_digest``, ``wav_files``, ``wav_bytes``.
    """
    digest = hashlib.sha1()
    n_labels = n_wavs = wav_bytes = 0
    for s, session_dir in _session_dirs(release).items():
        files, _ = _label_files(session_dir)
        for f in files:
            st = f.stat()
            digest.update(f"{s}/{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            n_labels += 1
        for root, _, names in os.walk(session_dir / "sentences" / "wav"):
            for name in names:
                if name.endswith(".wav") and not name.startswith("."):
                    n_wavs += 1
                    wav_bytes += os.path.getsize(os.path.join(root, name))
    return {
        "folder": str(release.resolve()),
        "label_files": n_labels,
        "label_digest": digest.hexdigest(),
        "wav_files": n_wavs,
        "wav_bytes": wav_bytes,
    }


def collect_utterances(*, release: Path, missing_wav: str = "error") -> Tuple[List[dict], dict]:
    """Reads every label file; returns the kept utterances and the counts.

    Arguments
    ---------
    release : Path
        Folder with Session1..5.
    missing_wav : str
        ``"error"`` or ``"skip"`` (count and leave out) for a kept turn
        whose wav file is missing.

    Returns
    -------
    records : list of dict
        Kept utterances sorted by ID (manifest entries without ``fold``, plus
        ``id``).
    stats : dict
        ``labels_per_session`` (all release labels), ``skipped_missing_wav``,
        ``ignored_files``, ``turns``.
    """
    import soundfile as sf

    if missing_wav not in ("error", "skip"):
        raise ValueError(f"missing_wav must be 'error' or 'skip', got {missing_wav!r}")
    records: List[dict] = []
    seen: Dict[str, str] = {}
    stats = {"labels_per_session": {}, "skipped_missing_wav": [], "ignored_files": [], "turns": 0}
    for s, session_dir in _session_dirs(release).items():
        files, ignored = _label_files(session_dir)
        stats["ignored_files"].extend(str(p) for p in ignored)
        counts = {lab: 0 for lab in list(KEEP) + list(DROP)}
        kept_in_session = 0
        for label_file in files:
            dialog = label_file.stem
            with open(label_file, encoding="utf-8", errors="replace") as handle:
                for line_no, line in enumerate(handle, start=1):
                    turn = parse_label_line(line, path=str(label_file), line_no=line_no)
                    if turn is None:
                        continue
                    where = f"{label_file}:{line_no}"
                    if not turn.utt_id.startswith(dialog + "_"):
                        raise IemocapFormatError(
                            f"{where}: utterance {turn.utt_id!r} does not belong to dialog {dialog!r}"
                        )
                    speaker = speaker_of(turn.utt_id, path=str(label_file), line_no=line_no)
                    if int(speaker[3:5]) != s:
                        raise IemocapFormatError(
                            f"{where}: utterance {turn.utt_id!r} is in Session{s}, not Session{int(speaker[3:5])}"
                        )
                    if turn.utt_id in seen:
                        raise IemocapFormatError(
                            f"{where}: utterance {turn.utt_id!r} already labelled at {seen[turn.utt_id]}"
                        )
                    seen[turn.utt_id] = where
                    counts[turn.label] += 1
                    stats["turns"] += 1
                    if turn.label not in KEEP:
                        continue
                    wav = session_dir / "sentences" / "wav" / dialog / f"{turn.utt_id}.wav"
                    if not wav.is_file():
                        if missing_wav == "error":
                            raise FileNotFoundError(
                                f"{where}: wav of {turn.utt_id} ({turn.label}) not found: {wav}"
                            )
                        logger.warning("%s: wav missing, skipped: %s", where, wav)
                        stats["skipped_missing_wav"].append(str(wav))
                        continue
                    info = sf.info(str(wav))
                    if info.samplerate != SAMPLE_RATE or info.channels != 1:
                        raise IemocapFormatError(
                            f"{wav}: expected 16000 Hz mono, got {info.samplerate} Hz x {info.channels}"
                        )
                    records.append({
                        "id": turn.utt_id,
                        "wav": str(wav.resolve()),
                        "duration": round(info.frames / info.samplerate, 4),
                        "emo": KEEP[turn.label],
                        "label": turn.label,
                        "speaker": speaker,
                        "gender": speaker[-1],
                        "session": s,
                        "dialog": dialog,
                    })  # fmt: skip
                    kept_in_session += 1
        stats["labels_per_session"][s] = counts
        if kept_in_session == 0:
            raise IemocapFormatError(
                f"{session_dir / 'dialog' / 'EmoEvaluation'}: Session{s} has no utterance "
                f"labelled {'/'.join(KEEP)} ({len(files)} label files)"
            )
    records.sort(key=lambda r: r["id"])
    return records, stats


def valid_speaker(fold: int) -> str:
    """The held-out validation speaker of ``fold`` in ``valid_mode="speaker"``.

    Example
    -------
    >>> [valid_speaker(k) for k in (1, 2, 3, 4, 5)]
    ['Ses02F', 'Ses03M', 'Ses04F', 'Ses05M', 'Ses01F']
    """
    return f"Ses{fold % 5 + 1:02d}{'F' if fold % 2 == 1 else 'M'}"


def split_fold(
    records: Sequence[dict], *, fold: int, valid_mode: str, valid_ratio: float, seed: int
) -> Dict[str, List[dict]]:
    """Train/valid/test of one leave-one-session-out fold (see module rules).

    Example
    -------
    >>> recs = [{"id": f"Ses0{s}F_x_F{i:03d}", "session": s, "speaker": f"Ses0{s}F"}
    ...         for s in (1, 2, 3, 4, 5) for i in range(10)]
    >>> parts = split_fold(recs, fold=2, valid_mode="random", valid_ratio=0.2, seed=1)
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [32, 8, 10]
    """
    test = [r for r in records if r["session"] == fold]
    pool = sorted((r for r in records if r["session"] != fold), key=lambda r: r["id"])
    if valid_mode == "random":
        if not 0.0 < valid_ratio < 1.0:
            raise ValueError(f"valid_ratio must be in (0, 1), got {valid_ratio}")
        n_valid = int(math.floor(valid_ratio * len(pool) + 0.5))
        chosen = set(random.Random(seed * 1000 + fold).sample([r["id"] for r in pool], n_valid))
    elif valid_mode == "speaker":
        held_out = valid_speaker(fold)
        chosen = {r["id"] for r in pool if r["speaker"] == held_out}
        if not chosen:
            raise IemocapFormatError(
                f"fold {fold}: validation speaker {held_out} has no utterances"
            )
    else:
        raise ValueError(f"valid_mode must be one of {VALID_MODES}, got {valid_mode!r}")
    return {
        "train": [r for r in pool if r["id"] not in chosen],
        "valid": [r for r in pool if r["id"] in chosen],
        "test": test,
    }


def full_release_check(
    *, classes_per_session: Dict[int, Dict[str, int]], turns: int
) -> Tuple[str, str]:
    """Compares the 4-class counts with the published full-release counts.

    Arguments
    ---------
    classes_per_session : dict
        session -> class -> count (kept utterances).
    turns : int
        All labelled turns, dropped labels included (10039 in the release).

    Returns
    -------
    status : str
        ``"full-release"``, ``"full-release-differs"`` or ``"not-full-release"``.
    statement : str
        One sentence for the log and the summary.

    Example
    -------
    >>> full_release_check(classes_per_session={1: {"neu": 3}}, turns=5)[0]
    'not-full-release'
    """
    per_session = {s: sum(c.values()) for s, c in classes_per_session.items()}
    per_class = {k: sum(c.get(k, 0) for c in classes_per_session.values()) for k in CLASSES}
    total = sum(per_session.values())
    expected = FULL_RELEASE
    exp_text = (
        f"{expected['total']} utterances (neu {expected['classes']['neu']}, hap {expected['classes']['hap']}, "
        f"ang {expected['classes']['ang']}, sad {expected['classes']['sad']}), test sessions "
        + "/".join(str(expected["sessions"][s]) for s in SESSIONS)
    )
    got_text = (
        f"{total} utterances (neu {per_class['neu']}, hap {per_class['hap']}, ang {per_class['ang']}, "
        f"sad {per_class['sad']}), test sessions "
        + "/".join(str(per_session.get(s, 0)) for s in SESSIONS)
    )
    looks_full = len(per_session) == 5 and turns >= 0.9 * expected["turns"]
    if not looks_full:
        return "not-full-release", (
            f"Not the IEMOCAP full release ({turns} labelled turns, {got_text}); the full release has "
            f"{expected['turns']} turns and {exp_text}, so the paper's counts do not apply."
        )
    same = (
        total == expected["total"]
        and all(per_class[k] == v for k, v in expected["classes"].items())
        and all(per_session.get(s) == v for s, v in expected["sessions"].items())
    )
    if same:
        return "full-release", f"Matches the IEMOCAP full release: {got_text}."
    return "full-release-differs", (
        f"The data look like the IEMOCAP full release ({turns} labelled turns) but the 4-class counts "
        f"DIFFER from the published ones: got {got_text}; expected {exp_text}. Results are not "
        "directly comparable with the paper's."
    )


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_outputs(save_folder: Path) -> None:
    # Only what this module writes: the save folder may hold other files.
    for entry in save_folder.glob("fold_*"):
        if entry.is_dir() and re.fullmatch(r"fold_\d+", entry.name):
            shutil.rmtree(entry)
    for name in ("summary.json", "summary.txt", OPTIONS_FILE):
        if (save_folder / name).exists():
            (save_folder / name).unlink()


def _summary_table(summary: dict) -> str:
    lines = [
        "IEMOCAP 4-class preparation",
        "",
        "session  " + "  ".join(f"{k:>5}" for k in CLASSES) + "  total",
    ]
    for s, counts in summary["classes_per_session"].items():
        lines.append(
            f"{s:>7}  "
            + "  ".join(f"{counts[k]:>5}" for k in CLASSES)
            + f"  {sum(counts.values()):>5}"
        )
    tot = summary["classes_total"]
    lines.append(
        "    all  " + "  ".join(f"{tot[k]:>5}" for k in CLASSES) + f"  {summary['kept']:>5}"
    )
    lines += [
        "",
        f"labelled turns: {summary['turns']}, kept: {summary['kept']}, dropped: {summary['dropped']} "
        f"({', '.join(f'{k} {v}' for k, v in summary['dropped_per_label'].items())})",
        f"skipped (missing wav): {len(summary['skipped_missing_wav'])}, "
        f"ignored files: {len(summary['ignored_files'])}",
        "",
        f"validation: {summary['validation_rule']}",
        "",
    ]
    lines.append("fold  " + "  ".join(f"{k:>6}" for k in SPLITS))
    for k, fold in summary["folds"].items():
        lines.append(f"{k:>4}  " + "  ".join(f"{fold[split]['count']:>6}" for split in SPLITS))
    lines += ["", summary["full_release"]["statement"], ""]
    return "\n".join(lines)


def prepare_iemocap(
    *,
    data_folder: str,
    save_folder: str,
    folds: Sequence[int] = SESSIONS,
    valid_mode: str = "random",
    valid_ratio: float = 0.2,
    seed: int = 1234,
    missing_wav: str = "error",
    skip_prep: bool = False,
) -> Optional[dict]:
    """Writes the leave-one-session-out manifests of IEMOCAP (module rules).

    Arguments
    ---------
    data_folder : str
        ``IEMOCAP_full_release`` or a folder containing it.
    save_folder : str
        Output folder: ``fold_<k>/{train,valid,test}.json``, ``summary.json``,
        ``summary.txt``, ``prepare_options.json``.
    folds : sequence of int
        Folds to write (test session numbers), default all five.
    valid_mode : str
        ``"random"`` (``valid_ratio`` of the training pool) or ``"speaker"``.
    valid_ratio : float
        Share of the training pool used for validation in ``"random"`` mode.
    seed : int
        Seed of the random validation split.
    missing_wav : str
        ``"error"`` or ``"skip"``.
    skip_prep : bool
        Do nothing (for recipes whose manifests are made elsewhere).

    Returns
    -------
    dict or None
        The summary (also in ``summary.json``); None when ``skip_prep``.
    """
    if skip_prep:
        return None
    folds = sorted({int(k) for k in folds})
    if not folds or any(k not in SESSIONS for k in folds):
        raise ValueError(f"folds must be among {SESSIONS}, got {folds}")
    if valid_mode not in VALID_MODES:
        raise ValueError(f"valid_mode must be one of {VALID_MODES}, got {valid_mode!r}")
    if valid_mode == "random" and not 0.0 < valid_ratio < 1.0:
        raise ValueError(f"valid_ratio must be in (0, 1), got {valid_ratio}")
    if missing_wav not in ("error", "skip"):
        raise ValueError(f"missing_wav must be 'error' or 'skip', got {missing_wav!r}")
    release = find_release(Path(data_folder))
    save = Path(save_folder)
    options = {
        "folds": folds,
        "valid_mode": valid_mode,
        "valid_ratio": valid_ratio,
        "seed": seed,
        "missing_wav": missing_wav,
        "format_version": 1,
    }
    state = {"options": options, "data": fingerprint(release)}
    options_path = save / OPTIONS_FILE
    if options_path.is_file():
        try:
            previous = json.loads(options_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = None
        outputs = [save / f"fold_{k}" / f"{split}.json" for k in folds for split in SPLITS]
        if previous == state and all(p.is_file() for p in outputs + [save / "summary.json"]):
            logger.info("IEMOCAP manifests in %s match these options and data: reusing them", save)
            return json.loads((save / "summary.json").read_text(encoding="utf-8"))
        logger.info(
            "IEMOCAP options or data changed since the manifests in %s: rewriting them", save
        )
    save.mkdir(parents=True, exist_ok=True)
    _remove_outputs(save)

    records, stats = collect_utterances(release=release, missing_wav=missing_wav)
    classes_per_session = {
        s: {k: sum(1 for r in records if r["session"] == s and r["emo"] == k) for k in CLASSES}
        for s in SESSIONS
    }
    status, statement = full_release_check(
        classes_per_session=classes_per_session, turns=stats["turns"]
    )
    (logger.warning if status == "full-release-differs" else logger.info)(statement)

    rule = (
        f"random {valid_ratio:.0%} of each fold's training pool (seed {seed})"
        if valid_mode == "random"
        else "held-out speaker: " + ", ".join(f"fold {k}: {valid_speaker(k)}" for k in folds)
    )
    fold_summary = {}
    for k in folds:
        parts = split_fold(
            records, fold=k, valid_mode=valid_mode, valid_ratio=valid_ratio, seed=seed
        )
        folder = save / f"fold_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        fold_summary[k] = {}
        for split in SPLITS:
            manifest = {
                r["id"]: {key: value for key, value in r.items() if key != "id"} | {"fold": k}
                for r in parts[split]
            }
            _write_json(folder / f"{split}.json", manifest)
            fold_summary[k][split] = {
                "count": len(parts[split]),
                "classes": {c: sum(1 for r in parts[split] if r["emo"] == c) for c in CLASSES},
                "speakers": sorted({r["speaker"] for r in parts[split]}),
                "manifest": str((folder / f"{split}.json").resolve()),
            }
        logger.info(
            "fold %d: train %d, valid %d, test %d (Session%d) -> %s",
            k,
            len(parts["train"]),
            len(parts["valid"]),
            len(parts["test"]),
            k,
            folder,
        )

    dropped_per_label = {
        lab: sum(c[lab] for c in stats["labels_per_session"].values()) for lab in DROP
    }
    summary = {
        "data_folder": str(release.resolve()),
        "options": options,
        "turns": stats["turns"],
        "kept": len(records),
        "dropped": sum(dropped_per_label.values()),
        "dropped_per_label": dropped_per_label,
        "labels_per_session": stats["labels_per_session"],
        "classes_per_session": classes_per_session,
        "classes_total": {c: sum(v[c] for v in classes_per_session.values()) for c in CLASSES},
        "hours": round(sum(r["duration"] for r in records) / 3600, 4),
        "skipped_missing_wav": stats["skipped_missing_wav"],
        "ignored_files": stats["ignored_files"],
        "validation_rule": rule,
        "folds": fold_summary,
        "full_release": {"status": status, "statement": statement},
    }
    _write_json(save / "summary.json", summary)
    (save / "summary.txt").write_text(
        _summary_table(json.loads(json.dumps(summary))), encoding="utf-8"
    )
    _write_json(options_path, state)  # last: an interrupted run is never reused
    logger.info(
        "IEMOCAP: %d utterances kept of %d turns; summary in %s",
        len(records),
        stats["turns"],
        save / "summary.txt",
    )
    return json.loads((save / "summary.json").read_text(encoding="utf-8"))


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the recipe's ``iemocap_prepare.py``."""
    parser = argparse.ArgumentParser(
        description="Prepare IEMOCAP (4 classes, leave-one-session-out folds) for Qieemo."
    )
    parser.add_argument(
        "--data_folder", required=True, help="IEMOCAP_full_release, or a folder containing it"
    )
    parser.add_argument("--save_folder", required=True, help="where the fold_<k>/ manifests go")
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=list(SESSIONS),
        help="folds (test sessions) to write, default 1 2 3 4 5",
    )
    parser.add_argument(
        "--valid_mode",
        choices=VALID_MODES,
        default="random",
        help="random: a seeded share of the training pool (default); "
        "speaker: one held-out speaker of another session",
    )
    parser.add_argument(
        "--valid_ratio", type=float, default=0.2, help="share for random mode (0.2)"
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random split (1234)")
    parser.add_argument(
        "--missing_wav",
        choices=("error", "skip"),
        default="error",
        help="a kept turn whose wav is missing: error (default) or skip and count",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``recipes/IEMOCAP/Qieemo/iemocap_prepare.py``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        summary = prepare_iemocap(
            data_folder=args.data_folder, save_folder=args.save_folder, folds=args.folds,
            valid_mode=args.valid_mode, valid_ratio=args.valid_ratio, seed=args.seed,
            missing_wav=args.missing_wav,
        )  # fmt: skip
    except (FileNotFoundError, IemocapFormatError, ValueError) as error:
        print(f"iemocap_prepare: error: {error}", file=sys.stderr)
        return 1
    print((Path(args.save_folder) / "summary.txt").read_text(encoding="utf-8"))
    return 0 if summary is not None else 1
