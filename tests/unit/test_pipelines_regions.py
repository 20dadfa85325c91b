"""The one region parser and BED reader (pipelines/regions.py)."""

import gzip

import pytest

from evo2lite.errors import InputError
from evo2lite.pipelines.regions import (Region, RegionError, RegionSet, parse_region, parse_regions, read_bed,
                                        regions_from_options, resolve_regions)


@pytest.mark.parametrize("text, expected", [
    ("chr1", Region("chr1", 0, None)),
    ("chr1:100", Region("chr1", 99, None)),            # samtools: pos alone runs to the contig end
    ("chr1:100-", Region("chr1", 99, None)),
    ("chr1:100-200", Region("chr1", 99, 200)),          # 1-based inclusive -> 0-based half-open
    ("20:1,450,000-1,456,000", Region("20", 1_449_999, 1_456_000)),
    ("  20:5-5 ", Region("20", 4, 5)),
    ("HLA-A*01:01:01:0x", Region("HLA-A*01:01:01:0x", 0, None)),
    ("{HLA-A*01:01}:3-4", Region("HLA-A*01:01", 2, 4)),
])
def test_parse_region(text, expected):
    assert parse_region(text) == expected


@pytest.mark.parametrize("text", ["", "20:0-5", "20:5-3", "20:-5", "20:1,45-2", "20:1000,2000", ":5-9",
                                  "{20:5-9", "{20}5", "chr 1:5"])
def test_parse_region_rejects_malformed(text):
    with pytest.raises(RegionError) as info:
        parse_region(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)


def test_parse_regions_add_up_and_label():
    regions = parse_regions(["1:5-9", "2", "3:7"])
    assert regions == [Region("1", 4, 9), Region("2"), Region("3", 6)]
    assert [r.label for r in regions] == ["1:5-9", "2", "3:7-"]


def test_read_bed(tmp_path):
    bed = tmp_path / "a.bed.gz"
    with gzip.open(bed, "wt") as fh:
        fh.write("track name=x\nbrowser position 1\n# comment\n\nchr1\t0\t10\tgeneA\nchr2 5 6\n")
    regions = read_bed(bed)
    assert regions == [Region("chr1", 0, 10), Region("chr2", 5, 6)]
    assert regions[0].name == "geneA"


@pytest.mark.parametrize("line", ["chr1\t5\n", "chr1\tx\t9\n", "chr1\t9\t5\n", "chr1\t-1\t5\n"])
def test_read_bed_malformed_names_file_and_line(tmp_path, line):
    bed = tmp_path / "b.bed"
    bed.write_text("chr1\t0\t1\n" + line)
    with pytest.raises(RegionError, match=r"b\.bed:2: "):
        read_bed(bed)


def test_regions_from_options(tmp_path):
    bed = tmp_path / "c.bed"
    bed.write_text("x\t1\t2\n")
    assert regions_from_options(None, None) is None
    assert regions_from_options(["a:1-2", "b"], [bed]) == [Region("a", 0, 2), Region("b"), Region("x", 1, 2)]
    empty = tmp_path / "e.bed"
    empty.write_text("# nothing\n")
    with pytest.raises(RegionError, match="no intervals"):
        regions_from_options([], empty)
    with pytest.raises(RegionError, match="no such BED file"):
        regions_from_options([], tmp_path / "missing.bed")


def test_resolve_regions():
    contigs = {"chr1": 100, "chr2": 50}
    got = resolve_regions([Region("chr1", 10), Region("chr2", 0, 50)], contigs)
    assert [(r.contig, r.start, r.end) for r in got] == [("chr1", 10, 100), ("chr2", 0, 50)]
    hla = resolve_regions([parse_region("HLA-A*01:01:01:01"), parse_region("HLA-A*01:01:01:01:2-3")],
                          {"HLA-A*01:01:01:01": 9})
    assert [(r.contig, r.start, r.end) for r in hla] == [("HLA-A*01:01:01:01", 0, 9), ("HLA-A*01:01:01:01", 1, 3)]
    with pytest.raises(RegionError, match="not in the reference.*chr1, chr2"):
        resolve_regions([Region("chr3")], contigs)
    with pytest.raises(RegionError, match="outside contig chr2"):
        resolve_regions([Region("chr2", 0, 51)], contigs)
    with pytest.raises(RegionError, match="outside contig chr2"):
        resolve_regions([Region("chr2", 60)], contigs)


def test_region_set_overlaps_and_unmatched():
    regions = [Region("chr1", 10, 20), Region("1", 15, 30), Region("2", 5), Region("3", 0, 5)]
    rs = RegionSet(regions)
    assert rs.overlaps("1", 29, 30) and not rs.overlaps("chr1", 30, 31) and not rs.overlaps("1", 0, 10)
    assert rs.overlaps("chr2", 10**9, 10**9 + 1) and not rs.overlaps("2", 4, 5)
    assert rs.overlaps("1", 10, 10) and not rs.overlaps("1", 9, 9)  # an empty span counts as its first base
    assert rs.unmatched() == [Region("3", 0, 5)]
