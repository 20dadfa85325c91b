"""pipelines.vcf: allele classes, REF checks and the REF/ALT windows (pure functions, no model)."""

import pytest

from evo2lite.pipelines import vcf as V


@pytest.mark.parametrize("allele, status", [
    ("A", V.STATUS_OK), ("acgt", V.STATUS_OK), ("TTTG", V.STATUS_OK),
    ("N", V.STATUS_N_ALLELE), ("acgtn", V.STATUS_N_ALLELE), ("ANA", V.STATUS_N_ALLELE),
    (".", V.STATUS_MISSING_ALT), ("", V.STATUS_MISSING_ALT), (None, V.STATUS_MISSING_ALT),
    ("*", V.STATUS_STAR),
    ("<DEL>", V.STATUS_SYMBOLIC), ("<*>", V.STATUS_SYMBOLIC), ("<NON_REF>", V.STATUS_SYMBOLIC),
    ("<DUP:TANDEM>", V.STATUS_SYMBOLIC),
    ("]1:100]AGT", V.STATUS_BREAKEND), ("AGT[1:100[", V.STATUS_BREAKEND), (".A", V.STATUS_BREAKEND),
    ("A.", V.STATUS_BREAKEND),
    ("R", V.STATUS_IUPAC), ("ACY", V.STATUS_IUPAC),
    ("A-C", V.STATUS_INVALID_ALLELE), ("X", V.STATUS_INVALID_ALLELE), ("A C", V.STATUS_INVALID_ALLELE),
])
def test_classify_allele(allele, status):
    assert V.classify_allele(allele) == status


def test_every_status_is_described():
    codes = {getattr(V, name) for name in dir(V) if name.startswith("STATUS_") and name != "STATUS_DESCRIPTIONS"}
    assert codes == set(V.STATUS_DESCRIPTIONS)


def test_check_ref_is_case_insensitive_and_n_matches_anything():
    assert V.check_ref("ACG", "acg")
    assert V.check_ref("ANG", "ACG")
    assert not V.check_ref("ACG", "ACT")
    assert not V.check_ref("AC", "ACG")


def test_window_status():
    # documented rules: more than MAX_N_SHARE (10%) of a window N -> n_rich; an N between bases (not a run
    # at an end of the window) -> n_inside; any other non-ACGT byte (IUPAC from the reference) ->
    # iupac_in_window, checked first
    assert V.MAX_N_SHARE == 0.10
    assert V.window_status("ACGT" * 5) == V.STATUS_OK
    assert V.window_status("N" + "A" * 9) == V.STATUS_OK            # exactly 10% N, at an end: scored
    assert V.window_status("N" + "A" * 18 + "N") == V.STATUS_OK    # runs at both ends: the window meets gaps
    assert V.window_status("NN" + "A" * 17) == V.STATUS_N_RICH      # 2 of 19 > 10%
    assert V.window_status("ACGNNNNN") == V.STATUS_N_RICH
    assert V.window_status("") == V.STATUS_N_RICH
    assert V.window_status("A" * 10 + "N" + "A" * 19) == V.STATUS_N_INSIDE  # one N between bases: 3%
    assert V.window_status("A" * 20, "A" * 9 + "NN" + "A" * 9) == V.STATUS_N_INSIDE
    assert V.window_status("ACGTRACGT") == V.STATUS_IUPAC_IN_WINDOW
    assert V.window_status("NNNNY") == V.STATUS_IUPAC_IN_WINDOW
    assert V.window_status("ACGT-ACGT") == V.STATUS_IUPAC_IN_WINDOW
    # every window given counts: an ALT window that pulled in Ns on the right
    assert V.window_status("A" * 20, "A" * 17 + "NNN") == V.STATUS_N_RICH
    assert V.window_status("A" * 20, "A" * 19 + "K") == V.STATUS_IUPAC_IN_WINDOW
    assert V.window_status("A" * 20, "A" * 18 + "N", max_n_share=0.01) == V.STATUS_N_RICH


SEQ = "".join("ACGT"[(i * 7 + i // 3) % 4] for i in range(200))


def fetch(start, end):
    return SEQ[start:end]


def test_window_is_centred_on_the_variant():
    ctx = V.site_context(fetch, len(SEQ), 100, 16, 1)
    assert (ctx.win_start, ctx.ref_len) == (92, 16)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[100], "T" if SEQ[100] != "T" else "A")
    assert ref_w == SEQ[92:108]
    assert len(alt_w) == 16 and alt_w[:8] == ref_w[:8] and alt_w[9:] == ref_w[9:] and alt_w[8] != ref_w[8]


def test_mnv_keeps_length():
    ctx = V.site_context(fetch, len(SEQ), 100, 20, 3)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[100:103], "TTT")
    assert ref_w == SEQ[90:110] and alt_w == SEQ[90:100] + "TTT" + SEQ[103:110]


def test_deletion_pulls_in_bases_on_the_right():
    # VCF-style deletion with its anchor base: REF = x + 4 deleted bases, ALT = x
    ctx = V.site_context(fetch, len(SEQ), 100, 20, 5)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[100:105], SEQ[100])
    assert ref_w == SEQ[90:110]
    assert alt_w == SEQ[90:101] + SEQ[105:114]
    assert len(alt_w) == len(ref_w) == 20


def test_insertion_pushes_bases_out_on_the_right():
    ctx = V.site_context(fetch, len(SEQ), 100, 20, 1)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[100], SEQ[100] + "GGG")
    assert alt_w == SEQ[90:101] + "GGG" + SEQ[101:107]
    assert len(alt_w) == len(ref_w) == 20


def test_long_insertion_is_cut_at_the_window_end():
    ctx = V.site_context(fetch, len(SEQ), 100, 16, 1)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[100], SEQ[100] + "G" * 40)
    assert alt_w == SEQ[92:101] + "G" * 7 and len(ref_w) == 16


def test_windows_are_clipped_at_contig_start():
    ctx = V.site_context(fetch, len(SEQ), 3, 16, 1)
    assert (ctx.win_start, ctx.ref_len) == (0, 11)
    ref_w, alt_w = V.allele_windows(ctx, SEQ[3], "N")
    assert ref_w == SEQ[:11] and alt_w == SEQ[:3] + "N" + SEQ[4:11]


def test_windows_are_clipped_at_contig_end_and_deletion_shortens_both():
    n = len(SEQ)
    ctx = V.site_context(fetch, n, n - 6, 16, 4)
    assert ctx.ref_len == 8 + 6 and ctx.seq == SEQ[n - 14:]
    ref_w, alt_w = V.allele_windows(ctx, SEQ[n - 6: n - 2], SEQ[n - 6])
    # Only 2 reference bases follow the deleted ones: both windows are cut to the ALT's length.
    assert alt_w == SEQ[n - 14: n - 5] + SEQ[n - 2:]
    assert ref_w == SEQ[n - 14: n - 14 + len(alt_w)]


def test_soft_masked_reference_is_upper_cased():
    low = SEQ.lower()
    ctx = V.site_context(lambda s, e: low[s:e], len(low), 50, 16, 1)
    assert ctx.ref_window == SEQ[42:58]


def test_to_zero_based():
    assert V.to_zero_based(1) == 0
    assert V.to_zero_based("14370") == 14369
