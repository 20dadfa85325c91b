"""Region weights of the training loader (evo2lite.pipelines.region_weights): windows overlapping a BED of
train regions drawn `weight` times as often, exact resume, one-line errors, and the exon BED builder.

The synthetic corpus soft-masks exactly the BED's bases, so a drawn window holds region bases iff its
loss weights hold a soft-mask weight: the rate is checked on what the loader returns, not on its own maths."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evo2lite.errors import ConfigError, Evo2LiteError
from evo2lite.pipelines.datasets import TokenWindowDataset
from evo2lite.pipelines.region_weights import StreamRegions, exon_intervals, main, read_saf
from evo2lite.pipelines.regions import RegionError, read_bed

# (record, start, end) in record coordinates; lower case in the FASTA. chr1:0-4000 is val, so the first
# interval is half outside the train split; chr1:12000-12300 is an N run (a gap between two train pieces).
BED = [("chr1", 3500, 4500), ("chr1", 15000, 15400), ("chr2", 1000, 1100), ("chr2", 6000, 6050)]
SEQ = 64
MASKED = 0.5  # soft_mask_weight: marks region bases in the samples


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import yaml

    from evo2lite.pipelines.corpus import build_corpus

    root = tmp_path_factory.mktemp("rw")
    rng = np.random.default_rng(7)
    seqs = {"chr1": 24000, "chr2": 8000}
    fasta = []
    for name, n in seqs.items():
        s = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)].copy()
        if name == "chr1":
            s[12000:12300] = ord("N")
        for rec, a, b in BED:
            if rec == name:
                s[a:b] += 32  # lower case
        fasta.append(f">{name}\n{s.tobytes().decode()}\n")
    (root / "human.fa").write_text("".join(fasta))
    bact = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, 10000)].tobytes().decode()
    (root / "bact.fa").write_text(f">contig_b\n{bact}\n")
    sources = [{"name": "hs", "organism": "Homo sapiens", "licence": "test", "path": "human.fa", "split": "train"},
               {"name": "bact", "organism": "Testus bacterium", "licence": "test", "path": "bact.fa",
                "split": "train"}]
    for s in sources:
        s["sha256"] = hashlib.sha256((root / s["path"]).read_bytes()).hexdigest()
    (root / "m.yaml").write_text(yaml.safe_dump({
        "version": 1, "name": "rw", "n_run_min": 100, "min_segment_len": 32, "chr17": "error", "sources": sources,
        "splits": [{"region": "chr1:0-4000", "split": "val", "source": "hs"}]}))
    build_corpus(root / "m.yaml", root / "corpus", progress=False)
    (root / "r.bed").write_text("".join(f"{r}\t{a}\t{b}\n" for r, a, b in BED))
    return root


def _ds(corpus, weight, seed=0, bed="r.bed", **kw):
    return TokenWindowDataset(corpus / "corpus", "train", SEQ, seed=seed, soft_mask_weight=MASKED,
                              region_bed=corpus / bed, region_weight=weight, **kw)


def test_regions_map_to_the_train_stream_only(corpus):
    ds = _ds(corpus, 8.0)
    # every mapped base is soft-masked in the train stream, and every soft-masked train base is mapped
    mask = np.asarray(ds.data.mask).astype(bool)
    mapped = np.zeros_like(mask)
    for a, b in zip(ds.regions.starts, ds.regions.ends):
        mapped[a:b] = True
    assert np.array_equal(mapped, mask)
    assert ds.regions.bases == 500 + 400 + 100 + 50 and ds.regions.bases_outside == 500  # chr1 0-4000 is val
    starts = np.random.default_rng(0).integers(0, ds.data.num_tokens - SEQ, 500)
    brute = np.array([mask[s:s + SEQ].sum() for s in starts])
    assert np.array_equal(ds.regions.in_windows(starts, SEQ), brute)


def test_weighted_windows_are_drawn_at_the_expected_rate(corpus):
    w = 2.5  # fractional: floor(w) copies plus one more with probability 0.5
    ds = _ds(corpus, w)
    n_epochs = 8
    total = sum(ds._epoch(e)[1].size for e in range(n_epochs))
    hit_drawn = sum(bool((ds.sample(i)["loss_weights"] == MASKED).any()) for i in range(total))
    mask = np.asarray(ds.data.mask)
    uniform = np.mean([np.mean([mask[s:s + SEQ].any() for s in ds._starts(ds._epoch(e)[0])])
                       for e in range(n_epochs)])
    expected = w * uniform / (w * uniform + 1 - uniform)
    assert 0.02 < uniform < 0.06  # the synthetic BED: ~20 of ~590 windows
    assert abs(hit_drawn / total - expected) < 0.12 * expected, (hit_drawn / total, expected, uniform)  # w=2|3 fail
    # an epoch still covers the whole grid once or more, and the log's statistics agree with the draws
    offset, order, _ = ds._epoch(0)
    assert set(order.tolist()) == set(range(ds.num_windows))
    stats = ds.region_stats(0)
    assert stats["uniform_window_share"] < stats["window_share"] and stats["windows_per_epoch"] == order.size
    assert stats["token_share"] > 1.5 * stats["uniform_token_share"]


def test_integer_weight_repeats_each_overlapping_window_exactly(corpus):
    ds = _ds(corpus, 8)
    for epoch in range(3):
        offset, order, _ = ds._epoch(epoch)
        hit = ds.regions.in_windows(ds._starts(offset), SEQ) > 0
        assert np.array_equal(np.bincount(order, minlength=ds.num_windows), np.where(hit, 8, 1))
    # samples run through epoch 0's permutation, then epoch 1's, ... (epochs of different lengths)
    plans = [ds._epoch(e) for e in range(6)]
    assert len({order.size for _, order, _ in plans}) > 1
    expected = [off + int(k) * SEQ for off, order, _ in plans for k in order]
    assert [ds.window(i)[0] for i in range(len(expected))] == expected


def test_determinism_and_exact_resume_across_epochs(corpus):
    a, b = _ds(corpus, 8.0), _ds(corpus, 8.0)
    assert [a.window(i) for i in range(50)] == [b.window(i) for i in range(50)]
    assert [a.window(i) for i in range(50)] != [_ds(corpus, 8.0, seed=1).window(i) for i in range(50)]
    steps, batch = 160, 16  # 2,560 samples: past three weighted epochs (~740 windows each)
    assert a._epoch(0)[1].size * 3 < steps * batch
    run = a.batches(batch)
    full = [next(run)["input_ids"] for _ in range(steps)]
    part = _ds(corpus, 8.0)
    it = part.batches(batch)
    for _ in range(70):
        next(it)
    state = json.loads(json.dumps(part.state_dict()))  # survives the checkpoint's plain types
    resumed = _ds(corpus, 8.0)
    resumed.load_state_dict(state)
    it = resumed.batches(batch)
    assert all(torch.equal(next(it)["input_ids"], full[i]) for i in range(70, steps))
    with pytest.raises(Evo2LiteError, match="region_weights"):
        _ds(corpus, 4.0).load_state_dict(state)
    plain = TokenWindowDataset(corpus / "corpus", "train", SEQ)
    with pytest.raises(Evo2LiteError, match="region_weights"):
        plain.load_state_dict(state)


def test_bad_beds_are_one_line_errors(corpus):
    root = corpus
    (root / "unknown.bed").write_text("chr9\t10\t20\n")
    (root / "val_only.bed").write_text("chr1\t100\t200\n")  # chr1:0-4000 is val
    (root / "broken.bed").write_text("chr1\tten\t20\n")
    (root / "empty.bed").write_text("# nothing\n")
    for name, match in (("unknown.bed", "no record of this split"), ("val_only.bed", "none of its"),
                        ("empty.bed", "no intervals"),
                        ("broken.bed", "not a BED line"), ("missing.bed", "no such BED")):
        with pytest.raises(RegionError, match=match) as err:
            _ds(root, 8.0, bed=name)
        assert "\n" not in str(err.value)
    for weight in (0, -1.0, float("nan")):
        with pytest.raises(Evo2LiteError, match="region_weight"):
            _ds(root, weight)


def test_train_logs_the_shares_and_checkpoints_the_weights(corpus, tmp_path):
    import typer
    import yaml
    from typer.testing import CliRunner

    from evo2lite.apps.train import TrainConfig, train
    from evo2lite.apps.train_cli import train_command

    tiny = {"preset": "debug", "layout": "SA", "d_model": 16, "num_heads": 2, "d_mlp": 32, "num_se_groups": 2}
    rw = {"bed": str(corpus / "r.bed"), "weight": 8.0}
    cfg = dict(corpus=str(corpus / "corpus"), model=tiny, out_dir=str(tmp_path / "run"), seq_len=SEQ - 1,
               global_batch_size=2, micro_batch_size=2, warmup_steps=1, max_steps=2, eval_every=0, eval_windows=1,
               region_weights=rw)
    summary = train(TrainConfig(**cfg), device="cpu")
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["region_stats"]["weight"] == 8.0 and start["region_stats"]["window_share"] > 0.1
    trainer = torch.load(Path(summary["checkpoint"]) / "trainer.pt", map_location="cpu", weights_only=True)
    assert trainer["data"]["region_weights"]["weight"] == 8.0
    with pytest.raises(Evo2LiteError, match="cannot resume"):  # same run, other weight
        train(TrainConfig(**{**cfg, "region_weights": {**rw, "weight": 2.0}}), resume="auto", device="cpu")
    with pytest.raises(ConfigError, match="region_weights"):
        TrainConfig(**{**cfg, "region_weights": {"bed": "x.bed"}})

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "region_weights"}))
    (tmp_path / "bad.bed").write_text("chrZ\t0\t10\n")
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "t.yaml"), "--device", "cpu", "--set",
                                   f"region_weights={{bed: {tmp_path / 'bad.bed'}, weight: 8}}"])
    assert bad.exit_code == 2 and "chrZ" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output


def test_exon_bed_is_padded_clipped_to_the_split_and_merged(corpus, tmp_path):
    saf = tmp_path / "exons.txt"
    saf.write_text("GeneID\tChr\tStart\tEnd\tStrand\n"  # 1-based inclusive
                   "1\tchr1\t3801\t4100\t+\n"      # val/train boundary at 4,000: only 4,000-4,300 is train
                   "1\tchr1\t4401\t4500\t+\n"      # padded 4,200-4,700: merges with the one above
                   "2\t1\t11951\t12000\t-\n"       # `1` finds chr1; its padding ends in the N gap at 12,000-12,300
                   "3\tchr2\t101\t200\t+\n"
                   "4\tchrX\t1\t100\t+\n"          # no such record: skipped
                   "5\tcontig_b\t1\t100\t+\n")     # another organism: skipped
    entries = json.loads((corpus / "corpus" / "train" / "index.json").read_text())["entries"]
    rows = exon_intervals(read_saf(saf), entries, 200, "Homo sapiens")
    assert rows == [("chr1", 4000, 4700), ("chr1", 11750, 12000), ("chr2", 0, 400)]
    # the CLI on the 2-bit pack's gzipped index writes a BED the loader reads
    from evo2lite.apps.train_data import pack_corpus

    pack_corpus(corpus / "corpus", tmp_path / "pack", splits=("train",))
    assert main([str(saf), str(tmp_path / "pack"), "-o", str(tmp_path / "e.bed")]) == 0
    assert [(r.contig, r.start, r.end) for r in read_bed(tmp_path / "e.bed")] == rows
    assert StreamRegions(read_bed(tmp_path / "e.bed"), entries).bases == 700 + 250 + 400
    gz = tmp_path / "exons.txt.gz"
    gz.write_bytes(gzip.compress(b"1\tchrX\t1\t100\t+\n"))
    assert main([str(gz), str(tmp_path / "pack"), "-o", str(tmp_path / "none.bed")]) == 2
    assert not (tmp_path / "none.bed").exists()


def test_organism_picks_one_of_two_records_that_share_a_contig_key(tmp_path):
    # human `X` and C. elegans `chrX` meet under contig key X (pilot 4's corpus): the BED alone is refused,
    # `region_organism` maps it onto that organism's record only
    import yaml

    from evo2lite.apps.train import TrainConfig
    from evo2lite.errors import InputError
    from evo2lite.pipelines.corpus import build_corpus

    rng = np.random.default_rng(3)
    seq = {n: np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, 3000)].copy() for n in ("hs", "ce")}
    seq["hs"][1000:1200] += 32  # the BED's bases, soft-masked in the human record only
    sources = []
    for name, organism, record in (("hs", "Homo sapiens", "X"), ("ce", "Caenorhabditis elegans", "chrX")):
        (tmp_path / f"{name}.fa").write_text(f">{record}\n{seq[name].tobytes().decode()}\n")
        sources.append({"name": name, "organism": organism, "licence": "test", "path": f"{name}.fa", "split": "train",
                        "sha256": hashlib.sha256((tmp_path / f"{name}.fa").read_bytes()).hexdigest()})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"version": 1, "name": "xx", "n_run_min": 100,
                                                     "min_segment_len": 32, "chr17": "error", "sources": sources}))
    build_corpus(tmp_path / "m.yaml", tmp_path / "corpus", progress=False)
    (tmp_path / "x.bed").write_text("X\t1000\t1200\n")

    def ds(organism):
        return TokenWindowDataset(tmp_path / "corpus", "train", SEQ, region_bed=tmp_path / "x.bed", region_weight=4.0,
                                  region_organism=organism)

    with pytest.raises(RegionError, match="several sources.*organism"):
        ds(None)
    hs, ce = ds("Homo sapiens"), ds("Caenorhabditis elegans")
    mask = np.asarray(hs.data.mask).astype(bool)
    mapped = np.zeros_like(mask)
    for a, b in zip(hs.regions.starts, hs.regions.ends):
        mapped[a:b] = True
    assert hs.regions.bases == 200 and np.array_equal(mapped, mask)
    worm = next(e for e in ce.data.entries if e["record"] == "chrX")
    assert ce.regions.bases == 200 and ce.regions.starts[0] == worm["offset"] + 1000
    assert hs.state_dict()["region_weights"]["organism"] == "Homo sapiens"
    with pytest.raises(Evo2LiteError, match="cannot resume"):  # the organism is part of the sampling
        hs.load_state_dict(ce.state_dict())
    with pytest.raises(InputError, match="no records"):
        ds("Mus musculus")
    base = dict(corpus="c", model={"preset": "debug"}, region_weights={"bed": "x.bed", "weight": 8.0})
    assert TrainConfig(**{**base, "region_weights": {"bed": "x.bed", "weight": 8.0, "organism": "Homo sapiens"}})
    for bad in ({"bed": "x.bed", "weight": 8.0, "organism": 9}, {"bed": "x.bed", "weight": 8.0, "org": "H"}):
        with pytest.raises(ConfigError, match="region_weights"):
            TrainConfig(**{**base, "region_weights": bad})
