#!/usr/bin/env python3
"""Stage 2 of Qieemo: emotion recognition with the stage-1 ASR encoder, one fold.

wav -> fbank -> stage-1 normalizer (frozen) -> stage-1 encoder (fine-tuned
with its own, lower learning rate; frozen for the first epochs) -> MMF over
blocks 7-12 -> CMA to the last block -> masked mean -> classifier. The YAML
wires all of it; the ablations of the paper are overrides (see the README).

Run one fold (IEMOCAP session ``--fold`` is the test set)::

    python train.py hparams/qieemo.yaml --data_folder /path/IEMOCAP_full_release \
        --pretrained_asr /path/to/stage1/output/pretrained --fold 1

or one's own data (a CSV/JSON manifest, any label set; see the README)::

    python train.py hparams/qieemo.yaml --manifest my_data.csv \
        --labels "[calm, happy, angry]" --pretrained_asr ... --fold 1

run_folds.py runs every fold and writes the cross-fold tables. The fold's
output folder gets train_log.txt, the resolved hyperparams.yaml, the
checkpoints (best validation UA kept), label_encoder.txt,
test_predictions.csv and, last, test_metrics.json.
"""

import logging
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from qieemo_sb.audio import load_audio
from qieemo_sb.data.iemocap import prepare_iemocap
from qieemo_sb.data.manifest import prepare_manifest_folds
from qieemo_sb.distributed import (
    DistributedBrainMixin,
    end_process_group,
    gather_lists,
    mean_over_processes,
)
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.folds import write_fold_results
from qieemo_sb.hparams_files import create_experiment_folder, load_hparams
from qieemo_sb.inference import label_encoder_for
from qieemo_sb.features import fbank_with_lengths
from qieemo_sb.metrics import EmotionMetricStats, embedding_collapse
from qieemo_sb.modules.regularization import WeightAverage
from qieemo_sb.pretrained import check_exported_folder

logger = logging.getLogger(__name__)
SELECTION_SCORES = {"WA": "wa", "UA": "ua", "WF1": "wf1"}
KEEP_CHOICES = [*SELECTION_SCORES, "epoch"]  # epoch: the last one


class EmotionBrain(DistributedBrainMixin, sb.core.Brain):
    """Fine-tunes the encoder and trains the MMF/CMA head on emotion labels."""

    head_average = None  # a WeightAverage of the head when head_average_decay is set

    @property
    def encoder_frozen(self):
        return self.hparams.epoch_counter.current <= self.hparams.freeze_encoder_epochs

    @property
    def reads_encoder_cache(self):
        """Frozen weights give each clip the same outputs: read them from the cache."""
        return self.hparams.encoder_cache is not None and self.encoder_frozen

    def encode(self, wavs, wav_lens):
        """Padded waveforms -> the encoder's block outputs."""
        feats, feat_lens = fbank_with_lengths(self.hparams.compute_features, self.hparams.normalize, wavs, wav_lens)
        return self.modules.encoder(feats, feat_lens)

    def compute_forward(self, batch, stage):
        """wav -> the head's output (logits and pooled embeddings)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and (self.encoder_frozen or not self.hparams.encoder_dropout):
            self.modules.encoder.eval()  # dropout off
        if self.reads_encoder_cache:
            encoded = self.hparams.encoder_cache.encoded(
                batch.id, batch.wav, lambda rows: self.encode(wavs[rows], wav_lens[rows])
            )
            encoded = EncoderOutput(
                *[[None if t is None else t.to(self.device) for t in field] for field in encoded[:2]],
                encoded.subsampling,
            )
        elif stage == sb.Stage.TRAIN and self.encoder_frozen:
            with torch.no_grad():
                encoded = self.encode(wavs, wav_lens)
        else:
            encoded = self.encode(wavs, wav_lens)
        if stage == sb.Stage.TRAIN:
            if self.hparams.train_crop is not None:
                encoded = self.hparams.train_crop(encoded)
            return self.modules.head(encoded)
        return self.evaluation_head(encoded)

    @property
    def evaluation_head(self):
        """The head that is validated, tested and exported: the weight average if any."""
        return self.modules.head if self.head_average is None else self.head_average.averaged

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Moves the weight average after each optimiser step."""
        if should_step and self.head_average is not None:
            self.head_average.update(self.modules.head)

    def compute_objectives(self, predictions, batch, stage):
        """NLL of the target class; evaluation stages also collect the scores."""
        log_probs = self.hparams.log_softmax(predictions.logits)
        targets = batch.emo_encoded.data.squeeze(-1)
        loss = self.hparams.compute_cost(log_probs, targets)
        if stage != sb.Stage.TRAIN:
            self.metrics.append(batch.id, log_probs, targets)
            self.embeddings.append(predictions.embedding.detach().cpu())
        if stage == sb.Stage.TEST:
            self.test_probabilities.extend(log_probs.detach().exp().cpu().tolist())
        return loss

    def init_optimizers(self):
        """Two optimisers: the head's and the encoder's (lower learning rate)."""
        self.optimizer = self.hparams.opt_class(self.modules.head.parameters())
        self.encoder_optimizer = self.hparams.encoder_opt_class(self.modules.encoder.parameters())
        self.optimizers_dict = {"head": self.optimizer, "encoder": self.encoder_optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)
            self.checkpointer.add_recoverable("encoder_optimizer", self.encoder_optimizer)

    def freeze_optimizers(self, optimizers):
        """The encoder's optimiser sits out the frozen epochs."""
        if self.encoder_frozen:
            return {name: opt for name, opt in optimizers.items() if name != "encoder"}
        return optimizers

    def _normalizer_to_device(self):
        # Not in `modules`, so Brain neither moves it nor switches it to
        # training mode, in which it would update its stage-1 statistics.
        self.hparams.normalize.to(self.device).eval()

    def on_fit_start(self):
        """Places the frozen normalizer and sets up the weight average, then recovers."""
        self._normalizer_to_device()
        if self.hparams.head_average_decay is not None:
            self.head_average = WeightAverage(self.modules.head, decay=self.hparams.head_average_decay)
            self.checkpointer.add_recoverable("head_average", self.head_average.averaged)
        super().on_fit_start()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Places the normalizer and loads the kept checkpoint."""
        self._normalizer_to_device()
        super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def on_stage_start(self, stage, epoch):
        """Fresh score collectors; the encoder cache keyed by the current weights."""
        self.stage_started = time.time()
        if self.reads_encoder_cache:
            self.hparams.encoder_cache.bind(
                encoder=self.modules.encoder,
                normalize=self.hparams.normalize,
                compute_features=self.hparams.compute_features,
            )
        if stage != sb.Stage.TRAIN:
            self.metrics = EmotionMetricStats(n_classes=self.hparams.n_classes)
            self.embeddings = []
            self.test_probabilities = []

    def _gather_evaluation(self, stage_loss):
        """Under torchrun: every process's scores, and the loss averaged over every clip."""
        stage_loss = mean_over_processes(stage_loss, count=self.evaluation_items)
        for name in ("ids", "targets", "predictions"):
            setattr(self.metrics, name, gather_lists(getattr(self.metrics, name)))
        self.test_probabilities = gather_lists(self.test_probabilities)
        self.embeddings = gather_lists(self.embeddings)
        return stage_loss

    def _run_facts(self):
        """Encoder cache counts (and resets them) and embedding collapse, for the log."""
        facts = {}
        cache = self.hparams.encoder_cache
        if cache is not None and cache.hits + cache.misses:
            facts["encoder cache"] = (
                f"{cache.hits} read, {cache.misses} encoded, {cache.size_bytes() / 2**20:.1f} MB in {cache.folder}"
            )
            cache.reset_counts()
        if len(self.embeddings) and sum(len(e) for e in self.embeddings) > 1:
            collapse = embedding_collapse(torch.cat(self.embeddings))
            facts.update({name: round(value, 3) for name, value in collapse.items()})
            if collapse["duplicate_embeddings"] > 0.5 or collapse["constant_units"] > 0.9:
                logger.warning(
                    "the emotion head gives most clips the same embedding (%s): it ignores its input",
                    collapse,
                )
        return facts

    def on_stage_end(self, stage, stage_loss, epoch):
        """Logs; anneals, checkpoints (validation); writes the test results."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, "seconds": round(time.time() - self.stage_started, 1)}
            return
        stats["loss"] = stage_loss = self._gather_evaluation(stage_loss)
        scores = self.metrics.summarize()
        stats.update({name: round(100 * scores[key], 2) for name, key in SELECTION_SCORES.items()})
        if stage == sb.Stage.VALID:
            _, lr = self.hparams.lr_annealing(stage_loss)
            _, lr_encoder = self.hparams.lr_annealing_encoder(stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, lr)
            sb.nnet.schedulers.update_learning_rate(self.encoder_optimizer, lr_encoder)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr, "lr_encoder": lr_encoder,
                            "encoder": "frozen" if self.encoder_frozen else "trained", **self._run_facts()},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={**stats, "epoch": epoch}, max_keys=[self.hparams.keep_best_by]
            )
        else:
            epoch_kept = self.hparams.epoch_counter.current
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch kept": epoch_kept, **self._run_facts()}, test_stats=stats
            )
            if if_main_process():
                write_fold_results(
                    self.hparams.output_folder,
                    ids=self.metrics.ids,
                    targets=self.metrics.targets,
                    predictions=self.metrics.predictions,
                    probabilities=self.test_probabilities,
                    labels=self.hparams.labels,
                    run_facts={
                        "fold": self.hparams.fold,
                        "epoch": epoch_kept,
                        "seconds": round(time.time() - self.hparams.start_time),
                    },
                )


def prepare_manifests(hparams, folds, save_folder):
    """Writes ``<save_folder>/fold_<k>/{train,valid,test}.json`` for ``folds``."""
    data_folder, manifest = hparams["data_folder"], hparams["manifest"]
    if bool(data_folder) == bool(manifest):
        raise ValueError(
            "give exactly one data source: --data_folder (IEMOCAP_full_release) or "
            f"--manifest (a CSV/JSON of one's own); got data_folder={data_folder!r}, "
            f"manifest={manifest!r}"
        )
    unknown = [k for k in folds if str(k) not in [str(f) for f in hparams["folds"]]]
    if unknown:
        raise ValueError(f"fold {unknown[0]!r} is not one of folds {hparams['folds']}")
    if manifest:
        # Speakers are dealt to all folds, so the manifest gets every fold.
        prepare_manifest_folds(
            manifest=manifest,
            save_folder=save_folder,
            labels=hparams["labels"],
            folds=hparams["folds"],
            valid_ratio=hparams["valid_ratio"],
            seed=hparams["split_seed"],
        )
    else:
        prepare_iemocap(
            data_folder=data_folder,
            save_folder=save_folder,
            folds=[int(k) for k in folds],
            valid_mode=hparams["valid_mode"],
            valid_ratio=hparams["valid_ratio"],
            seed=hparams["split_seed"],
        )


def dataio_prepare(hparams, manifests):
    """Train/valid/test datasets: audio at the backbone's rate, encoded labels."""
    label_encoder = label_encoder_for(hparams["labels"])  # output order = labels
    if if_main_process():
        label_encoder.save(Path(hparams["save_folder"], "label_encoder.txt"))

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav, sample_rate=hparams["sample_rate"])

    @sb.utils.data_pipeline.takes("emo")
    @sb.utils.data_pipeline.provides("emo", "emo_encoded")
    def label_pipeline(emo):
        yield emo
        yield label_encoder.encode_label_torch(emo)

    datasets = {}
    for split in ("train", "valid", "test"):
        path = manifests / f"{split}.json"
        data = sb.dataio.dataset.DynamicItemDataset.from_json(json_path=path)
        unknown = sorted({entry["emo"] for entry in data.data.values()} - set(hparams["labels"]))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} are not in labels {hparams['labels']}")
        data.add_dynamic_item(audio_pipeline)
        data.add_dynamic_item(label_pipeline)
        data.set_output_keys(["id", "wav", "sig", "emo_encoded"])
        # Evaluation in length order: less padding, same results.
        datasets[split] = data if split == "train" else data.filtered_sorted(sort_key="duration")
    return datasets


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)  # under torchrun; nothing otherwise
    hparams = load_hparams(hparams_file, overrides)
    hparams["start_time"] = time.time()
    if hparams["keep_best_by"] not in KEEP_CHOICES:
        raise ValueError(f"keep_best_by must be one of {KEEP_CHOICES}, got {hparams['keep_best_by']!r}")
    if hparams["pretrained_asr"] is not None:  # null: a backbone that comes pretrained (Whisper)
        check_exported_folder(hparams["pretrained_asr"], need_encoder=hparams["load_pretrained_encoder"])
    create_experiment_folder(hparams["output_folder"], hparams_file, overrides)

    run_on_main(
        prepare_manifests,
        kwargs={"hparams": hparams, "folds": [hparams["fold"]], "save_folder": hparams["manifest_folder"]},
    )
    datasets = dataio_prepare(hparams, Path(hparams["manifest_folder"], f"fold_{hparams['fold']}"))

    # Stage-1 weights first; a checkpoint of this fold, if any, then wins.
    run_on_main(hparams["pretrainer"].collect_files)
    hparams["pretrainer"].load_collected()

    brain = EmotionBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_loader_kwargs"],
        valid_loader_kwargs=hparams["test_loader_kwargs"],
    )
    brain.evaluate(
        datasets["test"],
        max_key=hparams["keep_best_by"],
        test_loader_kwargs=hparams["test_loader_kwargs"],
    )
    del brain
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
