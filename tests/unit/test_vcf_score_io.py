"""score_vcf's pure parts (no model): prefix split, delta arithmetic, blocks, checkpoint, VCF annotation."""

import json

import numpy as np
import pysam

from evo2lite.apps import score_vcf_io as IO
from evo2lite.apps import score_vcf_jobs as J
from evo2lite.apps import score_vcf_sites as sites
from evo2lite.pipelines import vcf as V


def test_make_job_prefix_is_the_bases_before_the_variant():
    job = J.make_job("AAAACCCC", ["AAAAGCCC", "AAAACGCC"], cap=4)
    assert job.prefix == "AAAA"
    assert job.suffixes == ["CCCC", "GCCC", "CGCC"]
    # any prefix up to the common one is exact; the cap keeps sites alike so they batch together
    assert J.make_job("AAAACCCC", ["AAAACCGC"], cap=4).prefix == "AAAA"


def test_make_job_without_a_shared_stretch_has_no_prefix():
    # e.g. the reverse complement of a deletion: the shifted flank differs right away
    job = J.make_job("ACGTACGT", ["ACTTTCGT"], cap=4)
    assert job.prefix == "" and job.suffixes == ["ACGTACGT", "ACTTTCGT"]


def test_make_job_keeps_one_suffix_token():
    job = J.make_job("ACGT", ["ACGT"], cap=4)
    assert job.prefix == "ACG" and job.suffixes == ["T", "T"]
    job = J.make_job("ACGTACGT", ["ACGTAC"], cap=6)
    assert job.prefix == "ACGTA" and job.suffixes == ["CGT", "C"]


def test_deltas_with_fake_terms():
    # fake per-position log-probs: REF terms 1..5, ALT terms 10.. at positions p=3..7 of 8-long windows
    job = J.make_job("AAACCCCC", ["AAAGCCCC", "AAAGCC"], cap=3)
    ref_terms = np.arange(1.0, 6.0)
    alt1 = np.full(5, -1.0)
    alt2 = np.full(3, -2.0)
    deltas = J.deltas(job, [ref_terms, alt1, alt2], [8, 6], "sum")
    assert deltas == [-5.0 - 15.0, -6.0 - (1 + 2 + 3)]
    means = J.deltas(job, [ref_terms, alt1, alt2], [8, 6], "mean")
    assert means == [-20.0 / 7, -12.0 / 5]


def test_site_jobs_both_strands():
    jobs = J.site_jobs("AACCGGTT", ["AACTGGTT"], offset=3, ref_len=1, strand="both")
    assert len(jobs) == 2
    assert jobs[0][0].prefix == "AAC"
    rc_job, which, lengths = jobs[1]
    assert rc_job.prefix == "AACC"  # the RC shares what follows the variant
    assert rc_job.prefix + rc_job.suffixes[0] == "AACCGGTT"  # its own reverse complement
    assert rc_job.prefix + rc_job.suffixes[1] == "AACCAGTT"
    assert which == [0] and lengths == [8]


def test_blocks_never_split_a_position(tmp_path):
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for pos in (10, 10, 10, 20, 30, 30, 40):
        lines.append(f"1\t{pos}\t.\tA\tC\t.\t.\t.")
    path = tmp_path / "b.vcf"
    path.write_text("\n".join(lines) + "\n")
    with V.VcfInput(path) as source:
        vf = source.open()
        blocks = [(n, [v.pos for v, _ in b]) for n, b in sites.blocks(source.records(vf), target_rows=2)]
        vf.close()
    assert blocks == [(0, [10, 10, 10]), (1, [20]), (2, [30, 30]), (3, [40])]


def test_checkpoint_roundtrip_and_torn_line(tmp_path):
    ck = IO.Checkpoint(tmp_path / "ck", rank=0, world_size=1)
    ck.start("abc")
    ck.append(0, {0: [[1.5, "ok"]], 1: [[None, "symbolic"]]})
    ck.append(1, {2: [[-0.25, "ok"], [None, "star"]]})
    ck.close()
    with open(ck.path, "a") as fh:
        fh.write('{"block": 2, "results": {"3": [[1.0')  # killed mid-write
    header, offsets, done = IO.Checkpoint.read(ck.path)
    assert header["fingerprint"] == "abc" and not done and sorted(offsets) == [0, 1]
    assert IO.Checkpoint.load(ck.path, offsets[0]) == {0: [[1.5, "ok"]], 1: [[None, "symbolic"]]}
    assert IO.Checkpoint.load(ck.path, offsets[1]) == {2: [[-0.25, "ok"], [None, "star"]]}
    kept = ck.start("abc", {1: offsets[1]})  # a resume rewrites the file with the kept blocks, no torn line
    assert IO.Checkpoint.load(ck.path, kept[1]) == {2: [[-0.25, "ok"], [None, "star"]]}
    ck.finish()
    lines = ck.path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines) and json.loads(lines[-1]) == {"done": True}
    assert IO.Checkpoint.read(ck.path)[2]


def test_annotate_replaces_old_tags_and_skips_records_without_alt():
    line = "1\t10\t.\tA\tC,<DEL>\t.\t.\tDP=3;EVO2_SCORE=9;EVO2_STATUS=old\n"
    out = IO.annotate(line, [[0.123456789, "ok"], [None, "symbolic"]])
    assert out == "1\t10\t.\tA\tC,<DEL>\t.\t.\tDP=3;EVO2_SCORE=0.123457,.;EVO2_STATUS=ok,symbolic\n"
    assert IO.annotate("1\t10\t.\tA\t.\t.\t.\t.\n", [[None, "missing_alt"]]) == "1\t10\t.\tA\t.\t.\t.\t.\n"
    assert IO.annotate("1\t10\t.\tA\tG\t.\t.\t.\n", [[-2.0, "ok"]]).endswith("\tEVO2_SCORE=-2;EVO2_STATUS=ok\n")


def test_output_header_records_the_run(tmp_path):
    path = tmp_path / "h.vcf"
    path.write_text('##fileformat=VCFv4.2\n##INFO=<ID=EVO2_SCORE,Number=1,Type=String,Description="old">\n'
                    "##evo2lite_window=5\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    with pysam.VariantFile(str(path)) as vf:
        text = IO.output_header(vf.header, {"window": "128", "model": "m"}, 128, "sum", "forward")
    assert "##evo2lite_window=128\n" in text and "##evo2lite_window=5" not in text
    assert text.count("ID=EVO2_SCORE,") == 1 and 'ID=EVO2_SCORE,Number=A,Type=Float' in text
    assert "ID=EVO2_STATUS,Number=A,Type=String" in text
    assert text.endswith("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
