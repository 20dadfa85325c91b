"""Figures genomics users expect: likelihood tracks around a variant, score distributions by class,
embedding maps, and generated-vs-reference sequence statistics. Used by the notebooks and `evo2lite plot`.

Every figure function returns a matplotlib ``Figure`` (built without pyplot: no global state, safe in
scripts and threads; a notebook shows it when it is a cell's value); ``save_figure(fig, path)`` writes
PNG, SVG or PDF by the extension, atomically. matplotlib is imported lazily (the ``plots`` extra).

Coordinates: positions given to and drawn by the track functions are 0-based in the data and shown
1-based on the axes, as genome browsers do. Log-likelihoods are natural logs.

Legend: N samples (embeddings), D features.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Evo2LiteError, InputError

__all__ = ["TrackData", "parse_variant", "likelihood_track_data", "likelihood_track", "score_distribution",
           "pca", "embedding_projection", "gc_content", "kmer_spectrum", "longest_orf", "generation_stats",
           "save_figure", "FORMATS"]

FORMATS = (".png", ".svg", ".pdf")
_STOPS = ("TAA", "TAG", "TGA")
_COMPLEMENT = str.maketrans("ACGTacgtNn", "TGCAtgcaNn")


def _figure(nrows: int = 1, ncols: int = 1, *, size=(8.0, 4.0), **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # the extra is not installed
        raise Evo2LiteError("plots need matplotlib: pip install 'evo2lite[plots]'") from exc
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig, path: str | Path, *, dpi: int = 150, force: bool = True) -> Path:
    """Write `fig` to `path` (.png, .svg or .pdf: the format follows the extension), atomically."""
    from .io import atomic_path, check_overwrite

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise Evo2LiteError(f"{path}: a figure is written as .png, .svg or .pdf, not {suffix or 'no extension'!r}")
    check_overwrite(path, force)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=suffix[1:], dpi=dpi)
    return path


# ----------------------------------------------------------------------------------------------------
# Likelihood track around a region or a variant


@dataclass
class TrackData:
    """Per-position log P(base | bases before) over ``[start, end)`` of ``contig`` (0-based).

    ``ref_logp[i]`` scores the reference base at ``start + i``; ``alt_logp[i]`` the same reference
    coordinate in the ALT sequence (NaN where ALT deleted it; the bases ALT inserts have no reference
    coordinate). ``variant`` is (0-based pos, ref, alt) or None; ``total_delta`` is log P(ALT window) -
    log P(REF window), the whole scored window (flank included), insertions and deletions counted."""

    contig: str
    start: int
    ref_logp: np.ndarray
    alt_logp: np.ndarray | None = None
    variant: tuple[int, str, str] | None = None
    total_delta: float = float("nan")

    @property
    def positions(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self.ref_logp))

    @property
    def delta(self) -> np.ndarray | None:
        return None if self.alt_logp is None else self.alt_logp - self.ref_logp


def parse_variant(text: str) -> tuple[str | None, int, str, str]:
    """``[CHR:]POS:REF>ALT`` or ``CHR:POS:REF:ALT`` (POS 1-based, as in a VCF; the second form needs no
    shell quoting) -> (chrom or None, 0-based pos, REF, ALT)."""
    raw = text = str(text).strip()
    if ">" not in text and text.count(":") >= 3:
        text = text[:text.rindex(":")] + ">" + text[text.rindex(":") + 1:]
    head, sep, alleles = text.rpartition(":")
    ref, arrow, alt = alleles.partition(">")
    chrom, _, pos = head.rpartition(":") if ":" in head else ("", "", head)
    pos = pos.replace(",", "")
    bases = set("ACGTN")
    if not (sep and arrow and pos.isdigit() and int(pos) >= 1 and ref and alt
            and set(ref.upper()) <= bases and set(alt.upper()) <= bases):
        raise InputError(f"variant {raw!r}: want [CHR:]POS:REF>ALT or CHR:POS:REF:ALT with POS "
                         "1-based, e.g. 20:1546804:G:A")
    return (chrom or None), int(pos) - 1, ref.upper(), alt.upper()


def likelihood_track_data(model, reference, contig: str, start: int, end: int, variant=None, *,
                          flank: int = 512, batch_size: int = 2) -> TrackData:
    """Score ``[start, end)`` of `contig` (0-based) in `reference` (path or ReferenceGenome), with up to
    `flank` bases of left context before `start` so the first positions are not scored blind; with
    `variant` ((pos0, ref, alt) or a ``[CHR:]POS:REF>ALT`` string), also the same window carrying ALT."""
    from .apps.score import score_sequences
    from .pipelines.fasta import ReferenceGenome

    genome = reference if isinstance(reference, ReferenceGenome) else ReferenceGenome(reference)
    try:
        contig = genome.resolve(contig)
        length = genome.contigs[contig]
        if not 0 <= start < end <= length:
            raise InputError(f"region {contig}:{start + 1}-{end} is outside contig {contig} (length {length:,})")
        lo = max(0, start - flank)
        ref_seq = genome.fetch(contig, lo, end).upper()
        seqs = [("ref", ref_seq)]
        if variant is not None:
            if isinstance(variant, str):
                chrom, pos, ref, alt = parse_variant(variant)
                if chrom is not None and genome.resolve(chrom) != contig:
                    raise InputError(f"variant {variant!r} is not on contig {contig}")
            else:
                pos, ref, alt = int(variant[0]), str(variant[1]).upper(), str(variant[2]).upper()
            if not (start <= pos and pos + len(ref) <= end):
                raise InputError(f"variant at {contig}:{pos + 1} is outside the region {contig}:{start + 1}-{end}")
            found = genome.fetch(contig, pos, pos + len(ref)).upper()
            if found != ref:
                raise InputError(f"variant {contig}:{pos + 1} REF {ref} does not match the reference ({found})")
            o = pos - lo
            seqs.append(("alt", ref_seq[:o] + alt + ref_seq[o + len(ref):]))
    finally:
        if genome is not reference:
            genome.close()
    scores = score_sequences(model, seqs, batch_size=batch_size)
    ref_logp = scores[0].per_position[start - lo:]
    if variant is None:
        return TrackData(contig, start, ref_logp)
    # map ALT positions back onto reference coordinates (alleles anchored on the left, as VCF writes them):
    # ALT's first min(len) allele bases sit on REF's; extra ALT bases are insertions (no coordinate),
    # extra REF bases deletions (NaN in ALT)
    alt_all = scores[1].per_position
    o, n = pos - lo, min(len(ref), len(alt))
    coord = np.concatenate([np.arange(o + n), np.full(len(alt) - n, -1), np.arange(o + len(ref), len(ref_seq))])
    alt_on_ref = np.full(len(ref_seq), np.nan)
    keep = coord >= 0
    alt_on_ref[coord[keep]] = alt_all[keep]
    total = float(np.nansum(alt_all) - np.nansum(scores[0].per_position))
    return TrackData(contig, start, ref_logp, alt_on_ref[start - lo:], (pos, ref, alt), total)


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return y
    kernel = np.ones(width)
    ok = np.isfinite(y)
    num = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def likelihood_track(track: TrackData, *, smooth: int = 1, title: str | None = None):
    """Per-position log-likelihood of REF (and ALT) with, for a variant, the ALT - REF delta below.
    `smooth` > 1 draws a centred running mean over that many bases (NaN-aware)."""
    has_alt = track.alt_logp is not None
    fig, axes = _figure(2 if has_alt else 1, 1, size=(10.0, 5.0 if has_alt else 3.2), sharex=True)
    x = track.positions + 1  # 1-based on the axis
    ax = axes[0, 0]
    ax.plot(x, _smooth(track.ref_logp, smooth), color="tab:blue", lw=0.9, label="REF")
    if has_alt:
        ax.plot(x, _smooth(track.alt_logp, smooth), color="tab:red", lw=0.9, alpha=0.8, label="ALT")
        pos, ref, alt = track.variant
        dax = axes[1, 0]
        dax.plot(x, track.delta, color="black", lw=0.9)
        dax.axhline(0.0, color="grey", lw=0.5)
        for a in axes[:, 0]:
            a.axvline(pos + 1, color="grey", ls="--", lw=0.8)
        dax.set_ylabel("ALT - REF (nats)")
        dax.set_xlabel(f"{track.contig} position (1-based)")
        ax.set_title(title or f"{track.contig}:{pos + 1} {ref}>{alt}   delta = {track.total_delta:+.3f} nats")
        ax.legend(loc="lower left", fontsize="small")
    else:
        ax.set_xlabel(f"{track.contig} position (1-based)")
        ax.set_title(title or f"{track.contig}:{track.start + 1}-{track.start + len(x)}   "
                              f"mean log P = {np.nanmean(track.ref_logp):.3f} nats/base")
    ax.set_ylabel("log P(base)" + (f" (mean of {smooth})" if smooth > 1 else ""))
    ax.set_xlim(x[0], x[-1])
    for a in axes[:, 0]:
        a.ticklabel_format(axis="x", useOffset=False, style="plain")  # whole coordinates, no "+1.546e6"
    return fig


# ----------------------------------------------------------------------------------------------------
# Score distributions by class


def score_distribution(scores: Sequence[float], classes: Sequence[str], *, order: Sequence[str] | None = None,
                       ylabel: str = "ALT - REF log-likelihood (nats)", title: str | None = None,
                       seed: int = 0):
    """A box per class with every score drawn as a jittered point; NaN scores are left out and the
    tick labels carry each class's count."""
    scores = np.asarray(scores, dtype=float)
    classes = np.asarray([str(c) for c in classes])
    if scores.shape != classes.shape:
        raise ValueError(f"{len(scores)} scores but {len(classes)} classes")
    ok = np.isfinite(scores)
    names = list(order) if order is not None else sorted(set(classes[ok]))
    groups = [scores[ok & (classes == name)] for name in names]
    fig, axes = _figure(size=(1.6 + 1.3 * len(names), 4.0))
    ax = axes[0, 0]
    rng = np.random.default_rng(seed)
    filled = [i for i, g in enumerate(groups) if len(g)]
    if filled:
        ax.boxplot([groups[i] for i in filled], positions=[i + 1 for i in filled], widths=0.6,
                   showfliers=False, medianprops={"color": "black"})
    for i, g in enumerate(groups):
        ax.scatter(i + 1 + rng.uniform(-0.18, 0.18, len(g)), g, s=12, alpha=0.6, zorder=3, label=names[i])
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(g)})" for n, g in zip(names, groups)])
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------------------------------
# Embedding projection


def pca(x_ND: np.ndarray, num_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the rows of x (N samples, D features): (coordinates (N, k), explained
    variance ratio (k,)). Signs are fixed so the largest-magnitude loading of each component is positive."""
    x_ND = np.asarray(x_ND, dtype=np.float64)
    if x_ND.ndim != 2 or len(x_ND) < 2:
        raise ValueError(f"pca needs a 2-D array with at least 2 rows, got shape {x_ND.shape}")
    centred = x_ND - x_ND.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(num_components, vt.shape[0])
    vt = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])[:, None]
    var = s ** 2
    return centred @ vt.T, var[:k] / max(var.sum(), 1e-300)


def embedding_projection(x_ND: np.ndarray, labels: Sequence[str], *, title: str | None = None,
                         order: Sequence[str] | None = None):
    """Scatter of the first two principal components of the embeddings, one colour per label."""
    coords, ratio = pca(x_ND, 2)
    labels = np.asarray([str(v) for v in labels])
    if len(labels) != len(coords):
        raise ValueError(f"{len(coords)} embeddings but {len(labels)} labels")
    fig, axes = _figure(size=(6.5, 5.0))
    ax = axes[0, 0]
    for name in (order if order is not None else sorted(set(labels))):
        sel = labels == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=14, alpha=0.75, label=f"{name} ({sel.sum()})")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f} % of variance)" if len(ratio) > 1 else "PC2")
    ax.legend(fontsize="small", markerscale=1.5)
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------------------------------
# Sequence statistics: GC, k-mer spectrum, ORFs


def gc_content(seq: str) -> float:
    """G+C share among the A/C/G/T bases of `seq` (NaN when it has none)."""
    s = seq.upper()
    acgt = sum(s.count(b) for b in "ACGT")
    return (s.count("G") + s.count("C")) / acgt if acgt else float("nan")


def kmer_spectrum(seqs: str | Iterable[str], k: int = 3) -> tuple[list[str], np.ndarray]:
    """Frequencies of the 4^k A/C/G/T k-mers (k-mers holding another letter are skipped), in
    lexicographic order: (k-mers, frequencies summing to 1, or all zero when there is none)."""
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    index = {m: i for i, m in enumerate(kmers)}
    counts = np.zeros(len(kmers))
    for s in [seqs] if isinstance(seqs, str) else seqs:
        s = s.upper()
        for i in range(len(s) - k + 1):
            j = index.get(s[i:i + k])
            if j is not None:
                counts[j] += 1
    total = counts.sum()
    return kmers, counts / total if total else counts


def longest_orf(seq: str) -> int:
    """Length in codons of the longest open reading frame (ATG .. stop, stop included; one running
    off the end counts up to the end) on either strand."""
    s = seq.upper()
    best = 0
    for strand in (s, s.translate(_COMPLEMENT)[::-1]):
        for frame in range(3):
            start = None
            for i in range(frame, len(strand) - 2, 3):
                codon = strand[i:i + 3]
                if start is None and codon == "ATG":
                    start = i
                if start is not None and codon in _STOPS:
                    best = max(best, (i - start) // 3 + 1)
                    start = None
            if start is not None:
                best = max(best, (len(strand) - start) // 3)
    return best


def _windows(genome: str, length: int, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    if len(genome) <= length:
        return [genome]
    return [genome[i:i + length] for i in rng.integers(0, len(genome) - length, count)]


def generation_stats(samples: Mapping[str, Sequence[str]] | Sequence[str], reference: str, *, k: int = 3,
                     num_windows: int = 200, seed: int = 0, title: str | None = None):
    """Generated sequences against their reference genome: GC content per sequence, k-mer spectrum
    (generated frequency vs the reference's, with Pearson r), and longest ORF per sequence. `samples` is a
    list of sequences or {group label: list} (e.g. one group per temperature); the reference is shown
    as `num_windows` random windows as long as the median sample."""
    groups = dict(samples) if isinstance(samples, Mapping) else {"generated": list(samples)}
    if not groups or not all(len(v) for v in groups.values()):
        raise ValueError("generation_stats needs at least one sequence in every group")
    length = int(np.median([len(s) for v in groups.values() for s in v]))
    ref_windows = _windows(reference.upper(), length, num_windows, seed)
    fig, axes = _figure(1, 3, size=(14.0, 4.2))
    gc_ax, km_ax, orf_ax = axes[0]
    names = ["reference"] + list(groups)
    seq_sets = [ref_windows] + [list(v) for v in groups.values()]
    colours = ["grey"] + [f"C{i}" for i in range(len(groups))]  # one colour per group in every panel
    jitter = [np.random.default_rng(seed).uniform(-0.15, 0.15, len(v)) for v in seq_sets]
    gc_ax.boxplot([[gc_content(s) for s in v] for v in seq_sets], showfliers=False)
    for i, v in enumerate(seq_sets):
        gc_ax.scatter(i + 1 + jitter[i], [gc_content(s) for s in v], s=8, alpha=0.5, zorder=3, color=colours[i])
    gc_ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    gc_ax.set_ylabel("GC content")
    gc_ax.set_title(f"GC (reference: {gc_content(reference):.3f} genome-wide)")
    _, ref_freq = kmer_spectrum(reference, k)
    top = float(ref_freq.max())
    for i, (name, v) in enumerate(groups.items()):
        _, freq = kmer_spectrum(v, k)
        r = float(np.corrcoef(ref_freq, freq)[0, 1]) if freq.any() and ref_freq.std() > 0 else float("nan")
        km_ax.scatter(ref_freq, freq, s=10, alpha=0.7, color=colours[i + 1], label=f"{name} (r = {r:.2f})")
        top = max(top, float(freq.max()))
    km_ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
    km_ax.set_xlabel(f"{k}-mer frequency, reference genome")
    km_ax.set_ylabel(f"{k}-mer frequency, generated")
    km_ax.set_title(f"{k}-mer spectrum ({4 ** k} {k}-mers)")
    km_ax.legend(fontsize="small")
    orf_ax.boxplot([[longest_orf(s) for s in v] for v in seq_sets], showfliers=False)
    for i, v in enumerate(seq_sets):
        orf_ax.scatter(i + 1 + jitter[i], [longest_orf(s) for s in v], s=8, alpha=0.5, zorder=3, color=colours[i])
    orf_ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    orf_ax.set_ylabel("longest ORF (codons)")
    orf_ax.set_title(f"longest ORF in {length}-base sequences")
    if title:
        fig.suptitle(title)
    return fig
