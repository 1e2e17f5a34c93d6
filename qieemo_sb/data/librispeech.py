"""LibriSpeech preparation: SpeechBrain-style CSV manifests, one per split.

Input: the ``LibriSpeech`` folder (or a folder containing it) with
``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` and
``<speaker>-<chapter>.trans.txt``; the synthetic corpus of
:mod:`qieemo_sb.data.synthetic` has the same layout and takes the same path.

Rules
-----
- Output ``<save_folder>/<split>.csv`` with the columns of SpeechBrain's
  LibriSpeech recipe: ``ID`` (``103-1240-0000``), ``duration`` (seconds),
  ``wav`` (absolute path), ``spk_id`` (``<speaker>-<chapter>``, as in
  SpeechBrain's ``librispeech_prepare``), ``wrd`` (the transcript words).
  Rows are sorted by speaker, chapter and utterance number; with
  ``select_n_sentences`` only the first N rows of a split are kept.
- ``merge_lst`` + ``merge_name`` also write the concatenation of those splits.
- Transcript lines are ``<speaker>-<chapter>-<utt> WORDS`` with upper-case
  words (A-Z and apostrophes) and an ID of that chapter; anything else is a
  :class:`LibriSpeechFormatError` naming the file and line. A transcribed
  utterance without its ``.flac`` is an error (``missing_audio="error"``,
  default) or is skipped and counted (``"skip"``); a ``.flac`` without a
  transcript line is skipped and counted. Audio must be 16 kHz mono.
- Re-runs: ``librispeech_prepare_options.json`` stores the options and a
  fingerprint of the data (transcript file names, sizes, times; flac count and
  bytes per split). Same options and data: the CSV files are reused (logged);
  otherwise the files of the previous run are removed and rewritten. A
  summary goes to ``librispeech_summary.json``.

Example
-------
>>> parse_transcript_line("103-1240-0000 CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED")
('103-1240-0000', 'CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED')
>>> parse_transcript_line("103-1240-0001 hello", path="a.trans.txt", line_no=2)
Traceback (most recent call last):
...
qieemo_sb.data.librispeech.LibriSpeechFormatError: a.trans.txt:2: expected '<speaker>-<chapter>-<utt> UPPER CASE WORDS', got '103-1240-0001 hello'
"""

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
OPTIONS_FILE = "librispeech_prepare_options.json"
SUMMARY_FILE = "librispeech_summary.json"
COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd")
_LINE = re.compile(r"^(\d+)-(\d+)-(\d+) ([A-Z']+(?: [A-Z']+)*)$")


class LibriSpeechFormatError(ValueError):
    """A transcript file or folder that does not follow the LibriSpeech layout."""


def parse_transcript_line(
    line: str, *, path: str = "<string>", line_no: int = 0
) -> Tuple[str, str]:
    """Splits a ``trans.txt`` line into (utterance ID, words).

    Arguments
    ---------
    line : str
        One line, with or without its newline.
    path, line_no : str, int
        Where it comes from, for the error message.

    Returns
    -------
    tuple of str
        ``(ID, WORDS)``.
    """
    text = line.rstrip("\r\n")
    match = _LINE.match(text.strip())
    if match is None:
        raise LibriSpeechFormatError(
            f"{path}:{line_no}: expected '<speaker>-<chapter>-<utt> UPPER CASE WORDS', got {text!r}"
        )
    return f"{match.group(1)}-{match.group(2)}-{match.group(3)}", match.group(4)


def find_librispeech(data_folder: Path) -> Path:
    """``data_folder`` if it holds splits, else its ``LibriSpeech`` sub-folder."""
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(f"LibriSpeech data folder not found: {data_folder}")
    if (data_folder / "LibriSpeech").is_dir() and not any(
        p.name.startswith(("train-", "dev-", "test-")) for p in data_folder.iterdir()
    ):
        return data_folder / "LibriSpeech"
    return data_folder


def _sort_key(utt_id: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in utt_id.split("-"))


def _split_fingerprint(split_dir: Path) -> Dict[str, object]:
    digest = hashlib.sha1()
    n_flac = flac_bytes = 0
    for root, dirs, names in os.walk(split_dir):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            if name.endswith(".trans.txt"):
                st = os.stat(full)
                digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            elif name.endswith(".flac"):
                n_flac += 1
                flac_bytes += os.path.getsize(full)
    return {"transcripts": digest.hexdigest(), "flac_files": n_flac, "flac_bytes": flac_bytes}


def read_split(*, split_dir: Path, missing_audio: str = "error") -> Tuple[List[List[str]], dict]:
    """Rows (ID, duration, wav, spk_id, wrd) of one split, sorted by ID.

    Arguments
    ---------
    split_dir : Path
        E.g. ``LibriSpeech/dev-clean``.
    missing_audio : str
        ``"error"`` or ``"skip"`` for a transcript line without its flac.

    Returns
    -------
    rows : list of list of str
    stats : dict
        ``utterances``, ``skipped_missing_audio``, ``untranscribed_audio``,
        ``hours``.
    """
    import soundfile as sf

    if not split_dir.is_dir():
        raise FileNotFoundError(f"LibriSpeech split folder not found: {split_dir}")
    rows, skipped, untranscribed, seconds = [], [], [], 0.0
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise LibriSpeechFormatError(f"{split_dir}: no <speaker>/<chapter>/*.trans.txt files")
    for trans in transcripts:
        chapter_dir = trans.parent
        prefix = f"{chapter_dir.parent.name}-{chapter_dir.name}-"
        if trans.name != f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt":
            raise LibriSpeechFormatError(f"{trans}: name does not match its folder {chapter_dir}")
        listed = set()
        with open(trans, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                utt_id, words = parse_transcript_line(line, path=str(trans), line_no=line_no)
                if not utt_id.startswith(prefix):
                    raise LibriSpeechFormatError(
                        f"{trans}:{line_no}: utterance {utt_id} is not of chapter {prefix[:-1]}"
                    )
                listed.add(utt_id)
                flac = chapter_dir / f"{utt_id}.flac"
                if not flac.is_file():
                    if missing_audio == "error":
                        raise FileNotFoundError(
                            f"{trans}:{line_no}: audio of {utt_id} not found: {flac}"
                        )
                    logger.warning("%s:%d: audio missing, skipped: %s", trans, line_no, flac)
                    skipped.append(str(flac))
                    continue
                info = sf.info(str(flac))
                if info.samplerate != SAMPLE_RATE or info.channels != 1:
                    raise LibriSpeechFormatError(
                        f"{flac}: expected 16000 Hz mono, got {info.samplerate} Hz x {info.channels}"
                    )
                duration = info.frames / info.samplerate
                seconds += duration
                rows.append([utt_id, f"{duration:.4f}", str(flac.resolve()), prefix[:-1], words])
        for flac in sorted(chapter_dir.glob("*.flac")):
            if flac.stem not in listed:
                untranscribed.append(str(flac))
    rows.sort(key=lambda r: _sort_key(r[0]))
    stats = {
        "utterances": len(rows),
        "skipped_missing_audio": skipped,
        "untranscribed_audio": untranscribed,
        "hours": round(seconds / 3600, 4),
    }
    return rows, stats


def _write_csv(path: Path, rows: Sequence[Sequence[str]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)


def prepare_librispeech(
    *,
    data_folder: str,
    save_folder: str,
    tr_splits: Sequence[str] = ("train-clean-100",),
    dev_splits: Sequence[str] = ("dev-clean",),
    te_splits: Sequence[str] = ("test-clean",),
    select_n_sentences: Optional[Union[int, Sequence[int]]] = None,
    merge_lst: Sequence[str] = (),
    merge_name: Optional[str] = None,
    missing_audio: str = "error",
    skip_prep: bool = False,
) -> Optional[dict]:
    """Writes ``<save_folder>/<split>.csv`` for the splits asked for.

    Arguments
    ---------
    data_folder : str
        The ``LibriSpeech`` folder, or a folder containing it.
    save_folder : str
        Where the CSV files go.
    tr_splits, dev_splits, te_splits : sequence of str
        Split folder names (e.g. ``train-clean-100``); the three lists only
        group them, every split gets its own CSV.
    select_n_sentences : int or sequence of int, optional
        Keep the first N rows of each split (one int for all, or one per split
        in tr + dev + te order).
    merge_lst : sequence of str
        Splits to concatenate into ``merge_name``.
    merge_name : str, optional
        File name of the merged CSV (e.g. ``train.csv``).
    missing_audio : str
        ``"error"`` or ``"skip"`` for a transcript line without its flac.
    skip_prep : bool
        Do nothing.

    Returns
    -------
    dict or None
        The summary (also in ``librispeech_summary.json``); None if skipped.

    Example
    -------
    >>> prepare_librispeech(data_folder=".", save_folder=".", skip_prep=True) is None
    True
    """
    if skip_prep:
        return None
    splits = list(dict.fromkeys(list(tr_splits) + list(dev_splits) + list(te_splits)))
    if not splits:
        raise ValueError("no split asked for")
    if select_n_sentences is None or isinstance(select_n_sentences, int):
        limits = {s: select_n_sentences for s in splits}
    else:
        if len(select_n_sentences) != len(splits):
            raise ValueError(
                f"select_n_sentences has {len(select_n_sentences)} values for {len(splits)} splits"
            )
        limits = dict(zip(splits, select_n_sentences))
    if set(merge_lst) - set(splits):
        raise ValueError(f"merge_lst {list(merge_lst)} names splits not prepared: {splits}")
    if merge_lst and not merge_name:
        raise ValueError("merge_lst needs merge_name")
    if missing_audio not in ("error", "skip"):
        raise ValueError(f"missing_audio must be 'error' or 'skip', got {missing_audio!r}")
    root = find_librispeech(Path(data_folder))
    for split in splits:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"LibriSpeech split folder not found: {root / split}")
    save = Path(save_folder)
    options = {
        "splits": splits,
        "select_n_sentences": limits,
        "merge_lst": list(merge_lst),
        "merge_name": merge_name,
        "missing_audio": missing_audio,
        "format_version": 1,
    }
    outputs = [f"{s}.csv" for s in splits] + ([merge_name] if merge_lst else [])
    state = {
        "options": options,
        "data": {
            "folder": str(root.resolve()),
            **{s: _split_fingerprint(root / s) for s in splits},
        },
        "outputs": outputs,
    }
    options_path = save / OPTIONS_FILE
    previous = None
    if options_path.is_file():
        try:
            previous = json.loads(options_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = None
        if previous == state and all((save / f).is_file() for f in outputs + [SUMMARY_FILE]):
            logger.info(
                "LibriSpeech manifests in %s match these options and data: reusing them", save
            )
            return json.loads((save / SUMMARY_FILE).read_text(encoding="utf-8"))
        logger.info(
            "LibriSpeech options or data changed since the manifests in %s: rewriting them", save
        )
    save.mkdir(parents=True, exist_ok=True)
    # Remove what the previous run wrote (listed in its options file) only.
    stale = set(previous.get("outputs", [])) if isinstance(previous, dict) else set()
    for name in stale | {OPTIONS_FILE, SUMMARY_FILE}:
        if (save / name).is_file():
            (save / name).unlink()

    summary = {"data_folder": str(root.resolve()), "options": options, "splits": {}}
    all_rows: Dict[str, List[List[str]]] = {}
    for split in splits:
        rows, stats = read_split(split_dir=root / split, missing_audio=missing_audio)
        if limits[split] is not None:
            rows = rows[: limits[split]]
        all_rows[split] = rows
        _write_csv(save / f"{split}.csv", rows)
        stats["rows"] = len(rows)
        stats["speakers"] = len({r[0].split("-")[0] for r in rows})
        stats["csv"] = str((save / f"{split}.csv").resolve())
        summary["splits"][split] = stats
        logger.info(
            "%s: %d utterances, %d speakers, %.2f h -> %s",
            split,
            len(rows),
            stats["speakers"],
            stats["hours"],
            save / f"{split}.csv",
        )
        if stats["skipped_missing_audio"] or stats["untranscribed_audio"]:
            logger.warning(
                "%s: skipped %d transcript lines without audio, %d audio files without transcript",
                split,
                len(stats["skipped_missing_audio"]),
                len(stats["untranscribed_audio"]),
            )
    if merge_lst:
        merged = [row for split in merge_lst for row in all_rows[split]]
        _write_csv(save / merge_name, merged)
        summary["merged"] = {"name": merge_name, "splits": list(merge_lst), "rows": len(merged)}
    (save / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    options_path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")  # last
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the recipe's ``librispeech_prepare.py``."""
    parser = argparse.ArgumentParser(
        description="Prepare LibriSpeech CSV manifests (SpeechBrain format)."
    )
    parser.add_argument(
        "--data_folder", required=True, help="the LibriSpeech folder, or a folder containing it"
    )
    parser.add_argument("--save_folder", required=True, help="where <split>.csv go")
    parser.add_argument("--tr_splits", nargs="*", default=["train-clean-100"])
    parser.add_argument("--dev_splits", nargs="*", default=["dev-clean"])
    parser.add_argument("--te_splits", nargs="*", default=["test-clean"])
    parser.add_argument(
        "--select_n_sentences",
        type=int,
        default=None,
        help="keep the first N utterances of each split",
    )
    parser.add_argument("--merge_lst", nargs="*", default=[], help="splits to concatenate")
    parser.add_argument("--merge_name", default=None, help="file name of the merged CSV")
    parser.add_argument("--missing_audio", choices=("error", "skip"), default="error")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``recipes/LibriSpeech/ASR/librispeech_prepare.py``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        prepare_librispeech(
            data_folder=args.data_folder, save_folder=args.save_folder, tr_splits=args.tr_splits,
            dev_splits=args.dev_splits, te_splits=args.te_splits,
            select_n_sentences=args.select_n_sentences, merge_lst=args.merge_lst,
            merge_name=args.merge_name, missing_audio=args.missing_audio,
        )  # fmt: skip
    except (FileNotFoundError, LibriSpeechFormatError, ValueError) as error:
        print(f"librispeech_prepare: error: {error}", file=sys.stderr)
        return 1
    return 0
