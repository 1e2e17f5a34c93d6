"""``qieemo demo``: from nothing to a trained, exported emotion model, on the embedded corpus.

One command runs the whole pipeline of the project on the synthetic corpora,
each step with the real recipe or tool a user would run by hand:

1. ``qieemo synth``: the synthetic LibriSpeech and IEMOCAP (``data/``);
2. stage 1, ``recipes/LibriSpeech/ASR/train.py`` with the tiny backbone 1,
   with dev/test error rates of the untrained and of the trained model
   (``asr/``, ``asr/error_rates.json``);
3. stage 2, ``recipes/IEMOCAP/Qieemo/run_folds.py`` with ``qieemo_tiny.yaml``:
   the 5 leave-one-session-out folds (2 at ``--size tiny``) of Qieemo and of
   the no-pretraining ablation (``emotion/qieemo``, ``emotion/no_pretraining``),
   and the table of both (``results.md``);
4. ``qieemo export`` of fold 1 (``model/``), then ``foreign_class`` on that
   folder classifies one held-out clip (session 1, never trained on) per class.

Every step leaves its results in ``--out`` and is skipped when they are
there; an interrupted recipe resumes from its last checkpoint, so running the
same command again continues. The recipes run from the source checkout
(``pip install -e .``), where ``recipes/`` is.

Example
-------
>>> paths = DemoPaths(Path("qieemo_demo"))
>>> paths.model.name, paths.experiment("no_pretraining").relative_to(paths.out).as_posix()
('model', 'emotion/no_pretraining')
>>> DEMO_SIZES["tiny"].emotion_epochs, DEMO_SIZES["tiny"].fold_overrides()
(1, ['--folds', '[1, 2]'])
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ASR_RECIPE = Path("LibriSpeech", "ASR")  # inside the recipes folder
EMOTION_RECIPE = Path("IEMOCAP", "Qieemo")
#: stage-2 experiments of the demo: name -> overrides of qieemo_tiny.yaml
EXPERIMENTS = {
    "qieemo": [],
    "no_pretraining": ["--load_pretrained_encoder", "False"],
}
EXPORTED_FOLD = 1


@dataclass(frozen=True)
class DemoSize:
    """How much data and training a demo run uses.

    Attributes
    ----------
    synth_size : str
        ``qieemo synth --size`` of both corpora.
    librispeech_scale, iemocap_scale : float
        ``qieemo synth --scale`` of each corpus.
    asr_units : int
        SentencePiece units of the ASR (a tiny corpus has too few words for more).
    asr_epochs, emotion_epochs : int
        Epochs of the stage-1 run and of each stage-2 fold.
    asr_warmup_steps : int
        Warm-up steps of the stage-1 learning rate (about one epoch).
    folds : tuple of int
        The IEMOCAP sessions held out in turn by each stage-2 experiment.
    """

    synth_size: str
    librispeech_scale: float
    iemocap_scale: float
    asr_units: int
    asr_epochs: int
    emotion_epochs: int
    asr_warmup_steps: int = 80
    folds: Tuple[int, ...] = (1, 2, 3, 4, 5)

    def asr_overrides(self) -> list:
        """The stage-1 recipe's command-line overrides for this size."""
        return ["--number_of_epochs", self.asr_epochs, "--output_neurons", self.asr_units,
                "--n_warmup_steps", self.asr_warmup_steps]

    def fold_overrides(self) -> list:
        """``run_folds.py``'s ``--folds`` for this size."""
        return ["--folds", f"[{', '.join(map(str, self.folds))}]"]


#: ``small``: the README's demo (20 minutes on 2 CPU cores); ``tiny``: the
#: pipeline in a few minutes (tests; 2 folds: the other sessions would repeat
#: the same steps), figures meaningless.
DEMO_SIZES = {
    "small": DemoSize(
        "small", librispeech_scale=1.0, iemocap_scale=0.5, asr_units=400, asr_epochs=6, emotion_epochs=4,
        asr_warmup_steps=800,
    ),
    "tiny": DemoSize(
        "tiny", librispeech_scale=1.0, iemocap_scale=1.0, asr_units=60, asr_epochs=1, emotion_epochs=1,
        folds=(1, 2),
    ),
}


class DemoPaths:
    """Where a demo run in ``out`` writes each thing (the summary lists them)."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        self.data = self.out / "data"
        self.asr = self.out / "asr"
        self.pretrained = self.asr / "pretrained"
        self.error_rates = self.asr / "error_rates.json"
        self.emotion = self.out / "emotion"
        self.model = self.out / "model"
        self.results = self.out / "results.md"
        self.held_out = self.out / "held_out_predictions.json"

    def experiment(self, name: str) -> Path:
        return self.emotion / name


def _step(number: int, title: str) -> None:
    print(f"\n=== [{number}/5] {title}", flush=True)


def run_command(command: Sequence[str], cwd: Path) -> None:
    """Runs a recipe; its output (SpeechBrain's progress bars) goes to the terminal."""
    print("$ " + " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=cwd)
    if completed.returncode != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited with code {completed.returncode} (command above)")


def make_corpora(paths: DemoPaths, size: DemoSize, progress: bool) -> Dict[str, dict]:
    """Step 1: the synthetic corpora (kept if generated earlier with the same options)."""
    from qieemo_sb.data.synthetic import generate

    reports = {}
    for corpus, scale in (("librispeech", size.librispeech_scale), ("iemocap", size.iemocap_scale)):
        reports.update(generate(
            out_dir=paths.data, size=size.synth_size, scale=scale, corpora=(corpus,), progress=progress
        ))
    return reports


def find_recipes(start: Path) -> Path:
    """The ``recipes`` folder of the checkout ``start`` is in (``start`` or one of its parents)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "recipes" / ASR_RECIPE / "train.py").is_file():
            return folder / "recipes"
    raise FileNotFoundError(
        f"no recipes/{ASR_RECIPE.as_posix()}/train.py in {start} or above it: run the demo inside the "
        "source checkout, or give its recipes folder with --recipes"
    )


def run_asr_recipe(recipes: Path, hparams_name: str, data: Path, output: Path, overrides: Sequence) -> dict:
    """Runs (or skips, when finished) stage 1 with ``hparams/<hparams_name>``; returns its error_rates.json."""
    rates_file = output / "error_rates.json"
    rates = json.loads(rates_file.read_text()) if rates_file.is_file() else {}
    if "after" in rates and (output / "pretrained" / "encoder.ckpt").is_file():
        print(f"stage 1 finished earlier ({output}), not run again")
        return rates
    recipe = recipes / ASR_RECIPE
    run_command([
        sys.executable, recipe / "train.py", recipe / "hparams" / hparams_name,
        "--data_folder", data, "--output_folder", output, "--error_rates_before_after", "True", *overrides,
    ], cwd=recipe)
    return json.loads(rates_file.read_text())


def run_folds_recipe(
    recipes: Path, hparams_name: str, data: Path, pretrained: Path, folder: Path, overrides: Sequence
) -> dict:
    """Every fold of one stage-2 experiment in ``folder`` (finished folds are skipped); its results.json."""
    recipe = recipes / EMOTION_RECIPE
    run_command([
        sys.executable, recipe / "run_folds.py", recipe / "hparams" / hparams_name,
        "--data_folder", data, "--pretrained_asr", pretrained,
        "--experiment_name", folder.name, "--experiment_folder", folder, *overrides,
    ], cwd=recipe)
    return json.loads((folder / "results.json").read_text())


def resolve_recipes(recipes: Optional[Path]) -> Path:
    """The ``--recipes`` folder given (checked), or the checkout's found from the current folder."""
    if recipes is None:
        return find_recipes(Path.cwd())
    if not (recipes / ASR_RECIPE / "train.py").is_file():
        raise FileNotFoundError(f"--recipes {recipes}: no {ASR_RECIPE.as_posix()}/train.py in it")
    return recipes


def train_asr(paths: DemoPaths, size: DemoSize, recipes: Path) -> dict:
    """Step 2: tiny backbone-1 ASR; returns error_rates.json (before and after training)."""
    return run_asr_recipe(
        recipes, "efficient_conformer_tiny.yaml", paths.data / "LibriSpeech", paths.asr,
        size.asr_overrides(),
    )


def error_rates_table(rates: dict) -> str:
    """Markdown table of error_rates.json: WER/CER per set, before and after training."""
    lines = [
        "| set | WER before | WER after | CER before | CER after |",
        "|---|---|---|---|---|",
    ]
    for name in rates["after"]:
        before, after = rates["before"][name], rates["after"][name]
        lines.append(
            f"| {name} | {before['WER']:.1f} | {after['WER']:.1f} | {before['CER']:.1f} | {after['CER']:.1f} |"
        )
    searches = rates["search"]
    test = ", ".join(
        f"{name} WER {r['WER']:.1f} / CER {r['CER']:.1f}" for name, r in rates["after_test_search"].items()
    )
    lines.append("")
    lines.append(
        f"Search: {searches['before, after']}. The recipe's test decoding ({searches['after_test_search']}, "
        f"averaged checkpoints): {test}."
    )
    return "\n".join(lines)


def train_emotion(paths: DemoPaths, size: DemoSize, recipes: Path) -> Dict[str, dict]:
    """Step 3: every fold of each experiment (finished folds are skipped by run_folds.py)."""
    summaries = {}
    for name, overrides in EXPERIMENTS.items():
        folder = paths.experiment(name)
        print(f"--- {name} ({folder})", flush=True)
        summaries[name] = run_folds_recipe(
            recipes, "qieemo_tiny.yaml", paths.data / "IEMOCAP_full_release", paths.pretrained, folder,
            ["--number_of_epochs", size.emotion_epochs, *size.fold_overrides(), *overrides],
        )
    return summaries


def comparison_table(summaries: Dict[str, dict]) -> str:
    """Markdown: WA / UA / WF1 (%) mean +- std over folds, one row per experiment."""
    lines = ["| experiment | folds | WA | UA | WF1 |", "|---|---|---|---|---|"]
    for name, summary in summaries.items():
        cells = [
            f"{100 * summary['mean'][key]:.2f} +- {100 * summary['std'][key]:.2f}" for key in ("wa", "ua", "wf1")
        ]
        lines.append(f"| {name} | {len(summary['folds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out_clips(fold_dir: Path, labels: Sequence[str]) -> List[dict]:
    """The first test clip of each class in the fold's test manifest (a session it never trained on)."""
    manifest = next(fold_dir.glob("manifests/*/test.json"), None)
    if manifest is None:
        raise FileNotFoundError(f"no test manifest under {fold_dir / 'manifests'}")
    entries = json.loads(manifest.read_text())
    clips = []
    for label in labels:
        for utterance_id, entry in sorted(entries.items()):
            if entry["label"] == label:
                clips.append({"id": utterance_id, "wav": entry["wav"], "target": label})
                break
    return clips


def export_and_classify(paths: DemoPaths) -> List[dict]:
    """Step 4: export fold 1, load it with foreign_class, classify held-out clips."""
    from speechbrain.inference.interfaces import foreign_class

    from qieemo_sb.export import export_emotion_model

    fold_dir = paths.experiment("qieemo") / f"fold_{EXPORTED_FOLD}"
    if not (paths.model / "export.json").is_file():
        export_emotion_model(fold_dir, paths.model)
    print(f"exported {fold_dir} -> {paths.model}")
    classifier = foreign_class(
        source=str(paths.model), pymodule_file="custom_interface.py", classname="QieemoClassifier"
    )
    results = []
    for clip in held_out_clips(fold_dir, classifier.labels):
        out_prob, _, _, text_lab = classifier.classify_file(clip["wav"])
        probabilities = dict(zip(classifier.labels, out_prob.exp()[0].tolist()))
        results.append(dict(clip, prediction=text_lab[0], probabilities=probabilities))
    paths.held_out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def held_out_table(results: List[dict]) -> str:
    lines = ["| clip | target | prediction | probabilities |", "|---|---|---|---|"]
    for r in results:
        probabilities = " ".join(f"{label}={p:.2f}" for label, p in r["probabilities"].items())
        lines.append(f"| {r['id']} | {r['target']} | {r['prediction']} | {probabilities} |")
    return "\n".join(lines)


def summary_files(paths: DemoPaths) -> Dict[str, Path]:
    """What the demo's summary names, description -> path (the test checks each exists)."""
    files = {
        "synthetic corpora": paths.data,
        "stage-1 run (log, checkpoints, WER files)": paths.asr,
        "stage-1 error rates before/after": paths.error_rates,
        "stage-1 encoder for stage 2": paths.pretrained,
        "results of the demo (tables above)": paths.results,
        "held-out predictions": paths.held_out,
        "exported model": paths.model,
    }
    for name in EXPERIMENTS:
        folder = paths.experiment(name)
        files[f"{name}: per-fold table"] = folder / "results.md"
        files[f"{name}: scores (JSON)"] = folder / "results.json"
        files[f"{name}: confusion matrix plot"] = folder / "confusion.png"
    return files


def run_demo(out: Path, size: str = "small", progress: bool = True, recipes: Optional[Path] = None) -> Dict[str, Path]:
    """Runs (or continues) the demo in ``out``; returns :func:`summary_files`.

    ``recipes``: the checkout's recipes folder (default: :func:`find_recipes`
    from the current folder).
    """
    if size not in DEMO_SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose from {sorted(DEMO_SIZES)}")
    recipes = resolve_recipes(recipes)
    settings, paths = DEMO_SIZES[size], DemoPaths(out)
    paths.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    _step(1, f"synthetic corpora ({settings.synth_size}) -> {paths.data}")
    make_corpora(paths, settings, progress)
    _step(2, f"stage 1: tiny backbone-1 ASR, {settings.asr_epochs} epochs -> {paths.asr}")
    rates = train_asr(paths, settings, recipes)
    asr_table = error_rates_table(rates)
    print(asr_table)
    _step(3, f"stage 2: {len(settings.folds)} folds of {' and '.join(EXPERIMENTS)}, "
             f"{settings.emotion_epochs} epochs each")
    summaries = train_emotion(paths, settings, recipes)
    emotion_table = comparison_table(summaries)
    print(emotion_table)
    _step(4, f"export fold {EXPORTED_FOLD} and classify held-out clips with foreign_class")
    predictions = export_and_classify(paths)
    predictions_table = held_out_table(predictions)
    print(predictions_table)
    paths.results.write_text(
        f"# qieemo demo ({size})\n\n## Stage 1: tiny ASR, dev/test error rates (%)\n\n{asr_table}\n\n"
        f"## Stage 2: leave-one-session-out test scores (%), mean +- std over {len(settings.folds)} folds\n\n"
        f"{emotion_table}\n\n## Held-out clips (session 1) through foreign_class\n\n{predictions_table}\n"
    )

    _step(5, f"summary (this run: {time.time() - started:.0f} s)")
    files = summary_files(paths)
    width = max(len(name) for name in files)
    for name, path in files.items():
        print(f"{name:<{width}}  {path}")
    print(
        "\nUse the model:\n"
        f"  qieemo predict {paths.model} your_clip.wav\n"
        "  python -c \"from speechbrain.inference.interfaces import foreign_class; "
        f"clf = foreign_class(source='{paths.model}', pymodule_file='custom_interface.py', "
        "classname='QieemoClassifier'); print(clf.classify_file('your_clip.wav')[3])\""
    )
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``qieemo demo``."""
    parser.add_argument("--out", type=Path, default=Path("qieemo_demo"), help="output folder (default qieemo_demo)")
    parser.add_argument(
        "--size", choices=sorted(DEMO_SIZES), default="small",
        help="small: the demo (about 20 min on 2 cores); tiny: a few minutes, for tests",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for the synthesis")
    parser.add_argument(
        "--recipes", type=Path, default=None,
        help="the recipes folder of the source checkout (default: found from the current folder upwards)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo demo``; returns the exit code."""
    try:
        run_demo(args.out, size=args.size, progress=not args.no_progress, recipes=args.recipes)
    except KeyboardInterrupt:
        print(f"\nqieemo demo: interrupted; run the same command again to continue from {args.out}")
        return 130
    except (RuntimeError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"qieemo demo: error: {error}", file=sys.stderr)
        return 1
    return 0
