"""Renders the planned clips with eSpeak NG and writes the LibriSpeech and IEMOCAP folders."""

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from qieemo_sb.data.synthetic.plans import (
    GENERATOR_VERSION,
    IEMOCAP_ROOT,
    LIBRI_ROOT,
    LIBRI_SPLITS,
    NOISE_STD,
    SAMPLE_RATE,
    SIZES,
    Clip,
    IemocapTurn,
    LibriUtterance,
    plan_iemocap,
    plan_librispeech,
)
from qieemo_sb.data.synthetic.vocabulary import LABELS

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------
def render_clips(out_dir: str, clips: Sequence[Clip]) -> List[int]:
    """Synthesizes and writes ``clips`` (also in worker processes).

    Arguments
    ---------
    out_dir : str
        Folder the clip paths are relative to (their folders must exist).
    clips : sequence of Clip
        What to render; each file depends only on its own Clip.

    Returns
    -------
    list of int
        Length of each written file in samples (16 kHz).
    """
    import soundfile as sf

    from qieemo_sb.data.espeak import EspeakSynthesizer

    synth = EspeakSynthesizer(sample_rate=SAMPLE_RATE)
    lengths = []
    for clip in clips:
        speech = synth.synthesize(clip.text, voice=clip.voice, prosody=clip.prosody)
        wav = np.concatenate([
            np.zeros(int(round(clip.lead * SAMPLE_RATE)), np.float32),
            speech,
            np.zeros(int(round(clip.tail * SAMPLE_RATE)), np.float32),
        ])  # fmt: skip
        wav = wav + np.random.default_rng(clip.noise_seed).normal(0, NOISE_STD, wav.shape)
        np.clip(wav, -1.0, 1.0, out=wav)
        path = Path(out_dir) / clip.path
        fmt = "FLAC" if path.suffix == ".flac" else "WAV"
        sf.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16", format=fmt)
        lengths.append(len(wav))
    return lengths


def _render_all(
    out_dir: Path, clips: List[Clip], workers: int, progress: bool, desc: str
) -> List[int]:
    from tqdm import tqdm

    for d in sorted({str((out_dir / c.path).parent) for c in clips}):
        os.makedirs(d, exist_ok=True)
    chunk = 16
    chunks = [clips[i : i + chunk] for i in range(0, len(clips), chunk)]
    lengths: List[Optional[List[int]]] = [None] * len(chunks)
    bar = tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress)
    if workers <= 1:
        for i, part in enumerate(chunks):
            lengths[i] = render_clips(str(out_dir), part)
            bar.update(len(part))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: safe whatever the parent holds (torch threads in tests).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(render_clips, str(out_dir), part): i for i, part in enumerate(chunks)
            }
            for future in as_completed(futures):
                lengths[futures[future]] = future.result()
                bar.update(len(chunks[futures[future]]))
    bar.close()
    return [n for part in lengths for n in part]


def _fmt_time(t: float) -> str:
    return f"{t:.4f}"


def _write_iemocap_text(out_dir: Path, turns: List[IemocapTurn], lengths: List[int]) -> None:
    by_dialog: Dict[Tuple[int, str], List[Tuple[IemocapTurn, float, float]]] = {}
    clock: Dict[str, float] = {}
    for turn, n in zip(turns, lengths):
        start = clock.get(turn.dialog, 0.0) + turn.gap + (2.0 if turn.dialog not in clock else 0.0)
        end = start + n / SAMPLE_RATE
        clock[turn.dialog] = end
        by_dialog.setdefault((turn.session, turn.dialog), []).append((turn, start, end))
    for (session, dialog), items in by_dialog.items():
        base = out_dir / IEMOCAP_ROOT / f"Session{session}" / "dialog"
        (base / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (base / "transcriptions").mkdir(parents=True, exist_ok=True)
        emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        trans = []
        for turn, start, end in items:
            v, a, d = turn.vad
            emo.append(
                f"[{_fmt_time(start)} - {_fmt_time(end)}]\t{turn.utt_id}\t{turn.label}\t"
                f"[{v:.4f}, {a:.4f}, {d:.4f}]"
            )
            emo.extend(turn.annotations[0])
            emo.extend(turn.annotations[1])
            emo.append("")
            trans.append(f"{turn.utt_id} [{start:08.4f}-{end:08.4f}]: {turn.clip.text}")
        (base / "EmoEvaluation" / f"{dialog}.txt").write_text(
            "\n".join(emo) + "\n", encoding="utf-8"
        )
        (base / "transcriptions" / f"{dialog}.txt").write_text(
            "\n".join(trans) + "\n", encoding="utf-8"
        )


def _write_libri_text(out_dir: Path, utts: List[LibriUtterance]) -> None:
    by_chapter: Dict[Tuple[str, str, str], List[LibriUtterance]] = {}
    for u in utts:
        by_chapter.setdefault((u.split, u.speaker, u.chapter), []).append(u)
    for (split, spk, chapter), items in by_chapter.items():
        folder = out_dir / LIBRI_ROOT / split / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"{u.utt_id} {u.words}" for u in items]
        (folder / f"{spk}-{chapter}.trans.txt").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )


def _folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def generate(
    *,
    out_dir: Path,
    size: str = "small",
    seed: int = 0,
    scale: float = 1.0,
    corpora: Sequence[str] = ("librispeech", "iemocap"),
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, dict]:
    """Writes the synthetic corpora under ``out_dir``.

    Arguments
    ---------
    out_dir : Path
        Output folder; gets ``LibriSpeech/`` and/or ``IEMOCAP_full_release/``.
    size : str
        A key of :data:`SIZES`.
    seed : int
        Seed of all random choices; same seed and options give identical files.
    scale : float
        Multiplies utterances per speaker/chapter and turns per dialog.
    corpora : sequence of str
        ``librispeech`` and/or ``iemocap``.
    workers : int, optional
        Processes (default: all CPUs for 200+ clips, else 1). The files do not
        depend on it.
    overwrite : bool
        Replace a corpus folder generated with other options.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Per corpus: the generation record also written to
        ``out_dir/synth_<corpus>.json`` (clips, hours, megabytes, seconds,
        clips per second, or ``"skipped": True``).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    unknown = set(corpora) - {"librispeech", "iemocap"}
    if unknown or not corpora:
        raise ValueError(f"corpora must be librispeech and/or iemocap, got {list(corpora)}")
    dims = SIZES[size].scaled(scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for corpus in ("librispeech", "iemocap"):
        if corpus not in corpora:
            continue
        root = out_dir / (LIBRI_ROOT if corpus == "librispeech" else IEMOCAP_ROOT)
        info_path = out_dir / f"synth_{corpus}.json"
        options = {
            "generator_version": GENERATOR_VERSION,
            "size": size,
            "scale": scale,
            "seed": seed,
            "dimensions": asdict(dims),
        }
        previous = json.loads(info_path.read_text()) if info_path.is_file() else None
        if (
            previous
            and previous.get("complete")
            and previous.get("options") == options
            and root.is_dir()
        ):
            logger.info("%s already generated in %s with these options: skipping", corpus, root)
            print(f"{corpus}: already generated in {root} with these options, skipping")
            reports[corpus] = dict(previous, skipped=True)
            continue
        if root.exists():
            # Only ever delete a folder this function made (never a real corpus).
            if previous is None:
                raise FileExistsError(
                    f"{root} exists but was not generated by qieemo synth (no {info_path}); "
                    "choose another --out or remove it yourself"
                )
            if previous.get("complete") and not overwrite:
                raise FileExistsError(
                    f"{root} was generated with other options (see {info_path}); "
                    "pass overwrite=True / --overwrite to replace it"
                )
            shutil.rmtree(root)
        info_path.write_text(json.dumps({"options": options, "complete": False}, indent=2) + "\n")
        started = time.perf_counter()
        if corpus == "librispeech":
            utts = plan_librispeech(size=dims, seed=seed)
            clips = [u.clip for u in utts]
        else:
            turns = plan_iemocap(size=dims, seed=seed)
            clips = [t.clip for t in turns]
        if workers is not None:
            n_workers = max(1, workers)
        else:
            n_workers = (os.cpu_count() or 1) if len(clips) >= 200 else 1
        lengths = _render_all(out_dir, clips, n_workers, progress, corpus)
        if corpus == "librispeech":
            _write_libri_text(out_dir, utts)
        else:
            _write_iemocap_text(out_dir, turns, lengths)
        seconds = time.perf_counter() - started
        hours = sum(lengths) / SAMPLE_RATE / 3600
        report = {
            "options": options,
            "complete": True,
            "clips": len(clips),
            "hours": round(hours, 4),
            "megabytes": round(_folder_megabytes(root), 2),
            "seconds": round(seconds, 2),
            "clips_per_second": round(len(clips) / seconds, 1),
            "workers": n_workers,
        }
        if corpus == "librispeech":
            report["per_split"] = {s: sum(u.split == s for u in utts) for s in LIBRI_SPLITS}
        else:
            report["labels"] = {lab: sum(t.label == lab for t in turns) for lab in LABELS}
        info_path.write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"{corpus}: {len(clips)} clips, {hours:.2f} h, {report['megabytes']:.1f} MB in "
            f"{seconds:.1f} s ({report['clips_per_second']:.1f} clips/s, {n_workers} worker(s)) -> {root}"
        )
        reports[corpus] = report
    return reports


