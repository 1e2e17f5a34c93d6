"""The installed ``qieemo`` console command."""

import subprocess
import sys
from pathlib import Path

import qieemo_sb


def qieemo_command():
    # The console script sits beside the interpreter running the tests.
    script = Path(sys.executable).parent / "qieemo"
    assert script.is_file(), f"console script missing: {script} (pip install -e .)"
    return str(script)


def test_version():
    result = subprocess.run([qieemo_command(), "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"qieemo {qieemo_sb.__version__}"


def test_help_without_arguments():
    result = subprocess.run([qieemo_command()], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: qieemo" in result.stdout


def test_unknown_subcommand_fails():
    result = subprocess.run([qieemo_command(), "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
