"""Zero-shot variant-effect check that needs no outside labels: in the annotated coding genes of a bacterial
genome held out from training, does the model's delta log-likelihood separate stop-gain SNVs (strongly
deleterious) from synonymous SNVs (mostly neutral)? Reports the AUROC of -delta (stop-gain = positive).

    python benchmarks/vep_bacteria.py GENBANK [--model DIR] [--sites 400] [--seed 0] -o vep.json

Variants: every SNV of a codon position in simple CDS features (one interval, no /pseudo, length a multiple
of 3, start and stop codons present, no internal stop; translation table 11) is classed synonymous,
stop-gain or other by the genetic code on the CDS strand. `--sites` sites that have a stop-gain alternative
and as many that have a synonymous one are drawn at random (fixed seed); every alternative of a drawn site
is scored and the stop-gain and synonymous ones enter the AUROC.

Score: the model reads the forward-strand window genome[p - upstream, p + downstream) around the variant
position p; delta = sum over t >= p of log P_alt(x_t | x_<t) - log P_ref(x_t | x_<t) (positions before p
are identical for ref and alt in a causal model). The prefix is run once per site and its inference state
reused for ref and the three alternatives (`model(ids, state)` continues a sequence exactly).

Base-composition controls (every stop codon is A/T-rich, and a GC-rich genome's synonymous changes sit at
third positions where its GC bias is strongest, so composition alone separates part of the classes):
(1) the substitution-matched AUROC: stop-gain vs synonymous within each strand-collapsed substitution type
(C>T, C>A, ...), averaged with weights n_pos x n_neg; (2) order-k Markov models (add-alpha) fitted on both
strands of the scored genome itself, an in-sample composition model, scored on the same variants as
vep_human.py scores its controls (`--markov-orders`; `--no-model` runs the controls alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASES = "ACGT"
_COMP = str.maketrans("ACGT", "TGCA")
STOPS = {"TAA", "TAG", "TGA"}


def _codon_table() -> dict[str, str]:
    from Bio.Data.CodonTable import unambiguous_dna_by_id

    table = unambiguous_dna_by_id[11]
    out = dict(table.forward_table)
    out.update({s: "*" for s in table.stop_codons})
    return out


def coding_sites(genbank: str | Path) -> tuple[str, str, list[dict]]:
    """(record id, genome sequence, sites): each site is a genome position with its ref base and the class
    of every alternative base ('syn', 'stop', 'other')."""
    from Bio import SeqIO

    from evo2lite.pipelines.fasta import open_binary

    code = _codon_table()
    with open_binary(genbank) as fh:
        import io

        record = next(SeqIO.parse(io.TextIOWrapper(fh), "genbank"))
    genome = str(record.seq).upper()
    sites = []
    for feat in record.features:
        if feat.type != "CDS" or "pseudo" in feat.qualifiers or len(feat.location.parts) != 1:
            continue
        start, end, strand = int(feat.location.start), int(feat.location.end), feat.location.strand
        cds = genome[start:end]
        if strand == -1:
            cds = cds.translate(_COMP)[::-1]
        if len(cds) % 3 or set(cds) - set(BASES) or cds[-3:] not in STOPS:
            continue
        codons = [cds[i:i + 3] for i in range(0, len(cds), 3)]
        if any(code.get(c) == "*" for c in codons[:-1]):
            continue
        for ci in range(1, len(codons) - 1):  # skip the start and the stop codon
            aa = code[codons[ci]]
            for k in range(3):
                cpos = 3 * ci + k  # position in the CDS (coding strand)
                gpos = start + cpos if strand == 1 else end - 1 - cpos
                classes = {}
                for b in BASES:
                    if b == codons[ci][k]:
                        continue
                    alt_aa = code[codons[ci][:k] + b + codons[ci][k + 1:]]
                    gbase = b if strand == 1 else b.translate(_COMP)
                    classes[gbase] = "syn" if alt_aa == aa else ("stop" if alt_aa == "*" else "other")
                sites.append({"pos": gpos, "ref": genome[gpos], "alts": classes,
                              "gene": feat.qualifiers.get("locus_tag", ["?"])[0], "strand": strand})
    return record.id, genome, sites


def auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    values, inverse, counts = np.unique(np.concatenate([pos_scores, neg_scores]), return_inverse=True,
                                        return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, ties averaged
    n1, n0 = len(pos_scores), len(neg_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_sites(model, genome: str, sites: list[dict], upstream: int, downstream: int, batch: int) -> list[dict]:
    import torch

    from evo2lite.tokenizer import encode

    ids = encode(genome)
    out = []
    for i in range(0, len(sites), batch):
        chunk = sites[i:i + batch]
        prefix = torch.stack([ids[s["pos"] - upstream:s["pos"]] for s in chunk])
        ref_suffix = torch.stack([ids[s["pos"]:s["pos"] + downstream] for s in chunk])
        with torch.inference_mode():
            state = model.new_state(len(chunk))
            last = model(prefix.to(model.device), state)[:, -1].float().log_softmax(-1).cpu()

            def suffix_ll(suffix):
                st = state.clone()
                logp = model(suffix.to(model.device), st).float().log_softmax(-1).cpu()
                # P(x_p) comes from the prefix's last logits; P(x_t), t > p, from the suffix pass
                first = last.gather(1, suffix[:, :1]).squeeze(1)
                rest = logp[:, :-1].gather(2, suffix[:, 1:, None]).squeeze(2).sum(1)
                return (first + rest).double()

            ref_ll = suffix_ll(ref_suffix)
            alt_ll = {}
            for b in BASES:
                alt = ref_suffix.clone()
                alt[:, 0] = ord(b)
                alt_ll[b] = suffix_ll(alt)
        for row, s in enumerate(chunk):
            for b, cls in s["alts"].items():
                out.append({"pos": s["pos"], "ref": s["ref"], "alt": b, "class": cls, "gene": s["gene"],
                            "delta": float(alt_ll[b][row] - ref_ll[row])})
    return out


def site_variants(sites: list[dict]) -> list[dict]:
    """One row per alternative allele of each site (the rows score_sites returns, without the delta)."""
    return [{"pos": s["pos"], "ref": s["ref"], "alt": b, "class": c, "gene": s["gene"]}
            for s in sites for b, c in s["alts"].items()]


def main(argv=None) -> int:
    import torch

    from evo2lite.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("genbank")
    ap.add_argument("--model", default=None, help="model spec as for --model: small (default), base, a directory")
    ap.add_argument("--sites", type=int, default=400, help="sites drawn per class")
    ap.add_argument("--upstream", type=int, default=None, help="default: 3/4 of the model's context")
    ap.add_argument("--downstream", type=int, default=None, help="default: 1/4 of the model's context")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draw-reach", type=int, default=None,
                    help="draw only sites at least this far from both genome ends (default: those whose "
                    "window fits); runs that pass the same value score the same sites, whatever their windows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markov-orders", type=int, nargs="*", default=[0, 2, 5],
                    help="orders of the in-sample Markov composition controls (none: skip them)")
    ap.add_argument("--markov-alpha", type=float, default=1.0)
    ap.add_argument("--no-model", action="store_true", help="score the composition controls only; the "
                    "window (for the site draw) then comes from --upstream/--downstream, default 1,536/512")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model = None if args.no_model else load_model(args.model, device=args.device, dtype="float32")
    ctx = model.config.context_len if model is not None else 2048
    up = args.upstream or ctx * 3 // 4
    down = args.downstream or ctx - up
    rec_id, genome, sites = coding_sites(args.genbank)
    lo, hi = (up, down) if args.draw_reach is None else (args.draw_reach, args.draw_reach)
    if lo < up or hi < down:
        raise SystemExit(f"--draw-reach {args.draw_reach} is shorter than the window ({up} + {down})")
    sites = [s for s in sites if lo <= s["pos"] <= len(genome) - hi]
    rng = np.random.default_rng(args.seed)
    with_stop = [i for i, s in enumerate(sites) if "stop" in s["alts"].values()]
    with_syn = [i for i, s in enumerate(sites) if "syn" in s["alts"].values()]
    pick = set(rng.choice(with_stop, min(args.sites, len(with_stop)), replace=False).tolist())
    pick |= set(rng.choice(with_syn, min(args.sites, len(with_syn)), replace=False).tolist())
    chosen = [sites[i] for i in sorted(pick)]
    from vep_human import aurocs, markov_deltas  # here: vep_human imports this module

    result = {"genbank": str(args.genbank), "record": rec_id, "upstream": up, "downstream": down,
              "draw_reach": args.draw_reach, "seed": args.seed, "coding_sites": len(sites), "sites_scored": len(chosen)}
    if model is not None:
        scored = score_sites(model, genome, chosen, up, down, args.batch_size)
        deltas = np.array([v["delta"] for v in scored])
        classes = np.array([v["class"] for v in scored])
        pair = aurocs(scored, deltas)["stop_vs_syn"]
        result.update({"model": args.model or "shipped default model", "model_source": getattr(model, "source", ""),
                       "context": ctx, "n_stop_gain": pair["n_pos"], "n_synonymous": pair["n_neg"],
                       "auroc_stop_vs_syn": pair["auroc"],
                       "auroc_substitution_matched": pair["auroc_substitution_matched"],
                       "mean_delta": {name: float(deltas[classes == cls].mean())
                                      for name, cls in (("stop_gain", "stop"), ("synonymous", "syn"),
                                                        ("other", "other"))}})
    else:
        scored = site_variants(chosen)
    if args.markov_orders:
        from markov import count_kmers, marginal

        both = np.frombuffer((genome + "N" + genome.translate(_COMP)[::-1]).encode(), dtype=np.uint8)
        top_k1 = max(args.markov_orders) + 1
        top = count_kmers(both, top_k1)
        result["markov_in_sample"] = {"alpha": args.markov_alpha, "fit_bases": len(genome) * 2}
        for order in args.markov_orders:
            deltas = markov_deltas(marginal(top, top_k1, order + 1), order, args.markov_alpha, genome, 0, scored)
            for v, d in zip(scored, deltas):
                v[f"markov{order}"] = float(d)
            result["markov_in_sample"][f"order_{order}"] = aurocs(scored, deltas)["stop_vs_syn"]
    result["wall_s"] = time.time() - t0
    if args.output:
        args.output.write_text(json.dumps({**result, "variants": scored}, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
