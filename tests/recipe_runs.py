"""Running the recipes' scripts from tests (a subprocess each, like a user)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "IEMOCAP" / "Qieemo"
ASR_RECIPE = ROOT / "recipes" / "LibriSpeech" / "ASR"


def run(script, *args, cwd=RECIPE, check=True, env=None, launcher=()):
    """Runs ``python script args`` in ``cwd``; ``result.output`` is stdout + stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    result = subprocess.run([sys.executable, *launcher, str(script), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    result.output = result.stdout + result.stderr  # SpeechBrain logs uncaught errors to stdout
    return result


def emotion_args(data, pretrained, experiment_folder, *extra):
    """Command-line options of the emotion recipe's train.py for a test run."""
    return ["--data_folder", data, "--pretrained_asr", pretrained,
            "--experiment_folder", experiment_folder, "--device", "cpu", *extra]


def torchrun(script, *args, cwd=RECIPE, check=True):
    """``torchrun --standalone --nproc_per_node=2 script args`` on CPU (gloo), one thread per process."""
    return run(script, *args, "--device", "cpu", "--distributed_backend", "gloo", cwd=cwd, check=check,
               env={"OMP_NUM_THREADS": "1"},
               launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
