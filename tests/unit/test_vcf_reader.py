"""pipelines.vcf: reading VCF/BCF/stdin/plain gzip, errors with file and line, regions (scan and index)."""

import gzip
import io
import sys

import pysam
import pytest

from evo2lite.errors import InputError
from evo2lite.pipelines import vcf as V
from evo2lite.pipelines.regions import RegionSet, parse_regions

VCF = """##fileformat=VCFv4.2
##contig=<ID=1,length=1000>
##contig=<ID=chr1>
##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
1\t10\trs1\tA\tC\t.\t.\tDP=3
1\t20\t.\tAC\tA,ACC,<DEL>\t.\t.\t.
chr1\t30\t.\tG\t.\t.\t.\t.
1\t40\t.\tT\t]1:5]T\t.\t.\t.
"""


@pytest.fixture()
def vcf_path(tmp_path):
    path = tmp_path / "in.vcf"
    path.write_text(VCF)
    return path


def read_all(path, **kw):
    return list(V.read_variants(path, **kw))


def test_variants_are_0_based_with_pos_kept(vcf_path):
    variants = read_all(vcf_path)
    assert [v.index for v in variants] == [0, 1, 2, 3]
    first = variants[0]
    assert (first.chrom, first.pos, first.start, first.end, first.id, first.ref, first.alts) == \
        ("1", 10, 9, 10, "rs1", "A", ("C",))
    assert variants[1].alts == ("A", "ACC", "<DEL>")
    assert variants[2].alts == () and variants[2].id is None
    assert variants[3].alts == ("]1:5]T",)


@pytest.mark.parametrize("kind", ["bgzf", "bcf", "plain_gzip"])
def test_compressed_and_binary_inputs(vcf_path, tmp_path, kind):
    if kind == "bgzf":
        path = tmp_path / "in.vcf.gz"
        pysam.tabix_compress(str(vcf_path), str(path))
    elif kind == "bcf":
        # (htslib writes an unreadable BCF record for the <DEL> line of this VCF, so leave it out)
        vcf_path.write_text("".join(line + "\n" for line in VCF.splitlines() if "<DEL>" not in line))
        path = tmp_path / "in.bcf"
        with pysam.VariantFile(str(vcf_path)) as src, pysam.VariantFile(str(path), "wb", header=src.header) as out:
            for rec in src:
                out.write(rec)
    else:
        path = tmp_path / "plain.vcf.gz"
        path.write_bytes(gzip.compress(vcf_path.read_bytes()))
    assert read_all(path) == read_all(vcf_path)


def test_stdin_is_spooled_and_removed(vcf_path):
    with V.VcfInput("-", stdin=io.BytesIO(vcf_path.read_bytes())) as source:
        assert source.name == "<stdin>"
        spooled = source.path
        for _ in range(2):  # readable more than once
            vf = source.open()
            assert sum(1 for _ in source.records(vf)) == 4
            vf.close()
    assert not spooled.exists()


def test_stdin_default_reads_sys_stdin(vcf_path, monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO(vcf_path.read_bytes())
    monkeypatch.setattr(sys, "stdin", FakeStdin)
    assert len(read_all("-")) == 4


def error_of(path):
    with pytest.raises(InputError) as info:
        read_all(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "absent.vcf")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.vcf"
    path.write_text("")
    assert error_of(path).startswith(f"{path}: line 1:")


def test_bad_header_names_the_line(tmp_path):
    path = tmp_path / "bad.vcf"
    path.write_text('##fileformat=VCFv4.3\n##ALT=<ID=DEL,Description="broken\nline">\n'
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    assert error_of(path).startswith(f"{path}: line 3:")


def test_unparseable_record_names_the_line(tmp_path):
    path = tmp_path / "bad.vcf"
    lines = VCF.splitlines()
    lines.insert(7, "1\tnotanumber\t.\tA\tC\t.\t.\t.")
    path.write_text("\n".join(lines) + "\n")
    message = error_of(path)
    assert message.startswith(f"{path}: line 8:"), message


def test_truncated_bgzf(vcf_path, tmp_path):
    path = tmp_path / "in.vcf.gz"
    pysam.tabix_compress(str(vcf_path), str(path))
    data = path.read_bytes()
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) // 2])
    error_of(cut)


def test_xz_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "in.vcf.xz"
    path.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 20)
    assert "bgzip" in error_of(path)


def test_header_only_is_valid(tmp_path):
    path = tmp_path / "h.vcf"
    path.write_text("".join(line + "\n" for line in VCF.splitlines()[:5]))
    assert read_all(path) == []


# --- regions ---------------------------------------------------------------------------------------

def regions(*texts):
    return RegionSet(parse_regions(texts))


def test_region_strings_are_1_based_inclusive():
    rs = regions("1:10-20", "chr2:5")
    assert rs.overlaps("1", 9, 10)        # POS 10
    assert rs.overlaps("1", 19, 20)       # POS 20
    assert not rs.overlaps("1", 20, 21)   # POS 21
    assert not rs.overlaps("1", 8, 9)     # POS 9
    assert rs.overlaps("chr1", 15, 16)    # alias
    assert rs.overlaps("2", 10**9, 10**9 + 1)
    assert not rs.overlaps("2", 3, 4)
    assert not rs.overlaps("3", 0, 1)


def test_region_overlap_of_long_ref():
    rs = regions("1:100-100")
    assert rs.overlaps("1", 95, 100)   # a deletion spanning POS 100
    assert not rs.overlaps("1", 95, 99)


def test_read_variants_with_regions(vcf_path):
    variants = read_all(vcf_path, regions=regions("1:15-35"))
    assert [v.pos for v in variants] == [20, 30]


def _indexed(tmp_path, lines):
    plain = tmp_path / "s.vcf"
    plain.write_text("##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n"
                     "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(lines))
    return pysam.tabix_index(str(plain), preset="vcf", force=True)


def test_fetch_through_the_index_in_input_order_once_each(tmp_path):
    lines = [f"{c}\t{p}\t.\t{r}\tC\t.\t.\t.\n" for c, p, r in
             [("1", 10, "A"), ("1", 18, "AAAAA"), ("1", 30, "A"), ("1", 50, "A"), ("2", 5, "A"), ("2", 90, "A")]]
    path = _indexed(tmp_path, lines)
    # regions out of order, overlapping, an alias, one matching nothing; POS 18 (a 5-base REF) overlaps two
    wanted = parse_regions(["chr2:1-10", "1:20-31", "1:15-20", "1:25-35", "1:200-300"])
    matched = set()
    with V.VcfInput(path) as source:
        vf = source.open()
        assert vf.index is not None
        got = [(rec.chrom, rec.pos) for _, rec in source.fetch(vf, wanted, matched)]
        vf.close()
    assert got == [("1", 18), ("1", 30), ("2", 5)]
    assert matched == {0, 1, 2, 3}


def test_contig_key():
    assert V.contig_key("chr1") == V.contig_key("1") == "1"
    assert V.contig_key("chrM") == V.contig_key("MT") == V.contig_key("M") == "MT"
    assert V.contig_key("chrUn_gl000220") == "Un_gl000220"


def test_header_contig_lengths(vcf_path):
    with pysam.VariantFile(str(vcf_path)) as vf:
        assert V.header_contig_lengths(vf.header) == {"1": 1000}
