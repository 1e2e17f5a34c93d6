"""``qieemo reproduce --size tiny``: both tables, the results file, and a second run that skips every step."""

import json
import re
import subprocess
import sys

from qieemo_sb.reproduce import ASR_HPARAMS, REPRODUCE_SIZES, TABLE2_ROWS, ReproducePaths
from recipe_runs import ROOT


def reproduce(out):
    command = [sys.executable, "-m", "qieemo_sb.cli", "reproduce", "--size", "tiny", "--out", str(out), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)


def test_tiny_reproduce_writes_both_tables_then_skips_every_finished_step(tmp_path):
    paths = ReproducePaths(tmp_path / "reproduce")
    first = reproduce(paths.out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    results = paths.results.read_text()
    for backbone, hparams_name in ASR_HPARAMS.items():
        assert f"### Backbone {backbone} ({hparams_name})" in results
        rates = json.loads((paths.asr(backbone) / "error_rates.json").read_text())
        assert set(rates["after"]) == {"dev-clean", "test-clean"}
    probe = json.loads((paths.probe / "probe" / "probe_results.json").read_text())
    assert len(probe["blocks"]) == 12
    assert "![probe](probe/probe/probe_wa.png)" in results and (paths.probe / "probe" / "probe_wa.png").is_file()
    table2, by_carrier = results.split("## Table II")[1].split("### Accuracy (%) by what carries the emotion")

    def rows(section):
        return [line for line in section.splitlines() if any(line.startswith(f"| {r.title} |") for r in TABLE2_ROWS)]

    folds = REPRODUCE_SIZES["tiny"].folds
    assert len(rows(table2)) == 5 and f"mean +- std over {len(folds)} folds" in results
    for line in rows(table2):
        assert line.count("+-") == 3 and len(line.strip("|").split("|")) == 3 + 1 + len(folds)  # UA WA WF1, title
    # Every test turn of the folds is counted under exactly one carrier.
    test_turns = sum(
        len((paths.row(TABLE2_ROWS[0]) / f"fold_{k}" / "test_predictions.csv").read_text().splitlines()) - 1
        for k in folds
    )
    assert len(rows(by_carrier)) == 5
    for line in rows(by_carrier):
        assert sum(int(n) for n in re.findall(r"\((\d+)\)", line)) == test_turns
    for row in TABLE2_ROWS:
        summary = json.loads((paths.row(row) / "results.json").read_text())
        assert sorted(summary["folds"], key=int) == [str(k) for k in folds]
    times = json.loads(paths.times.read_text())
    assert len(times) == 1 + 2 + 1 + 5 and all(seconds > 0 for seconds in times.values())
    assert "| **total** |" in results

    # Each row built its own backbone: the plain conformer (no strided block) for backbone 2 only.
    for row in TABLE2_ROWS:
        resolved = (paths.row(row) / "fold_1" / "hyperparams.yaml").read_text()
        strides = re.search(r"block_strides: (?:&\w+ )?\[([\d, ]+)\]", resolved).group(1)
        assert ("2" not in strides.split(", ")) == (row.backbone == 2), (row.name, strides)
    # One encoder pass per clip and encoder: Qieemo and w/o CMA (backbone 1, blocks 7-12) share their cache
    # entry; PPG only (block 12), backbone 2 and the random encoder have their own.
    assert len(list((paths.table2 / "encoder_cache").iterdir())) == 4

    written = {row.name: (paths.row(row) / "fold_1" / "test_metrics.json").stat().st_mtime_ns for row in TABLE2_ROWS}
    second = reproduce(paths.out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("stage 1 finished earlier") == 2 and "probe finished earlier" in second.stdout
    for row in TABLE2_ROWS:
        assert (paths.row(row) / "fold_1" / "test_metrics.json").stat().st_mtime_ns == written[row.name]
    assert paths.results.read_text().split("## Time of each step")[0] == results.split("## Time of each step")[0]
