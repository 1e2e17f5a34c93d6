#!/usr/bin/env python3
"""Layer probe of the pretrained encoder (paper Table I): emotion WA of each block.

    python probe.py hparams/qieemo.yaml --data_folder /path/IEMOCAP_full_release \
        --pretrained_asr /path/to/stage1/output/pretrained
    python probe.py hparams/qieemo_whisper.yaml --data_folder /path/IEMOCAP_full_release \
        --backbone "{whisper_source: openai/whisper-base}"   # no stage-1 folder

The frozen encoder runs once per utterance; every block's output is
mean-pooled and cached (``<probe_folder>/block_features.pt``). The block
outputs themselves go through the stage-2 encoder cache
(``--encoder_cache_folder``, every block): a training run with
``--encoder_cache_blocks null`` on the same folder then reads them back
(qieemo_whisper.yaml stores every block by default). Then, for each
block and fold, a probe Linear(probe_hidden) -> ReLU -> Linear(n_classes) is
trained on the fold's training utterances, kept at its best validation WA and
tested. ``<probe_folder>`` (default ``<experiment_folder>/probe``) gets
probe_results.json, probe_results.md, probe_wa.png and the run's log.txt.
Progress bars go to stderr (``TQDM_DISABLE=1`` turns them off). Under
torchrun the processes share the encoding pass; the main one trains the
probes.
"""

import json
import os
import sys
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main
from tqdm import tqdm

from qieemo_sb.distributed import end_process_group
from qieemo_sb.encoder_cache import EncoderOutputCache
from qieemo_sb.metrics import aggregate_folds
from qieemo_sb.plots import plot_block_scores
from qieemo_sb.pretrained import check_exported_folder
from qieemo_sb.probe import extract_block_features, probe_table, train_probe
from qieemo_sb.hparams_files import create_experiment_folder, load_hparams
from train import prepare_manifests


def read_fold(folder, labels):
    """{split: (ids, class indices)} and {id: (wav, duration)} of one fold."""
    splits, audio = {}, {}
    for split in ("train", "valid", "test"):
        entries = json.loads(Path(folder, f"{split}.json").read_text(encoding="utf-8"))
        splits[split] = (list(entries), torch.tensor([labels.index(e["emo"]) for e in entries.values()]))
        audio.update({utt: (e["wav"], e["duration"]) for utt, e in entries.items()})
    return splits, audio


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)  # under torchrun; nothing otherwise
    hparams = load_hparams(hparams_file, overrides)
    if hparams["pretrained_asr"] is not None:  # null: a backbone that comes pretrained (Whisper)
        check_exported_folder(hparams["pretrained_asr"], need_encoder=hparams["load_pretrained_encoder"])
    folder = Path(hparams["probe_folder"])
    create_experiment_folder(folder, hparams_file, overrides)  # log.txt: the cache hits and misses
    folds, labels = hparams["folds"], list(hparams["labels"])
    run_on_main(prepare_manifests, args=[hparams, folds, folder / "manifests"])
    hparams["pretrainer"].set_collect_in(folder / "pretrained_asr")
    run_on_main(hparams["pretrainer"].collect_files)
    hparams["pretrainer"].load_collected()
    device = run_opts.get("device") or "cpu"  # parse_arguments gives None without --device; Brain's default
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"

    fold_data, audio = {}, {}
    for fold in folds:
        fold_data[fold], fold_audio = read_fold(folder / "manifests" / f"fold_{fold}", labels)
        audio.update(fold_audio)
    features = extract_block_features(
        {utt: wav for utt, (wav, _) in audio.items()},
        compute_features=hparams["compute_features"],
        normalize=hparams["normalize"],
        encoder=hparams["encoder"],
        sample_rate=hparams["sample_rate"],
        cache_file=folder / "block_features.pt",
        durations={utt: duration for utt, (_, duration) in audio.items()},
        device=device,
        encoder_cache=None if hparams["encoder_cache"] is None else EncoderOutputCache(
            hparams["encoder_cache_folder"], blocks=None, dtype=hparams["encoder_cache_dtype"]),
    )
    if not if_main_process():  # the probes are small: the main process trains them all
        end_process_group()
        return
    num_blocks = next(iter(features.values())).shape[0]
    blocks = list(range(1, num_blocks + 1))
    per_block = {}
    bar = tqdm(total=len(blocks) * len(folds), desc="probes", unit="probe", file=sys.stderr)
    for block in blocks:
        fold_scores = {}
        for fold in folds:
            bar.set_postfix(block=block, fold=fold)
            torch.manual_seed(hparams["seed"])
            data = {
                split: (torch.stack([features[utt][block - 1] for utt in ids]), targets)
                for split, (ids, targets) in fold_data[fold].items()
            }
            fold_scores[str(fold)] = train_probe(
                *data["train"], *data["valid"], *data["test"],
                n_classes=len(labels),
                hidden_size=hparams["probe_hidden"],
                epochs=hparams["probe_epochs"],
                lr=hparams["probe_lr"],
                dropout=hparams["probe_dropout"],
            )
            bar.update()
        per_block[str(block)] = {"folds": fold_scores, **aggregate_folds(list(fold_scores.values()))}
        mean = per_block[str(block)]["mean"]
        # tqdm.write: the line goes above the bar instead of through it.
        tqdm.write(f"block {block:2d}: WA {100 * mean['wa']:.2f}  UA {100 * mean['ua']:.2f}  WF1 {100 * mean['wf1']:.2f}",
                   file=sys.stdout)
        sys.stdout.flush()
    bar.close()

    title = f"Layer probe: {hparams['experiment_name']}"
    (folder / "probe_results.json").write_text(json.dumps({"labels": labels, "blocks": per_block}, indent=1), encoding="utf-8")
    (folder / "probe_results.md").write_text(probe_table(blocks, per_block, title), encoding="utf-8")
    plot_block_scores(
        blocks,
        [per_block[str(b)]["mean"]["wa"] for b in blocks],
        [per_block[str(b)]["std"]["wa"] for b in blocks],
        folder / "probe_wa.png",
        ylabel="WA",
        title=f"{title} ({len(folds)} folds)",
    )
    print(f"tables: {folder / 'probe_results.md'}, {folder / 'probe_results.json'}; plot: {folder / 'probe_wa.png'}")
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
