#!/usr/bin/env python3
"""Stage 1 of Qieemo: a joint CTC/attention conformer ASR on LibriSpeech.

fbank -> global normalizer -> conformer encoder (backbone 1 or 2, from the
package's backbone YAML) -> CTC head on the last block + transformer decoder;
SentencePiece unigram units, SpecAugment and speed perturbation, Noam
schedule, dynamic batching, checkpoint averaging, greedy (validation) and
CTC-scored beam search (test).

Run (see the README for the data and the GPU commands)::

    python train.py hparams/efficient_conformer.yaml --data_folder /path/LibriSpeech
    python train.py hparams/conformer.yaml --data_folder /path/LibriSpeech

Besides SpeechBrain's usual output folder (train_log.txt, WER files per test
set, checkpoints), the run writes ``<output_folder>/pretrained/``: the
averaged encoder, the normalizer, the tokenizer and the resolved backbone
YAML. That folder is what stage 2 (recipes/IEMOCAP/Qieemo) loads.
"""

import copy
import json
import logging
import sys
import time
from pathlib import Path

import sentencepiece
import speechbrain as sb
import torch
from speechbrain.tokenizers.SentencePiece import SentencePiece
from speechbrain.utils.distributed import if_main_process, run_on_main

from librispeech_prepare import prepare_librispeech
from qieemo_sb.distributed import (
    DistributedBrainMixin,
    end_process_group,
    gather_lists,
    mean_over_processes,
)
from qieemo_sb.hparams_files import create_experiment_folder, load_hparams
from qieemo_sb.pretrained import export_asr_encoder

logger = logging.getLogger(__name__)


class ASR(DistributedBrainMixin, sb.core.Brain):
    """Joint CTC/attention training of a Qieemo backbone."""

    #: error_rates() sets it: the validation search on every batch, any epoch.
    search_every_batch = False

    def compute_forward(self, batch, stage):
        """wav -> encoder -> CTC and decoder log-probabilities (+ hypotheses)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        # Features in float32 under --precision fp16/bf16 (log-mel and the
        # normalizer's statistics lose too much in 16 bits).
        augment = stage == sb.Stage.TRAIN and self._augment_this_epoch()
        with torch.autocast(device_type=self.device_type, enabled=False):
            if augment:
                wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
            feats = self.hparams.compute_features(wavs)
            feats = self.modules.normalize(feats, wav_lens, epoch=self.hparams.epoch_counter.current)
            if augment:
                feats, wav_lens = self.hparams.fea_augment(feats, wav_lens)

        encoded = self.modules.encoder(feats, wav_lens)
        memory, memory_lengths = encoded.hidden_states[-1], encoded.lengths[-1]
        memory_rel_lens = memory_lengths.float() / memory.shape[1]
        ctc_logp = self.hparams.log_softmax(self.modules.ctc_lin(memory))
        decoded = self.modules.decoder(tokens_bos, memory, memory_lengths)
        seq_logp = self.hparams.log_softmax(self.modules.seq_lin(decoded))

        hyps = None
        if stage == sb.Stage.TEST:
            hyps, _, _, _ = self.hparams.test_search(memory.detach(), memory_rel_lens)
        elif stage == sb.Stage.VALID and (self.search_every_batch or self._search_this_epoch()):
            hyps, _, _, _ = self.hparams.valid_search(memory.detach(), memory_rel_lens)
        return ctc_logp, seq_logp, memory_rel_lens, hyps

    def _augment_this_epoch(self):
        # A small model learns clean speech first; augmentation pays once it overfits.
        return self.hparams.epoch_counter.current >= self.hparams.augment_from_epoch

    def _search_this_epoch(self):
        # First and last epochs always: their error rates frame the run.
        epoch = self.hparams.epoch_counter.current
        return epoch in (1, self.hparams.number_of_epochs) or (
            epoch % self.hparams.valid_search_interval == 0
        )

    def compute_objectives(self, predictions, batch, stage):
        """CTC weight * CTC loss + (1 - weight) * label-smoothed attention NLL."""
        ctc_logp, seq_logp, memory_rel_lens, hyps = predictions
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        tokens, tokens_lens = batch.tokens
        loss_seq = self.hparams.seq_cost(seq_logp, tokens_eos, length=tokens_eos_lens)
        loss_ctc = self.hparams.ctc_cost(ctc_logp, tokens, memory_rel_lens, tokens_lens)
        weight = self.hparams.ctc_weight
        loss = weight * loss_ctc + (1 - weight) * loss_seq

        if stage != sb.Stage.TRAIN:
            self.acc_metric.append(seq_logp, tokens_eos, tokens_eos_lens)
            if hyps is not None:
                words = [self.tokenizer.decode_ids(h).split() for h in hyps]
                targets = [w.split() for w in batch.wrd]
                self.wer_metric.append(batch.id, words, targets)
                self.cer_metric.append(batch.id, words, targets)
        return loss

    def on_stage_start(self, stage, epoch):
        """Fresh error-rate and accuracy trackers for evaluation stages."""
        self.stage_started = time.time()
        if stage != sb.Stage.TRAIN:
            self.acc_metric = self.hparams.acc_computer()
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def gather_metrics(self):
        """Under torchrun: the error rates and accuracy of every process's shard."""
        for metric in (self.wer_metric, self.cer_metric):
            metric.ids, metric.scores = gather_lists(metric.ids), gather_lists(metric.scores)
        counts = gather_lists([(self.acc_metric.correct, self.acc_metric.total)])
        self.acc_metric.correct = sum(correct for correct, _ in counts)
        self.acc_metric.total = sum(total for _, total in counts)

    def on_stage_end(self, stage, stage_loss, epoch):
        """Logs, checkpoints (keeping the best by validation loss), writes WERs."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, "seconds": round(time.time() - self.stage_started, 1)}
            return
        stats["loss"] = stage_loss = mean_over_processes(stage_loss, count=self.evaluation_items)
        self.gather_metrics()
        stats["ACC"] = self.acc_metric.summarize()
        if stage == sb.Stage.TEST or self._search_this_epoch():
            stats["WER"] = self.wer_metric.summarize("error_rate")
            stats["CER"] = self.cer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            lr = self.hparams.noam_annealing.current_lr
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr, "steps": self.optimizer_step},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ACC": stats["ACC"], "loss": stage_loss, "epoch": epoch},
                max_keys=["ACC"],
                num_to_keep=self.hparams.avg_checkpoints,
            )
        elif stage == sb.Stage.TEST:
            self.test_stats = stats
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            if if_main_process():
                with open(self.hparams.test_wer_file, "w", encoding="utf-8") as out:
                    self.wer_metric.write_stats(out)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Noam learning rate, per optimiser step."""
        if should_step:
            self.hparams.noam_annealing(self.optimizer)

    def load_averaged_model(self):
        """Loads the average of the kept checkpoints (best validation accuracy)."""
        checkpoints = self.checkpointer.find_checkpoints(
            max_key="ACC", max_num_checkpoints=self.hparams.avg_checkpoints
        )
        if not checkpoints:
            raise RuntimeError(f"no checkpoint to average in {self.checkpointer.checkpoints_dir}")
        averaged = sb.utils.checkpoints.average_checkpoints(checkpoints, recoverable_name="model")
        self.hparams.model.load_state_dict(averaged, strict=True)
        self.hparams.model.eval()
        logger.info("Averaged %d checkpoints: %s", len(checkpoints), [c.path.name for c in checkpoints])

    def error_rates(self, datasets, loader_kwargs, untrained=False):
        """WER and CER (%) of the current weights with the validation search, per dataset.

        ``untrained``: the normalizer has no statistics before training, so a
        throw-away copy of it gathers them on the evaluated data first (the
        real one, and so training, is untouched).
        """
        rates = {}
        self.modules.eval()
        original_normalizer = self.modules.normalize
        if untrained:
            self.modules.normalize = self._normalizer_fitted_on(copy.deepcopy(original_normalizer), datasets.values())
        self.search_every_batch = True
        try:
            for name, dataset in datasets.items():
                self.on_stage_start(sb.Stage.VALID, None)
                loader = self.make_dataloader(dataset, sb.Stage.VALID, **loader_kwargs)
                with torch.no_grad():
                    for batch in loader:
                        predictions = self.compute_forward(batch, sb.Stage.VALID)
                        self.compute_objectives(predictions, batch, sb.Stage.VALID)
                self.gather_metrics()
                rates[name] = {
                    "WER": self.wer_metric.summarize("error_rate"),
                    "CER": self.cer_metric.summarize("error_rate"),
                }
        finally:
            self.search_every_batch = False
            self.modules.normalize = original_normalizer
        return rates

    @torch.no_grad()
    def _normalizer_fitted_on(self, normalizer, datasets):
        """``normalizer`` with the statistics of every clip of ``datasets``, in eval mode.

        Every process reads every clip, one at a time: under torchrun the
        normalizer's per-call all-reduce then pairs up, and all get the same
        statistics.
        """
        normalizer.train()
        for dataset in datasets:
            for item in dataset:
                feats = self.hparams.compute_features(item["sig"][None].to(self.device))
                normalizer(feats, torch.ones(1, device=self.device))
        return normalizer.eval()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Evaluates the checkpoint average, not the last epoch."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.load_averaged_model()


def train_or_load_tokenizer(hparams):
    """SentencePiece unigram model: the given file, or one trained on train.csv."""
    if hparams["tokenizer_file"]:
        path = Path(hparams["tokenizer_file"])
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer_file not found: {path}")
        return sentencepiece.SentencePieceProcessor(model_file=str(path))

    def train():  # kept when it exists; returns nothing to broadcast
        SentencePiece(
            model_dir=hparams["tokenizer_folder"],
            vocab_size=hparams["output_neurons"],
            annotation_train=hparams["train_csv"],
            annotation_read="wrd",
            annotation_format="csv",
            model_type="unigram",
            character_coverage=1.0,
            bos_id=hparams["bos_index"],
            eos_id=hparams["eos_index"],
        )

    run_on_main(train)  # under torchrun the others wait, then read the main's model
    model = Path(hparams["tokenizer_folder"], f"{hparams['output_neurons']}_unigram.model")
    return sentencepiece.SentencePieceProcessor(model_file=str(model))


def write_error_rates(path, rates, hparams):
    """error_rates.json: WER/CER (%) per set "before" and "after" training, and which search made them."""
    rates["search"] = {
        "before, after": type(hparams["valid_search"]).__name__,
        "after_test_search": type(hparams["test_search"]).__name__,
    }
    if if_main_process():
        path.write_text(json.dumps(rates, indent=2) + "\n")


def dataio_prepare(hparams, tokenizer):
    """Train/valid/test datasets with audio and token pipelines."""
    data_folder = hparams["data_folder"]

    def load(csv):
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv, replacements={"data_root": data_folder}
        )

    train_data = load(hparams["train_csv"]).filtered_sorted(sort_key="duration")
    valid_data = load(hparams["valid_csv"]).filtered_sorted(sort_key="duration")
    test_datasets = {
        Path(csv).stem: load(csv).filtered_sorted(sort_key="duration")
        for csv in hparams["test_csvs"]
    }
    datasets = [train_data, valid_data, *test_datasets.values()]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_bos", "tokens_eos", "tokens")
    def text_pipeline(wrd):
        yield wrd
        tokens = tokenizer.encode_as_ids(wrd)
        yield torch.LongTensor([hparams["bos_index"]] + tokens)
        yield torch.LongTensor(tokens + [hparams["eos_index"]])
        yield torch.LongTensor(tokens)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens_bos", "tokens_eos", "tokens"])

    train_sampler = sb.dataio.sampler.DynamicBatchSampler(
        train_data,
        max_batch_length=hparams["max_batch_length_train"],
        num_buckets=hparams["num_buckets"],
        length_func=lambda item: item["duration"],
        shuffle=True,
        batch_ordering="random",
        max_batch_ex=hparams["max_batch_ex"],
    )
    return train_data, valid_data, test_datasets, train_sampler


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)  # under torchrun; nothing otherwise
    hparams = load_hparams(hparams_file, overrides)
    create_experiment_folder(hparams["output_folder"], hparams_file, overrides)

    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "merge_lst": hparams["train_splits"],
            "merge_name": "train.csv",
            "skip_prep": hparams["skip_prep"],
        },
    )
    tokenizer = train_or_load_tokenizer(hparams)
    train_data, valid_data, test_datasets, train_sampler = dataio_prepare(hparams, tokenizer)

    asr_brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["Adam"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokenizer = tokenizer
    # error_rates_before_after: dev/test error rates of the untrained and of
    # the final model with the same search, in error_rates.json. The "before"
    # figures are taken once, before the first epoch (a resumed run has them).
    rates_file = Path(hparams["output_folder"], "error_rates.json")
    rates = json.loads(rates_file.read_text()) if rates_file.is_file() else {}
    rate_sets = {Path(hparams["valid_csv"]).stem: valid_data, **test_datasets}
    if hparams["error_rates_before_after"] and "before" not in rates:
        rates["before"] = asr_brain.error_rates(rate_sets, hparams["valid_loader_kwargs"], untrained=True)
        write_error_rates(rates_file, rates, hparams)
    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs={"batch_sampler": train_sampler, **hparams["train_loader_kwargs"]},
        valid_loader_kwargs=hparams["valid_loader_kwargs"],
    )
    test_rates = {}
    for name, test_data in test_datasets.items():
        asr_brain.hparams.test_wer_file = str(Path(hparams["output_folder"], f"wer_{name}.txt"))
        asr_brain.evaluate(test_data, max_key="ACC", test_loader_kwargs=hparams["test_loader_kwargs"])
        test_rates[name] = {key: asr_brain.test_stats[key] for key in ("WER", "CER")}

    # What stage 2 needs: the averaged encoder, the normalizer, the tokenizer
    # and the backbone YAML that rebuilds this exact encoder.
    asr_brain.load_averaged_model()
    if hparams["error_rates_before_after"]:
        rates["after"] = asr_brain.error_rates(rate_sets, hparams["valid_loader_kwargs"])
        rates["after_test_search"] = test_rates
        write_error_rates(rates_file, rates, hparams)
    if if_main_process():
        export_asr_encoder(
            out_dir=hparams["pretrained_folder"],
            resolved_hparams=Path(hparams["output_folder"], "hyperparams.yaml"),
            encoder=hparams["encoder"],
            normalizer=hparams["normalize"],
            tokenizer=tokenizer,
        )
    del asr_brain
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
