"""Which layer should `evo2lite embed` default to? Linear probes on every layer, on real annotated DNA.

    python benchmarks/embed_layer_probe.py [--model SPEC] [--out DIR]

Data: the real fixtures in data/fixtures with gene annotations: the CDS features of aywb_plasmids.gbk
(4 phytoplasma plasmids) and NC_009934.gbk, and the `/cds=p(a,b)` spans in the headers of
dicty_cdna20.fa (20 Dictyostelium cDNAs; UTRs are the non-coding part). Two tasks, each a ridge
classifier on standardised features with 5-fold cross-validated accuracy:
  coding   mean-pooled embeddings of non-overlapping 48-base windows entirely inside a CDS vs entirely
           outside any (classes balanced by subsampling; chance 0.5).
  phase    the per-token embedding of a base inside a forward-strand CDS -> its codon position 0/1/2
           (balanced; chance 1/3). Needs sequence understanding, not only base composition.
Baselines on the same folds: 3-mer counts of the window (coding) and the one-hot of the 7 bases around
the token (phase). Every layer (blocks.N, blocks.N.mlp, final) is probed; the default layer of
`evo2lite embed` (evo2lite.apps.embed.DEFAULT_DEPTH) should sit where the probes peak with the shipped
model. Without a shipped model the debug preset with random weights runs: a placeholder measurement that
says nothing about a trained model, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bootstrap  # noqa: E402  (import evo2lite from a checkout)

bootstrap()


from evo2lite.apps.embed import DEFAULT_DEPTH, default_layer, embed, layer_names  # noqa: E402

FIXTURES = ROOT / "data" / "fixtures"
WINDOW = 48
_ACGT = {b: i for i, b in enumerate(b"ACGT")}


def annotated_records() -> list[tuple[str, bytes, np.ndarray, np.ndarray]]:
    """(name, sequence, coding mask, forward-strand codon phase or -1) per record."""
    from Bio import SeqIO

    out = []
    for path in (FIXTURES / "aywb_plasmids.gbk", FIXTURES / "NC_009934.gbk"):
        for rec in SeqIO.parse(str(path), "genbank"):
            seq = bytes(rec.seq).upper()
            coding = np.zeros(len(seq), bool)
            phase = np.full(len(seq), -1, np.int8)
            for feature in rec.features:
                if feature.type != "CDS":
                    continue
                for part in feature.location.parts:
                    start, end = int(part.start), int(part.end)
                    coding[start:end] = True
                    if part.strand == 1:
                        phase[start:end] = np.arange(end - start) % 3
            out.append((rec.id, seq, coding, phase))
    text = (FIXTURES / "dicty_cdna20.fa").read_text()
    for block in text.split(">")[1:]:
        header, _, body = block.partition("\n")
        seq = body.replace("\n", "").upper().encode()
        match = re.search(r"/cds=p\((\d+),(\d+)\)", header)
        if not match:
            continue
        start, end = int(match[1]) - 1, int(match[2])  # 1-based inclusive -> 0-based half-open
        coding = np.zeros(len(seq), bool)
        coding[start:end] = True
        phase = np.full(len(seq), -1, np.int8)
        phase[start:end] = np.arange(end - start) % 3
        out.append((header.split()[0], seq, coding, phase))
    return out


def ridge_cv_accuracy(x: np.ndarray, y: np.ndarray, folds: np.ndarray, lam: float = 1.0) -> float:
    """Mean accuracy of a one-vs-rest ridge classifier over the folds (features standardised on train)."""
    classes = np.unique(y)
    correct = 0
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        a, b = (x[train] - mu) / sd, (x[test] - mu) / sd
        a = np.hstack([a, np.ones((len(a), 1))])
        b = np.hstack([b, np.ones((len(b), 1))])
        targets = (y[train][:, None] == classes[None, :]).astype(np.float64) * 2 - 1
        w = np.linalg.solve(a.T @ a + lam * len(a) / 100 * np.eye(a.shape[1]), a.T @ targets)
        correct += int((classes[(b @ w).argmax(1)] == y[test]).sum())
    return correct / len(y)


def balanced(labels: np.ndarray, rng, cap: int) -> np.ndarray:
    """Indices with the same number of each label (at most cap each)."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    n = min(cap, min(len(g) for g in groups))
    return np.sort(np.concatenate([rng.choice(g, n, replace=False) for g in groups]))


def kmer_counts(seq: bytes, k: int = 3) -> np.ndarray:
    v = np.zeros(4 ** k)
    for i in range(len(seq) - k + 1):
        idx = 0
        for b in seq[i:i + k]:
            if b not in _ACGT:
                break
            idx = idx * 4 + _ACGT[b]
        else:
            v[idx] += 1
    return v


def one_hot_context(seq: bytes, pos: int, half: int = 3) -> np.ndarray:
    v = np.zeros((2 * half + 1, 4))
    for j, p in enumerate(range(pos - half, pos + half + 1)):
        if 0 <= p < len(seq) and seq[p] in _ACGT:
            v[j, _ACGT[seq[p]]] = 1
    return v.ravel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model spec (default: the shipped model, else debug random)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=3000, help="tokens per phase class")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "out"))
    args = ap.parse_args(argv)
    from evo2lite.checkpoint import load_model

    placeholder = False
    try:
        model = load_model(args.model, device=args.device)
        name = args.model or "shipped model"
    except Exception as exc:
        if args.model is not None:
            raise
        print(f"no shipped model ({str(exc).splitlines()[0]}): PLACEHOLDER run with the debug preset, random "
              "weights", flush=True)
        model, name, placeholder = load_model("debug", random_init=True, seed=args.seed), "debug (random)", True
    layers = layer_names(model.config)
    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    records = annotated_records()
    feats = {layer: [] for layer in layers}
    win_labels, win_kmers, tok_feats, tok_labels, tok_context = [], [], {layer: [] for layer in layers}, [], []
    for rec_name, seq, coding, phase in records:
        arrays = embed(model, seq, layers=layers, chunk_size=8192)
        for start in range(0, len(seq) - WINDOW + 1, WINDOW):
            window = coding[start:start + WINDOW]
            if window.all() or not window.any():
                win_labels.append(int(window.all()))
                win_kmers.append(kmer_counts(seq[start:start + WINDOW]))
                for layer in layers:
                    feats[layer].append(arrays[layer][start:start + WINDOW].mean(0))
        positions = np.flatnonzero(phase >= 0)
        positions = rng.choice(positions, min(len(positions), args.tokens), replace=False)
        for pos in positions:
            tok_labels.append(int(phase[pos]))
            tok_context.append(one_hot_context(seq, pos))
        for layer in layers:
            tok_feats[layer].append(arrays[layer][positions])
    y_win = np.array(win_labels)
    keep_w = balanced(y_win, rng, 10_000)
    folds_w = rng.integers(0, 5, len(keep_w))
    y_tok = np.array(tok_labels)
    keep_t = balanced(y_tok, rng, args.tokens)
    folds_t = rng.integers(0, 5, len(keep_t))
    rows = []
    for layer in layers:
        xw = np.array(feats[layer])[keep_w]
        xt = np.concatenate(tok_feats[layer])[keep_t]
        rows.append({"layer": layer, "coding_acc": ridge_cv_accuracy(xw, y_win[keep_w], folds_w),
                     "phase_acc": ridge_cv_accuracy(xt, y_tok[keep_t], folds_t)})
    baseline = {"coding_3mer_acc": ridge_cv_accuracy(np.array(win_kmers)[keep_w], y_win[keep_w], folds_w),
                "phase_onehot7_acc": ridge_cv_accuracy(np.array(tok_context)[keep_t], y_tok[keep_t], folds_t)}
    for r in rows:
        r["mean_acc"] = (r["coding_acc"] + r["phase_acc"]) / 2
    best = max(rows, key=lambda r: r["mean_acc"])
    n = model.config.num_blocks
    depth = (int(best["layer"].split(".")[1]) / (n - 1)) if best["layer"] != "final" else 1.0
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model": name, "placeholder": placeholder,
              "num_windows": int(len(keep_w)), "num_tokens": int(len(keep_t)), "window": WINDOW,
              "baselines": baseline, "layers": rows, "best_layer": best["layer"], "best_relative_depth": depth,
              "current_default": default_layer(model.config), "DEFAULT_DEPTH": DEFAULT_DEPTH,
              "seconds": time.perf_counter() - began}
    lines = [f"# Layer probe ({result['date']}): {name}" + (" - PLACEHOLDER (random weights)" if placeholder else ""),
             "", f"{len(keep_w)} windows of {WINDOW} bases (coding vs non-coding, chance 0.5); {len(keep_t)} CDS "
             f"tokens (codon position, chance 0.333). Baselines: 3-mer counts {baseline['coding_3mer_acc']:.3f}, "
             f"one-hot of 7 bases {baseline['phase_onehot7_acc']:.3f}.", "",
             "| layer | coding acc | phase acc | mean |", "|---|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['coding_acc']:.3f} | {r['phase_acc']:.3f} | {r['mean_acc']:.3f} |" for r in rows]
    lines += ["", f"Best: {best['layer']} (relative depth {depth:.2f}); current default "
              f"{result['current_default']} (DEFAULT_DEPTH {DEFAULT_DEPTH})."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_layer_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "embed_layer_probe.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
