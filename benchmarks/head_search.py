"""Fast search over stage-2 head settings on a frozen encoder's cached block outputs.

Trains Qieemo heads (the library's MMF, CMA and classifier) on the block outputs a stage-2
run or probe.py stored in its encoder cache, held in memory, for the folds that run wrote
(``<experiment_folder>/fold_k/manifests/fold_k`` or ``<experiment_folder>/probe/manifests``).
Minutes per fold on one CPU thread instead of a recipe run per setting. It differs from
``train.py`` in: no learning-rate annealing; the kept epoch is the last (``--select last``) or
the best validation UA; ``--ema`` is torch's AveragedModel (running statistics averaged too,
where the recipe's WeightAverage copies them); ``--crop`` draws its own random stretch.
Prints one JSON line per fold (with the per-epoch trace) and a RESULT line.

    python benchmarks/head_search.py --cache CACHE_FOLDER/<key> --manifests EXP/probe/manifests \
        --blocks 1,2,3,4,5,6 --ch 16,16 --fstride 4,2 --residual --ema 0.99 --crop 0.6 --ls 0.1 \
        --epochs 20 --select last
"""
import argparse
import json
import statistics as st
import time
from pathlib import Path

import torch
from torch import nn

from qieemo_sb.encoder_cache import clip_key
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.modules.mmf import MultiBlockFusion
from qieemo_sb.modules.cma import CrossModalAttention
from qieemo_sb.modules.classifier import EmotionClassifier
from qieemo_sb.modules.emotion_head import EmotionHead
from qieemo_sb.metrics import classification_metrics

p = argparse.ArgumentParser()
p.add_argument("--folds", default="1,2,3,4,5")
p.add_argument("--blocks", default="4,5,6")
p.add_argument("--d_emo", type=int, default=256)
p.add_argument("--ch", default="32,32", help="MMF conv channels")
p.add_argument("--fstride", default="2,2", help="MMF feature strides")
p.add_argument("--dropout", type=float, default=0.1)
p.add_argument("--hidden", type=int, default=256)
p.add_argument("--wd", type=float, default=0.01)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--epochs", type=int, default=12)
p.add_argument("--bs", type=int, default=8)
p.add_argument("--no_cma", action="store_true")
p.add_argument("--residual", action="store_true", help="residual CMA (E + O_att)")
p.add_argument("--no_std", action="store_true")
p.add_argument("--crop", type=float, default=0.0, help="train on random crops of this share of frames (0: off)")
p.add_argument("--ls", type=float, default=0.0, help="label smoothing")
p.add_argument("--select", default="ua", help="kept epoch: last, or the best validation ua/wa")
p.add_argument("--valid", default="random", help="random|speaker")
p.add_argument("--seed", type=int, default=1986)
p.add_argument("--tag", default="")
p.add_argument("--cache", required=True, help="an encoder cache folder (one key) storing every block")
p.add_argument("--manifests", required=True, help="folder of fold_k/{train,valid,test}.json")
p.add_argument("--labels", default="neu,hap,sad,ang")
p.add_argument("--d_model", type=int, default=512)
p.add_argument("--num_blocks", type=int, default=6)
p.add_argument("--ema", type=float, default=0.0, help="evaluate an EMA of the weights (decay per step)")
a = p.parse_args()
torch.set_num_threads(1)
labels = a.labels.split(",")
MAN = Path(a.manifests)
CACHE = Path(a.cache)
blocks = [int(b) for b in a.blocks.split(",")]
need = sorted(set(blocks) | {a.num_blocks})

_store = {}
def load(utt, wav):
    if utt not in _store:
        e = torch.load(CACHE / f"{clip_key(utt, wav)}.pt", weights_only=True)
        _store[utt] = {b: e["blocks"][b] for b in need}
    return _store[utt]

def batch(items, train):
    hidden, lengths = [None] * a.num_blocks, [None] * a.num_blocks
    frames = [load(u, w) for u, w in items]
    T = [f[a.num_blocks].shape[0] for f in frames]
    if train and a.crop:
        starts, ends = [], []
        for t in T:
            n = max(1, int(round(t * a.crop)))
            s = int(torch.randint(0, t - n + 1, (1,)))
            starts.append(s); ends.append(s + n)
    else:
        starts, ends = [0] * len(T), T
    L = torch.tensor([e - s for s, e in zip(starts, ends)])
    for b in need:
        x = torch.zeros(len(frames), int(L.max()), a.d_model)
        for r, f in enumerate(frames):
            x[r, : L[r]] = f[b][starts[r]:ends[r]].float()
        hidden[b - 1], lengths[b - 1] = x, L
    return EncoderOutput(hidden, lengths, [2] * a.num_blocks)  # Whisper: one frame rate for all blocks

def build():
    torch.manual_seed(a.seed)
    ch = [int(c) for c in a.ch.split(",")] if a.ch else []
    fs = [int(c) for c in a.fstride.split(",")] if a.ch else []
    mmf = MultiBlockFusion(d_model=a.d_model, blocks=blocks, d_emo=a.d_emo, conv_channels=ch,
                           time_strides=[1] * len(ch), feature_strides=fs, dropout=a.dropout,
                           standardize=not a.no_std)
    cma = None
    if not a.no_cma:
        cma = CrossModalAttention(query_size=a.d_emo, key_size=a.d_model, d_att=a.d_emo,
                                  standardize_ppg=not a.no_std, residual=a.residual)
    classifier = EmotionClassifier(input_size=a.d_emo, n_classes=len(labels), hidden_size=a.hidden,
                                   dropout=a.dropout)
    return EmotionHead(mmf=mmf, cma=cma, classifier=classifier)

def split(fold):
    out = {}
    for s in ("train", "valid", "test"):
        d = json.loads((MAN / f"fold_{fold}" / f"{s}.json").read_text())
        out[s] = [((u, e["wav"]), labels.index(e["emo"]), e["speaker"]) for u, e in d.items()]
    if a.valid == "speaker":  # hold out whole speakers of train+valid for validation
        pool = out["train"] + out["valid"]
        spk = sorted({x[2] for x in pool})
        g = torch.Generator().manual_seed(1234)
        held = {spk[i] for i in torch.randperm(len(spk), generator=g)[:2].tolist()}
        out["train"] = [x for x in pool if x[2] not in held]
        out["valid"] = [x for x in pool if x[2] in held]
    return out

def evaluate(head, data):
    head.eval(); preds = []
    with torch.no_grad():
        for i in range(0, len(data), 16):
            chunk = data[i:i + 16]
            preds += head(batch([x[0] for x in chunk], False)).logits.argmax(-1).tolist()
    return classification_metrics([x[1] for x in data], preds, len(labels))

res = []
for fold in [int(f) for f in a.folds.split(",")]:
    t0 = time.time()
    d = split(fold)
    head = build()
    opt = torch.optim.AdamW(head.parameters(), lr=a.lr, weight_decay=a.wd)
    best = (-1, 0, None, None)
    g = torch.Generator().manual_seed(a.seed)
    lr, prev = a.lr, None
    trace = []
    avg = None
    if a.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        avg = AveragedModel(head, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True)
    for ep in range(1, a.epochs + 1):
        head.train(); order = torch.randperm(len(d["train"]), generator=g).tolist(); tl = 0
        for i in range(0, len(order), a.bs):
            chunk = [d["train"][j] for j in order[i:i + a.bs]]
            out = head(batch([x[0] for x in chunk], True))
            loss = nn.functional.cross_entropy(out.logits, torch.tensor([x[1] for x in chunk]), label_smoothing=a.ls)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            tl += loss.item() * len(chunk)
            if avg is not None: avg.update_parameters(head)
        ev = avg.module if avg is not None else head
        v = evaluate(ev, d["valid"]); te = evaluate(ev, d["test"])
        trace.append((ep, round(tl / len(order), 3), round(100 * v["ua"], 1), round(100 * te["ua"], 1)))
        if a.select == "last" or v[a.select] > best[0]:
            best = (v.get(a.select, 0), ep, te, v)
    r = {"fold": fold, "epoch": best[1], "valid_ua": best[3]["ua"], "wa": best[2]["wa"], "ua": best[2]["ua"],
         "sec": round(time.time() - t0)}
    res.append(r)
    print(json.dumps(r), "trace(ep,loss,vUA,tUA):", trace, flush=True)
ua = [100 * r["ua"] for r in res]; wa = [100 * r["wa"] for r in res]
ua_std = st.stdev(ua) if len(ua) > 1 else 0.0
print(f"RESULT {a.tag} {vars(a)} UA {st.mean(ua):.2f} +- {ua_std:.2f} WA {st.mean(wa):.2f} "
      f"per-fold UA {[round(u, 1) for u in ua]}", flush=True)
