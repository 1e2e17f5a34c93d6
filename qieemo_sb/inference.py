"""Inference with a trained Qieemo model: SpeechBrain's ``Pretrained`` interface.

:class:`QieemoClassifier` answers like SpeechBrain's ``EncoderClassifier``
(``classify_file``, ``classify_batch``, ``encode_batch``) and adds
``classify_timeline`` for long recordings. It is what ``foreign_class`` builds
from a folder written by ``qieemo export`` (whose ``custom_interface.py``
re-exports this class)::

    from speechbrain.inference.interfaces import foreign_class
    clf = foreign_class(source="exported_model", pymodule_file="custom_interface.py",
                        classname="QieemoClassifier")
    out_prob, score, index, text_lab = clf.classify_file("clip.wav")

Audio of any rate libsndfile reads (wav, flac, ogg, ...) is downmixed to mono
and resampled to the model's rate. A file that cannot be read, is empty,
holds NaN/inf samples or is shorter than ``min_duration`` (0.25 s in the
exported hyperparameters) is an :class:`~qieemo_sb.audio.AudioError` naming
the file; silence gets a normal answer.

Example
-------
>>> import torch
>>> from qieemo_sb.hparams_files import load_hparams
>>> hparams = load_hparams("recipes/IEMOCAP/Qieemo/hparams/qieemo_tiny.yaml",  # from the checkout's root
...                        {"pretrained_asr": "unused", "data_folder": "unused"})
>>> with torch.no_grad():  # random weights; the normalizer needs some statistics
...     _ = hparams["normalize"].train()(hparams["compute_features"](torch.randn(1, 16000)), torch.ones(1))
>>> classifier = QieemoClassifier.from_training_hparams(hparams, run_opts={"device": "cpu"})
>>> out_prob, score, index, text_lab = classifier.classify_batch(torch.randn(2, 16000))
>>> out_prob.shape, score.shape, index.shape, len(text_lab)
(torch.Size([2, 4]), torch.Size([2]), torch.Size([2]), 2)
>>> classifier.encode_batch(torch.zeros(1, 8000)).shape  # silence: a normal answer
torch.Size([1, 64])
"""

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.interfaces import Pretrained

from qieemo_sb.audio import AudioError, load_audio
from qieemo_sb.cpu_inference import optimize_for_inference
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.features import fbank_with_lengths, feature_frames
from qieemo_sb.modules.emotion_head import EmotionHeadOutput
from qieemo_sb.timeline import BlockFrames, chunk_grid, head_input, window_frames, window_starts

#: Shortest clip accepted: a quarter of a second is 3 frames after backbone 1's
#: 80 ms subsampling, and too little speech to carry an emotion.
MIN_DURATION = 0.25
#: Default timeline windows (seconds): IEMOCAP turns average 4.5 s.
TIMELINE_WINDOW, TIMELINE_HOP = 3.0, 1.0


def label_encoder_for(labels: Sequence[str]) -> CategoricalEncoder:
    """A label encoder whose indices follow ``labels`` (the model's output order)."""
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(labels)
    encoder.expect_len(len(labels))
    return encoder


class EmotionSegment(NamedTuple):
    """One window of :meth:`QieemoClassifier.classify_timeline`.

    Attributes
    ----------
    start, end : float
        Window bounds in seconds from the start of the file.
    label : str
        The most probable class.
    probabilities : dict
        Class -> probability (they sum to 1).
    """

    start: float
    end: float
    label: str
    probabilities: Dict[str, float]


class QieemoClassifier(Pretrained):
    """A trained Qieemo emotion classifier (fbank -> encoder -> MMF/CMA head).

    Built by ``foreign_class`` / ``from_hparams`` on an exported folder, or by
    :meth:`from_backbone` (random weights, for speed measurements). The
    hyperparameters must provide the modules ``compute_features``,
    ``normalize``, ``encoder`` and ``head``, a ``label_encoder`` whose classes
    are in the classifier's output order, ``sample_rate``, ``min_duration``,
    ``max_chunk`` (see :meth:`classify_file`) and the timeline defaults
    ``timeline_window`` and ``timeline_hop`` (seconds).

    Once built, its modules are converted to their inference forms
    (:func:`~qieemo_sb.cpu_inference.optimize_for_inference` with ``kernels``,
    which ``foreign_class`` and ``from_hparams`` pass on as keywords as they
    do ``precision``): same outputs and checkpoint, faster; ``kernels=None``
    keeps the plain modules. ``precision="bf16"`` multiplies in bfloat16
    (the linear products; sums, norms, attention and outputs stay float32),
    ``"int8"`` the conformer feed-forward products in int8 (the others in
    bfloat16 where the CPU has bfloat16 kernels, in float32 elsewhere).
    """

    HPARAMS_NEEDED = ["label_encoder", "sample_rate", "min_duration", "max_chunk", "timeline_window", "timeline_hop"]
    MODULES_NEEDED = ["compute_features", "normalize", "encoder", "head"]

    def __init__(
        self,
        modules: Optional[Dict[str, torch.nn.Module]] = None,
        hparams: Optional[Dict] = None,
        run_opts: Optional[Dict] = None,
        freeze_params: bool = True,
        kernels: Optional[str] = "auto",
        precision: str = "fp32",
    ):
        super().__init__(modules=modules, hparams=hparams, run_opts=run_opts, freeze_params=freeze_params)
        if kernels is not None:
            optimize_for_inference(self.mods, kernels=kernels, precision=precision)
        elif precision != "fp32":
            raise ValueError(f"precision={precision!r} is an inference form: it needs kernels (not None)")
        n_outputs = self.mods.head.classifier.output.w.out_features
        label_encoder = self.hparams.label_encoder
        if len(label_encoder) != n_outputs:
            raise ValueError(
                f"the labels {self.labels} are {len(label_encoder)} classes but the classifier "
                f"has {n_outputs} outputs: `labels` must be the classes the model was trained on"
            )

    @classmethod
    def from_training_hparams(
        cls,
        hparams: Dict,
        run_opts: Optional[Dict] = None,
        max_chunk: Optional[float] = None,
        kernels: Optional[str] = "auto",
        precision: str = "fp32",
    ) -> "QieemoClassifier":
        """The classifier made of a loaded recipe YAML's objects, with their current weights.

        ``hparams`` is what ``load_hparams("hparams/qieemo.yaml", ...)`` returns:
        its ``compute_features``, ``normalize``, ``encoder``, ``head``,
        ``labels`` and ``sample_rate`` are used as they are (random weights
        for speed measurements, or whatever was loaded into them). The
        normalizer must hold statistics (the stage-1 ones, or any).
        ``max_chunk`` is that of :meth:`classify_file`; ``kernels`` and
        ``precision`` those of the class (the modules are converted in place).
        """
        if hparams["normalize"].count == 0:
            raise ValueError(
                "the feature normalizer has no statistics: load the stage-1 normalizer "
                "(the recipe's pretrainer) or let it see some audio in training mode"
            )
        label_encoder = label_encoder_for(hparams["labels"])
        modules = {name: hparams[name] for name in cls.MODULES_NEEDED}
        inference_hparams = {
            "label_encoder": label_encoder,
            "sample_rate": hparams["sample_rate"],
            "min_duration": MIN_DURATION,
            "max_chunk": max_chunk,
            "timeline_window": TIMELINE_WINDOW,
            "timeline_hop": TIMELINE_HOP,
        }
        return cls(modules=modules, hparams=inference_hparams, run_opts=run_opts, kernels=kernels,
                   precision=precision)

    @property
    def labels(self) -> List[str]:
        """The classes, in the order of the model's outputs."""
        encoder = self.hparams.label_encoder
        return [encoder.ind2lab[index] for index in range(len(encoder))]

    # ------------------------------------------------------------ batches
    def _check_batch(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor]):
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [batch, samples], got shape {tuple(wavs.shape)}")
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        if wav_lens.shape != (wavs.shape[0],):
            raise ValueError(
                f"wav_lens must be [batch] = [{wavs.shape[0]}] relative lengths, got shape {tuple(wav_lens.shape)}"
            )
        finite_rows = torch.isfinite(wavs).all(dim=1)
        if not finite_rows.all():
            rows = torch.nonzero(~finite_rows).flatten().tolist()
            raise ValueError(f"wavs rows {rows} hold NaN or infinite samples")
        durations = wav_lens.cpu() * wavs.shape[1] / self.hparams.sample_rate
        short = [i for i, seconds in enumerate(durations.tolist()) if seconds < self.hparams.min_duration - 1e-6]
        if short:
            raise ValueError(
                f"wavs rows {short} are shorter than the {self.hparams.min_duration} s minimum "
                f"({[round(durations[i].item(), 3) for i in short]} s)"
            )
        return wavs.to(self.device, torch.float32), wav_lens.to(self.device, torch.float32)

    def _forward_head(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor]):
        wavs, wav_lens = self._check_batch(wavs, wav_lens)
        # inference_mode (cheaper than no_grad: no version counters) makes tensors
        # that cannot enter autograd later, so what leaves here are ordinary copies.
        with torch.inference_mode():
            out = self.mods.head(self._encode(wavs, wav_lens))
        return EmotionHeadOutput(*(tensor.clone() for tensor in out))

    def _encode(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> EncoderOutput:
        """The encoder's outputs for a padded batch (call under inference mode)."""
        feats, feat_lens = fbank_with_lengths(self.mods.compute_features, self.mods.normalize, wavs, wav_lens)
        return self.mods.encoder(feats, feat_lens)

    def encode_batch(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pooled emotion embeddings (what the classifier reads).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) waveforms at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[batch]`` lengths relative to the longest (SpeechBrain's
            convention); None means no padding.

        Returns
        -------
        torch.Tensor
            ``[batch, dim]``: CMA's output averaged over the valid frames.
        """
        return self._forward_head(wavs, wav_lens).embedding

    def classify_batch(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[str]]:
        """Classifies a padded batch, as ``EncoderClassifier.classify_batch`` does.

        Arguments are those of :meth:`encode_batch`.

        Returns
        -------
        out_prob : torch.Tensor
            ``[batch, n_classes]`` log-probabilities.
        score : torch.Tensor
            ``[batch]`` log-probability of the chosen class.
        index : torch.Tensor
            ``[batch]`` index of the chosen class.
        text_lab : list of str
            The chosen classes' labels.
        """
        return self._decide(self._forward_head(wavs, wav_lens).logits)

    def _decide(self, logits: torch.Tensor):
        """``[batch, n_classes]`` logits -> classify_batch's (out_prob, score, index, text_lab)."""
        out_prob = torch.log_softmax(logits, dim=-1)
        score, index = torch.max(out_prob, dim=-1)
        return out_prob, score, index, self.hparams.label_encoder.decode_torch(index)

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None):
        """Same as :meth:`classify_batch`."""
        return self.classify_batch(wavs, wav_lens)

    # ------------------------------------------------------------ files
    def load_audio(self, path: Union[str, Path]) -> torch.Tensor:
        """``[samples]`` mono waveform at the model's rate; errors name the file."""
        return load_audio(path, sample_rate=self.hparams.sample_rate, min_duration=self.hparams.min_duration)

    def classify_file(self, path: Union[str, Path]):
        """Classifies one audio file; returns :meth:`classify_batch`'s tuple (batch of 1).

        The whole clip is encoded at once, as in training, unless the model's
        ``max_chunk`` (seconds) is set and the clip is longer: it is then cut
        into equal chunks of at most ``max_chunk`` seconds, encoded as one
        batch, and their embeddings are averaged (weighted by length) before
        the classifier. Attention cost grows with the square of the length,
        so chunks keep long clips linear in time, at the price of context
        across chunk boundaries. For an emotion per stretch of a long
        recording, use :meth:`classify_timeline`.
        """
        wav = self.load_audio(path)
        chunk = self.hparams.max_chunk
        if chunk is None or wav.shape[0] <= chunk * self.hparams.sample_rate:
            return self.classify_batch(wav.unsqueeze(0))
        embedding = self._chunked_embedding(wav, chunk)
        with torch.inference_mode():
            logits = self.mods.head.classifier(embedding)
        return self._decide(logits.clone())

    def _chunked_embedding(self, wav: torch.Tensor, chunk_seconds: float) -> torch.Tensor:
        """``[1, dim]``: length-weighted mean of the embeddings of equal chunks."""
        n_chunks = math.ceil(wav.shape[0] / (chunk_seconds * self.hparams.sample_rate))
        size = math.ceil(wav.shape[0] / n_chunks)
        padded = torch.nn.functional.pad(wav, (0, n_chunks * size - wav.shape[0])).view(n_chunks, size)
        samples = torch.full((n_chunks,), float(size))
        samples[-1] = wav.shape[0] - (n_chunks - 1) * size
        embeddings = self.encode_batch(padded, samples / size)
        weights = (samples / samples.sum()).to(embeddings.device)
        return (embeddings * weights.unsqueeze(1)).sum(dim=0, keepdim=True)

    def classify_timeline(
        self,
        path: Union[str, Path],
        window: Optional[float] = None,
        hop: Optional[float] = None,
        batch_size: int = 8,
        one_pass: bool = False,
        chunk: float = 20.0,
        context: float = 2.0,
    ) -> List[EmotionSegment]:
        """An emotion per window of a long recording.

        Windows of ``window`` seconds start every ``hop`` seconds; a last
        window ends at the end of the file so that every sample is covered
        (a file shorter than ``window`` is one window). Each window is
        encoded alone and classified as :meth:`classify_batch` would, as the
        model was trained. ``one_pass=True`` encodes the recording once
        instead, in chunks of ``chunk`` seconds with ``context`` seconds of
        audio on either side, and classifies each window from the block
        outputs of its frames (:mod:`qieemo_sb.timeline`): about
        ``window / hop`` times less encoding, but each window is then heard
        in its surroundings, so labels can differ. Either way memory stays
        bounded whatever the file's length.

        Arguments
        ---------
        path : str or Path
            Any audio file libsndfile reads, any rate and channels.
        window, hop : float, optional
            Seconds; default: the model's ``timeline_window`` and ``timeline_hop``.
        batch_size : int
            Windows classified together.
        one_pass : bool
            Encode the recording once and cut the windows from it.
        chunk, context : float
            Seconds encoded at once, and of context on either side.

        Returns
        -------
        list of EmotionSegment
            In time order.
        """
        window = self.hparams.timeline_window if window is None else float(window)
        hop = self.hparams.timeline_hop if hop is None else float(hop)
        if window < self.hparams.min_duration:
            raise ValueError(f"window is {window} s, below the {self.hparams.min_duration} s minimum")
        if hop <= 0:
            raise ValueError(f"hop must be positive, got {hop}")
        if chunk <= 0 or context < 0:
            raise ValueError(f"chunk must be positive and context not negative, got {chunk} and {context}")
        with self._open_audio(path) as (audio, rate, total):
            size = min(round(window * rate), total)
            starts = window_starts(total, size, max(1, round(hop * rate)))
            if one_pass:
                probabilities = self._windows_in_one_pass(path, audio, rate, total, starts, size, batch_size,
                                                          chunk, context)
            else:
                probabilities = self._windows_one_by_one(path, audio, rate, starts, size, batch_size)
        return [
            EmotionSegment(
                start=start / rate,
                end=(start + size) / rate,
                label=self.labels[int(probs.argmax())],
                probabilities=dict(zip(self.labels, probs.tolist())),
            )
            for start, probs in zip(starts, probabilities)
        ]

    @contextmanager
    def _open_audio(self, path) -> Iterator[Tuple[soundfile.SoundFile, int, int]]:
        """The open file, its rate and its frame count; a clear error for an unreadable,
        empty or too short file."""
        try:
            audio = soundfile.SoundFile(str(path))
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise AudioError(f"{path}: cannot read audio ({error})") from error
        with audio:
            rate, total = audio.samplerate, audio.frames
            if total == 0:
                raise AudioError(f"{path}: the file holds no audio samples")
            if total / rate < self.hparams.min_duration:
                raise AudioError(
                    f"{path}: {total / rate:.3f} s of audio is shorter than the "
                    f"{self.hparams.min_duration} s minimum"
                )
            yield audio, rate, total

    def _read_span(self, path, audio: soundfile.SoundFile, rate: int, start: int, size: int) -> torch.Tensor:
        """``[samples]`` mono float32 samples ``start .. start + size`` of the file, at its rate."""
        audio.seek(start)
        data = audio.read(size, dtype="float32", always_2d=True)
        if not np.isfinite(data).all():
            raise AudioError(f"{path}: NaN or infinite samples in {start / rate:.2f}-{(start + size) / rate:.2f} s")
        return torch.from_numpy(data.mean(axis=1))

    def _to_model_rate(self, wavs: torch.Tensor, rate: int) -> torch.Tensor:
        if rate == self.hparams.sample_rate:
            return wavs
        return torchaudio.functional.resample(wavs, orig_freq=rate, new_freq=self.hparams.sample_rate)

    def _windows_one_by_one(self, path, audio, rate: int, starts: List[int], size: int,
                            batch_size: int) -> List[torch.Tensor]:
        """Each window's class probabilities, each window encoded alone."""
        probabilities = []
        for first in range(0, len(starts), batch_size):
            wavs = torch.stack([self._read_span(path, audio, rate, start, size)
                                for start in starts[first:first + batch_size]])
            out_prob, _, _, _ = self.classify_batch(self._to_model_rate(wavs, rate))
            probabilities.extend(out_prob.exp().cpu())
        return probabilities

    def _windows_in_one_pass(self, path, audio, rate: int, total: int, starts: List[int], size: int,
                             batch_size: int, chunk: float, context: float) -> List[torch.Tensor]:
        """Each window's class probabilities from one encoding of the file (:mod:`qieemo_sb.timeline`)."""
        model_rate = self.hparams.sample_rate
        to_model = model_rate / rate
        features = self.mods.compute_features
        frames_per_second = int(feature_frames(features, torch.tensor([2 * model_rate]))
                                - feature_frames(features, torch.tensor([model_rate])))
        hop = model_rate // frames_per_second
        with torch.inference_mode():  # the encoder's frame rates, from a short silence
            subsampling = self._encode(torch.zeros(1, model_rate // 2, device=self.device),
                                       torch.ones(1, device=self.device)).subsampling
        periods = [factor * hop for factor in subsampling]
        grid = math.lcm(*periods)
        chunk_samples = max(1, round(chunk * model_rate / grid)) * grid
        context_samples = round(context * model_rate / grid) * grid
        window_starts_model = [round(start * to_model) for start in starts]
        window_feature_frames = int(feature_frames(features, torch.tensor([round(size * to_model)])))
        total_model = round(total * to_model)
        unbounded = [math.inf] * len(periods)
        frames = BlockFrames(periods)
        probabilities, pending = [], list(range(len(starts)))
        for start, core_start, core_end, end in chunk_grid(total_model, chunk_samples, context_samples):
            wav = self._read_span(path, audio, rate, round(start / to_model), round((end - start) / to_model))
            wav = self._to_model_rate(wav.unsqueeze(0), rate)[0]
            wav = torch.nn.functional.pad(wav, (0, max(0, end - start - wav.shape[0])))[: end - start]
            last = end == total_model
            with torch.inference_mode():
                out = self._encode(wav.unsqueeze(0).to(self.device), torch.ones(1, device=self.device))
            kept, firsts = [], []
            for block, period in enumerate(periods):
                offset = start // period
                first = core_start // period - offset
                stop = int(out.lengths[block][0]) if last else core_end // period - offset
                kept.append(out.hidden_states[block][0, first:stop])
                firsts.append(offset + first)
            frames.append(kept, firsts)
            limits = frames.end if last else unbounded
            ready = []
            while pending:
                spans = window_frames(window_feature_frames, subsampling, periods, window_starts_model[pending[0]],
                                      limits)
                if any(first + count > held for (first, count), held in zip(spans, frames.end)):
                    break
                ready.append(spans)
                pending.pop(0)
            for first in range(0, len(ready), batch_size):
                with torch.inference_mode():
                    logits = self.mods.head(head_input(frames, ready[first:first + batch_size], subsampling)).logits
                probabilities.extend(torch.softmax(logits, dim=-1).cpu())
            if pending:
                next_spans = window_frames(window_feature_frames, subsampling, periods,
                                           window_starts_model[pending[0]], unbounded)
                # A few frames more: the last window may still move back at the end.
                frames.forget_before([max(0, first - 4) for first, _ in next_spans])
        if pending:
            raise RuntimeError(f"{path}: windows {pending} were not reached by the encoded chunks")
        return probabilities
