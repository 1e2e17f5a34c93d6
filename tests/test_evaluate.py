"""``qieemo evaluate``: an exported model scored on a labelled manifest."""

import csv
import json
import os

import numpy as np
import pytest

from qieemo_sb.audio import AudioError
from qieemo_sb.cli import main
from qieemo_sb.data.manifest import ManifestError
from qieemo_sb.evaluate import LabelError, evaluate_manifest, load_labels_map, parse_labels_map
from qieemo_sb.inference import QieemoClassifier
from qieemo_sb.metrics import classification_metrics
# The tiny exported model of the inference tests (fold 2, 3 epochs on the tiny synthetic IEMOCAP).
from test_inference import model_dir, trained_fold  # noqa: F401

LABELS = ["neu", "hap", "sad", "ang"]
N_CLIPS = 20


@pytest.fixture(scope="module")
def clips(trained_fold):  # noqa: F811
    """20 synthetic IEMOCAP turns (the fold's test, valid, then train ones): id -> entry."""
    folder = trained_fold / "manifests" / trained_fold.name
    entries = {}
    for split in ("test", "valid", "train"):
        entries.update(json.loads((folder / f"{split}.json").read_text()))
    chosen = dict(list(entries.items())[:N_CLIPS])
    assert len(chosen) == N_CLIPS and {e["emo"] for e in chosen.values()} <= set(LABELS)
    assert "exc" in {e["label"] for e in chosen.values()}  # the release label merged into hap
    return chosen


def write_manifest(path, clips, emo=lambda entry: entry["emo"]):
    """A CSV manifest of ``clips`` with wav paths relative to its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "wav", "emo", "duration"])
        for utt, entry in clips.items():
            writer.writerow([utt, os.path.relpath(entry["wav"], path.parent), emo(entry), entry["duration"]])
    return path


@pytest.fixture(scope="module")
def manifest(clips, tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("manifest") / "iemocap_tiny.csv", clips)


@pytest.fixture(scope="module")
def classifier(model_dir):  # noqa: F811
    return QieemoClassifier.from_hparams(source=str(model_dir), run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def reference(classifier, clips):
    """id -> (label, probabilities) from one ``classify_file`` per clip."""
    answers = {}
    for utt, entry in clips.items():
        out_prob, _, _, text_lab = classifier.classify_file(entry["wav"])
        answers[utt] = (text_lab[0], out_prob.exp()[0].tolist())
    return answers


def test_metrics_are_those_of_classify_file_per_clip(classifier, manifest, clips, reference, tmp_path):
    out = tmp_path / "out"
    metrics = evaluate_manifest(classifier, manifest, out_dir=out, batch_size=8)  # batches of 8, 8, 4

    assert metrics["labels"] == LABELS == classifier.labels
    assert metrics["ids"] == list(clips)  # manifest order
    predicted = [LABELS[p] for p in metrics["predictions"]]
    assert predicted == [reference[utt][0] for utt in clips]
    assert [LABELS[t] for t in metrics["targets"]] == [e["emo"] for e in clips.values()]
    wa = sum(reference[utt][0] == entry["emo"] for utt, entry in clips.items()) / N_CLIPS
    assert metrics["wa"] == wa
    expected = classification_metrics([LABELS.index(e["emo"]) for e in clips.values()],
                                      [LABELS.index(reference[utt][0]) for utt in clips], 4)
    for key in ("ua", "wf1", "macro_f1", "recall", "f1", "confusion"):
        assert metrics[key] == expected[key], key
    confusion = np.zeros((4, 4), dtype=int)
    for utt, entry in clips.items():
        confusion[LABELS.index(entry["emo"]), LABELS.index(reference[utt][0])] += 1
    assert metrics["confusion"] == confusion.tolist()
    assert metrics["per_class"]["sad"]["recall"] == expected["recall"][2]
    assert metrics["per_class"]["sad"]["support"] == sum(e["emo"] == "sad" for e in clips.values())
    assert metrics["counts"]["manifest_rows"] == metrics["counts"]["evaluated"] == N_CLIPS
    assert metrics["counts"]["dropped"] == 0 and metrics["labels_map"] == {}
    assert metrics["manifest"] == str(manifest.resolve()) and metrics["model_dir"] is None

    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "predictions.csv"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    with open(out / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == N_CLIPS
    assert list(rows[0]) == ["id", "wav", "label", "mapped_label", "prediction", "p_neu", "p_hap", "p_sad", "p_ang"]
    for row, (utt, entry) in zip(rows, clips.items()):
        assert (row["id"], row["wav"], row["label"], row["mapped_label"], row["prediction"]) == (
            utt, str(entry["wav"]), entry["emo"], entry["emo"], reference[utt][0])
        # 5 decimals in the file; padding in a batch changes the probabilities by < 1e-5.
        np.testing.assert_allclose([float(row[f"p_{lab}"]) for lab in LABELS], reference[utt][1], atol=2e-5)

    # One clip at a time is classify_file itself: the same answers.
    assert evaluate_manifest(classifier, manifest, batch_size=1)["predictions"] == metrics["predictions"]


def test_clips_longer_than_max_chunk_are_classified_as_classify_file_does(classifier, clips, tmp_path):
    some = dict(list(clips.items())[:6])
    durations = sorted(e["duration"] for e in some.values())
    chunk = (durations[2] + durations[3]) / 2  # 3 clips chunked, 3 in a padded batch
    classifier.hparams.max_chunk = chunk
    try:
        metrics = evaluate_manifest(classifier, write_manifest(tmp_path / "m.csv", some), batch_size=4)
        expected = [classifier.classify_file(e["wav"])[3][0] for e in some.values()]
    finally:
        classifier.hparams.max_chunk = None
    assert [LABELS[p] for p in metrics["predictions"]] == expected


def test_unknown_manifest_label_is_an_error_listing_both_label_sets(classifier, clips, tmp_path):
    # The release labels: 'exc' is the model's 'hap'.
    raw = write_manifest(tmp_path / "raw.csv", clips, emo=lambda e: e["label"])
    with pytest.raises(LabelError) as error:
        evaluate_manifest(classifier, raw, out_dir=tmp_path / "out")
    message = str(error.value)
    assert str(raw) in message
    assert "the manifest's labels ['exc'] are not labels of the model" in message
    assert "the model's labels: ['neu', 'hap', 'sad', 'ang']" in message
    assert "--labels-map" in message and "exc=-" in message
    assert isinstance(error.value, ValueError) and not (tmp_path / "out").exists()


def test_labels_map_renames_drops_and_refuses_unknown_targets(classifier, manifest, clips, reference, tmp_path):
    baseline = evaluate_manifest(classifier, manifest)  # no files: out_dir=None
    scores = ("wa", "ua", "wf1", "macro_f1", "confusion", "predictions", "targets")

    # The release labels mapped back (exc -> hap), as a string and as a JSON file.
    raw = write_manifest(tmp_path / "raw.csv", clips, emo=lambda e: e["label"])
    mapped = evaluate_manifest(classifier, raw, labels_map="exc=hap", out_dir=tmp_path / "out")
    assert {key: mapped[key] for key in scores} == {key: baseline[key] for key in scores}
    assert mapped["labels_map"] == {"exc": "hap"}
    with open(tmp_path / "out" / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["label"], r["mapped_label"]) for r in rows] == [(e["label"], e["emo"]) for e in clips.values()]
    (tmp_path / "map.json").write_text(json.dumps({"exc": "hap", "angry": "ang"}))
    from_file = evaluate_manifest(classifier, raw, labels_map=tmp_path / "map.json")
    assert from_file["wa"] == baseline["wa"] and from_file["labels_map_unused"] == ["angry"]

    # A class renamed in the manifest and mapped back.
    renamed = write_manifest(tmp_path / "renamed.csv", clips,
                             emo=lambda e: {"ang": "angry", "neu": "neutral"}.get(e["emo"], e["emo"]))
    back = evaluate_manifest(classifier, renamed, labels_map={"angry": "ang", "neutral": "neu"})
    assert {key: back[key] for key in scores} == {key: baseline[key] for key in scores}

    # Rows mapped to '-' or '' are dropped and counted.
    n_sad = sum(e["emo"] == "sad" for e in clips.values())
    n_neu = sum(e["emo"] == "neu" for e in clips.values())
    assert n_sad and n_neu
    dropped = evaluate_manifest(classifier, manifest, labels_map="sad=-,neu=", out_dir=tmp_path / "dropped")
    assert dropped["counts"]["dropped"] == n_sad + n_neu
    assert dropped["counts"]["evaluated"] == N_CLIPS - n_sad - n_neu
    kept = [utt for utt, e in clips.items() if e["emo"] not in ("sad", "neu")]
    assert dropped["ids"] == kept
    assert [LABELS[p] for p in dropped["predictions"]] == [reference[utt][0] for utt in kept]
    with open(tmp_path / "dropped" / "predictions.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == len(kept)

    # A map to a label the model does not have.
    with pytest.raises(LabelError, match=r"sends \{'exc': 'happy'\} to labels the model does not have; "
                                         r"the model's labels: \['neu', 'hap', 'sad', 'ang'\]"):
        evaluate_manifest(classifier, raw, labels_map="exc=happy")
    with pytest.raises(ManifestError, match="drops every row"):
        evaluate_manifest(classifier, manifest, labels_map="neu=-,hap=-,sad=-,ang=-")


def test_labels_map_parsing():
    assert parse_labels_map(" exc = hap ,happy=hap,, fru=-") == {"exc": "hap", "happy": "hap", "fru": "-"}
    assert load_labels_map(None) == {} and load_labels_map("a=") == {"a": ""}
    for bad, reason in (("exc", "not SOURCE=TARGET"), ("=hap", "no manifest label"),
                        ("exc=hap,exc=neu", "both 'hap' and 'neu'")):
        with pytest.raises(LabelError, match=reason):
            parse_labels_map(bad)


def test_cli_writes_the_files_and_names_a_missing_or_bad_wav(model_dir, manifest, clips, reference,  # noqa: F811
                                                            tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_dir), str(manifest), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{N_CLIPS}/{N_CLIPS}" in captured.err  # the progress bar
    wa = sum(reference[utt][0] == e["emo"] for utt, e in clips.items()) / N_CLIPS
    assert f"evaluated {N_CLIPS} clips of {manifest.resolve()}" in captured.out
    assert f"WA {100 * wa:.2f} %" in captured.out and "macro-F1" in captured.out
    assert str(out / "metrics.json") in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["wa"] == wa and metrics["model_dir"] == str(model_dir.resolve())
    with open(out / "predictions.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == N_CLIPS
    assert (out / "confusion.png").is_file()

    # An existing metrics.json is kept unless --overwrite.
    before = (out / "metrics.json").read_text()
    assert main(["evaluate", str(model_dir), str(manifest), "--out", str(out), "--no-progress",
                 "--labels-map", "sad=-"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err and (out / "metrics.json").read_text() == before
    assert main(["evaluate", str(model_dir), str(manifest), "--out", str(out), "--no-progress",
                 "--labels-map", "sad=-", "--overwrite"]) == 0
    captured = capsys.readouterr()
    n_sad = sum(e["emo"] == "sad" for e in clips.values())
    assert f"({n_sad} rows dropped by the labels map)" in captured.out and captured.err == ""

    # A missing wav: the message names the file (and the row); nothing is written.
    missing = tmp_path / "gone.wav"
    broken = dict(clips)
    first = next(iter(broken))
    broken[first] = {**broken[first], "wav": str(missing)}
    bad = write_manifest(tmp_path / "missing.csv", broken)
    assert main(["evaluate", str(model_dir), str(bad), "--out", str(tmp_path / "none"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "qieemo evaluate: error:" in err and "row 1" in err and f"wav file not found: {missing}" in err
    assert not (tmp_path / "none").exists()

    # A file that is not audio: an AudioError naming it, nothing written.
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    broken[first] = {**broken[first], "wav": str(not_audio), "duration": 1.0}
    bad = write_manifest(tmp_path / "not_audio.csv", broken)
    assert main(["evaluate", str(model_dir), str(bad), "--out", str(tmp_path / "none"), "--no-progress"]) == 1
    assert f"{not_audio}: cannot read audio" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    with pytest.raises(AudioError, match="notes.wav: cannot read audio"):
        evaluate_manifest(str(model_dir), bad)
