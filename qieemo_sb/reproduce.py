"""``qieemo reproduce``: the paper's Tables I and II in miniature, on the synthetic corpora.

One command runs, with the real recipes, every experiment behind the two
tables of the paper:

1. ``qieemo synth``: the synthetic LibriSpeech and IEMOCAP (``data/``);
2. stage 1 of both backbones (``asr_backbone1/``, ``asr_backbone2/``), with
   dev/test error rates before and after training;
3. Table I: ``probe.py`` on backbone 1's frozen encoder (``probe/``);
4. Table II: the 5 leave-one-session-out folds (2 at ``--size tiny``) of
   Qieemo with each backbone and of the three ablations (``table2/<row>/``),
   each row with the same schedule (:func:`stage2_overrides`);
5. ``results.md``: the stage-1 error rates, both tables (per fold and mean
   +- std over folds; Table II also by what carries each test turn's emotion:
   wording, prosody or both), the probe plot and the time of every step
   (``times.json``).

Like ``qieemo demo``, each step leaves its results in ``--out`` and is
skipped when they are there (a fold or an epoch resumes from its checkpoint),
so running the same command again continues an interrupted run.

Example
-------
>>> [row.name for row in TABLE2_ROWS]
['qieemo_backbone1', 'qieemo_backbone2', 'no_cma', 'ppg_only', 'no_pretraining']
>>> REPRODUCE_SIZES["tiny"].emotion_epochs
1
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from qieemo_sb.demo import (
    EMOTION_RECIPE,
    DemoSize,
    error_rates_table,
    make_corpora,
    resolve_recipes,
    run_asr_recipe,
    run_command,
    run_folds_recipe,
)

#: stage-1 recipe YAML of each backbone (recipes/LibriSpeech/ASR/hparams)
ASR_HPARAMS = {1: "efficient_conformer_tiny.yaml", 2: "conformer_tiny.yaml"}
EMOTION_HPARAMS = "qieemo_tiny.yaml"
BACKBONE2_OVERRIDE = ["--backbone", "!include:qieemo_sb:hparams/backbones/conformer_tiny.yaml"]


@dataclass(frozen=True)
class TableRow:
    """One row of Table II: a stage-2 experiment.

    Attributes
    ----------
    name : str
        Folder name under ``table2/``.
    title : str
        The row's name in the paper's table.
    backbone : int
        Whose stage-1 encoder it loads (1 or 2).
    overrides : tuple
        Overrides of ``qieemo_tiny.yaml``.
    """

    name: str
    title: str
    backbone: int
    overrides: Tuple[str, ...] = ()


TABLE2_ROWS = (
    TableRow("qieemo_backbone1", "Qieemo, ASR backbone 1", 1),
    TableRow("qieemo_backbone2", "Qieemo, ASR backbone 2", 2, tuple(BACKBONE2_OVERRIDE)),
    TableRow("no_cma", "w/o CMA", 1, ("--cma", "null")),
    TableRow("ppg_only", "PPG only (w/o MMF)", 1, ("--mmf_blocks", "[12]")),
    TableRow("no_pretraining", "w/o ASR pretraining", 1, ("--load_pretrained_encoder", "False")),
)

#: ``small``: the tables (both corpora at their small size); ``tiny``: every
#: step in minutes (tests; 2 folds per Table II row), figures meaningless.
REPRODUCE_SIZES = {
    "small": DemoSize(
        "small", librispeech_scale=1.0, iemocap_scale=1.0, asr_units=400, asr_epochs=15, emotion_epochs=15,
        asr_warmup_steps=800,
    ),
    "tiny": DemoSize(
        "tiny", librispeech_scale=1.0, iemocap_scale=1.0, asr_units=60, asr_epochs=1, emotion_epochs=1,
        folds=(1, 2),
    ),
}


def stage2_overrides(epochs: int, cache_folder: Path) -> list:
    """Overrides of ``qieemo_tiny.yaml`` shared by every Table II row.

    The head trains on the frozen stage-1 encoder for all ``epochs``: each clip
    is encoded once (the cache, shared by the rows that load the same
    encoder), so an epoch costs the head's passes only, where fine-tuning
    would run the encoder forward and backward on every batch (the measured
    trade-off: benchmarks/RESULTS.md, stage 2). With about 600 training turns
    per fold the head overfits within a few epochs, so it gets the
    small-corpus regularisers of qieemo.yaml (label smoothing, random crops
    of the encoder output, an average of its weights).

    Example
    -------
    >>> stage2_overrides(15, Path("cache"))[:4]
    ['--number_of_epochs', '15', '--freeze_encoder_epochs', '15']
    """
    return [
        "--number_of_epochs", str(epochs), "--freeze_encoder_epochs", str(epochs),
        "--encoder_cache_folder", str(cache_folder),
        "--label_smoothing", "0.1",
        "--train_crop", "!new:qieemo_sb.modules.regularization.RandomTimeCrop {share: 0.6}",
        "--head_average_decay", "0.99",
    ]


class ReproducePaths:
    """Where a reproduce run in ``out`` writes each thing."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        self.data = self.out / "data"
        self.probe = self.out / "probe"
        self.table2 = self.out / "table2"
        self.results = self.out / "results.md"
        self.times = self.out / "times.json"

    def asr(self, backbone: int) -> Path:
        return self.out / f"asr_backbone{backbone}"

    def pretrained(self, backbone: int) -> Path:
        return self.asr(backbone) / "pretrained"

    def row(self, row: TableRow) -> Path:
        return self.table2 / row.name


class StepClock:
    """Wall time of each step, summed over the runs that worked on it, in ``times.json``."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: Dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, step: Callable, *args):
        """``step(*args)``, timed under ``name``; returns what it returns."""
        started = time.time()
        result = step(*args)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - started, 1)
        self.path.write_text(json.dumps(self.seconds, indent=1) + "\n")
        return result


def run_probe(paths: ReproducePaths, recipes: Path) -> str:
    """Table I: probe.py on backbone 1's encoder; returns probe_results.md."""
    table = paths.probe / "probe" / "probe_results.md"
    if table.is_file():
        print(f"probe finished earlier ({paths.probe}), not run again")
    else:
        recipe = recipes / EMOTION_RECIPE
        run_command([
            sys.executable, recipe / "probe.py", recipe / "hparams" / EMOTION_HPARAMS,
            "--data_folder", paths.data / "IEMOCAP_full_release", "--pretrained_asr", paths.pretrained(1),
            "--experiment_folder", paths.probe,
        ], cwd=recipe)
    lines = table.read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[1:] if lines[0].startswith("# ") else lines).strip()  # its title: ours


def table2(summaries: Dict[str, dict]) -> str:
    """Markdown: Table II, mean +- std over folds, then every fold's WA."""
    folds = sorted(next(iter(summaries.values()))["folds"], key=int)
    lines = [
        "| row | UA | WA | WF1 | " + " | ".join(f"WA fold {k}" for k in folds) + " |",
        "|---" * (4 + len(folds)) + "|",
    ]
    for row in TABLE2_ROWS:
        summary = summaries[row.name]
        cells = [f"{100 * summary['mean'][key]:.2f} +- {100 * summary['std'][key]:.2f}" for key in ("ua", "wa", "wf1")]
        per_fold = [f"{100 * summary['folds'][k]['wa']:.2f}" for k in folds]
        lines.append(f"| {row.title} | " + " | ".join(cells + per_fold) + " |")
    return "\n".join(lines)


#: Columns of :func:`carrier_table`: the carrier of a turn's emotion (plans.py's ``mode``).
CARRIERS = (("both", "wording and prosody"), ("prosody", "prosody only"), ("wording", "wording only"),
            ("neutral", "neutral turns"))


def carrier_table(summaries: Dict[str, dict], settings: DemoSize) -> str:
    """Markdown: each Table II row's test accuracy (%) per emotion carrier, all folds pooled.

    The synthetic IEMOCAP plans what carries each turn's emotion
    (:mod:`qieemo_sb.data.synthetic`): about half the emotional turns carry it
    in both wording and prosody, a quarter in prosody only and a quarter in
    wording only. The plan is rebuilt from the corpus options (seed 0, as
    ``make_corpora`` writes it) and matched to the test turns of each fold in
    the rows' results.json (``summaries``, as :func:`table2` reads them).
    """
    from qieemo_sb.data.synthetic import SIZES, plan_iemocap

    size = SIZES[settings.synth_size].scaled(settings.iemocap_scale)
    carrier = {turn.utt_id: turn.mode for turn in plan_iemocap(size=size, seed=0)}
    header = "| row | " + " | ".join(title for _, title in CARRIERS) + " |"
    lines = [header, "|---" * (1 + len(CARRIERS)) + "|"]
    for row in TABLE2_ROWS:
        correct, total = dict.fromkeys(carrier.values(), 0), dict.fromkeys(carrier.values(), 0)
        for fold in summaries[row.name]["folds"].values():
            for utt_id, target, predicted in zip(fold["ids"], fold["targets"], fold["predictions"]):
                total[carrier[utt_id]] += 1
                correct[carrier[utt_id]] += target == predicted
        cells = [f"{100 * correct[m] / total[m]:.1f} ({total[m]})" if total[m] else "-" for m, _ in CARRIERS]
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def times_table(seconds: Dict[str, float]) -> str:
    lines = ["| step | minutes |", "|---|---|"]
    lines += [f"| {name} | {value / 60:.1f} |" for name, value in seconds.items()]
    lines.append(f"| **total** | {sum(seconds.values()) / 60:.1f} |")
    return "\n".join(lines)


def run_reproduce(
    out: Path, size: str = "small", progress: bool = True, recipes: Optional[Path] = None
) -> Path:
    """Runs (or continues) every step in ``out``; returns the path of results.md."""
    if size not in REPRODUCE_SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(REPRODUCE_SIZES)}")
    recipes = resolve_recipes(recipes)
    settings, paths = REPRODUCE_SIZES[size], ReproducePaths(out)
    paths.out.mkdir(parents=True, exist_ok=True)
    clock = StepClock(paths.times)

    print(f"\n=== synthetic corpora ({settings.synth_size}) -> {paths.data}", flush=True)
    clock.run("synthetic corpora", make_corpora, paths, settings, progress)
    asr_tables = {}
    for backbone, hparams_name in ASR_HPARAMS.items():
        print(f"\n=== stage 1, backbone {backbone} ({hparams_name}) -> {paths.asr(backbone)}", flush=True)
        rates = clock.run(
            f"stage 1, backbone {backbone}", run_asr_recipe, recipes, hparams_name, paths.data / "LibriSpeech",
            paths.asr(backbone), settings.asr_overrides(),
        )
        asr_tables[backbone] = error_rates_table(rates)
    print(f"\n=== Table I: layer probe of backbone 1 -> {paths.probe}", flush=True)
    probe = clock.run("Table I: layer probe", run_probe, paths, recipes)
    summaries = {}
    for row in TABLE2_ROWS:
        print(f"\n=== Table II: {row.title} -> {paths.row(row)}", flush=True)
        summaries[row.name] = clock.run(
            f"Table II: {row.title}", run_folds_recipe, recipes, EMOTION_HPARAMS, paths.data / "IEMOCAP_full_release",
            paths.pretrained(row.backbone), paths.row(row),
            [*stage2_overrides(settings.emotion_epochs, paths.table2 / "encoder_cache"), *settings.fold_overrides(),
             *row.overrides],
        )
    sections = [f"# qieemo reproduce ({size})", "## Stage 1: dev/test error rates (%)"]
    for backbone, table in asr_tables.items():
        sections += [f"### Backbone {backbone} ({ASR_HPARAMS[backbone]})", table]
    probe_plot = (paths.probe / "probe" / "probe_wa.png").relative_to(paths.out).as_posix()
    sections += [
        "## Table I: linear probe of each block of backbone 1 (frozen encoder)", probe,
        f"![probe]({probe_plot})",
        f"## Table II: leave-one-session-out test scores (%), mean +- std over {len(settings.folds)} folds",
        table2(summaries),
        "### Accuracy (%) by what carries the emotion (test turns of all folds, their number in brackets)",
        carrier_table(summaries, settings),
        "## Time of each step", times_table(clock.seconds),
    ]
    paths.results.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"\n{paths.results.read_text(encoding='utf-8')}")
    return paths.results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``qieemo reproduce``."""
    parser.add_argument("--out", type=Path, default=Path("qieemo_reproduce"), help="output folder")
    parser.add_argument(
        "--size", choices=sorted(REPRODUCE_SIZES), default="small",
        help="small: the tables on the small synthetic corpora; tiny: every step in minutes, for tests",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for the synthesis")
    parser.add_argument("--recipes", type=Path, default=None, help="the recipes folder of the source checkout")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo reproduce``; returns the exit code."""
    try:
        run_reproduce(args.out, size=args.size, progress=not args.no_progress, recipes=args.recipes)
    except KeyboardInterrupt:
        print(f"\nqieemo reproduce: interrupted; run the same command again to continue from {args.out}")
        return 130
    except (RuntimeError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"qieemo reproduce: error: {error}", file=sys.stderr)
        return 1
    return 0
