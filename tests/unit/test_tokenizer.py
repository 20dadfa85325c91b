"""The byte tokenizer (spec §5): UTF-8 bytes are the ids, EOS 0 / PAD 1, a-z upper-cased."""

from __future__ import annotations

import torch

from evo2lite import tokenizer
from evo2lite.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE, decode, encode, encode_batch, to_bytes


def test_special_ids_and_vocab():
    assert (EOS_ID, PAD_ID, VOCAB_SIZE) == (0, 1, 512)
    assert not hasattr(tokenizer, "BOS_ID")  # Evo 2 has no BOS (spec §5)


def test_ids_are_the_utf8_bytes():
    ids = encode("ACGTN")
    assert ids.dtype == torch.int64 and ids.dim() == 1
    assert ids.tolist() == [65, 67, 71, 84, 78]
    text = "ACGT|D__BACTERIA;P__PSEUDOMONADOTA|@#RYKMSWBDHV-*é中"
    assert encode(text).tolist() == list(text.encode("utf-8"))
    assert encode(b"\x00\x01\xff").tolist() == [0, 1, 255]
    assert encode("").tolist() == []


def test_round_trip_of_upper_case_and_non_ascii_text():
    for text in ["ACGTNNNNACGT", "RYKMSWBDHV-.*", "@#|D__BACTERIA;P__PSEUDOMONADOTA|", "é中🧬 ACGT", ""]:
        assert decode(encode(text)) == text
    assert decode(encode(b"GATTACA")) == "GATTACA"


def test_lower_case_bases_are_upper_cased():
    assert encode("acgtn").tolist() == encode("ACGTN").tolist()
    assert to_bytes("aCgTnN") == b"ACGTNN"
    assert to_bytes(b"ggccaatt") == b"GGCCAATT"


def test_every_ascii_lower_case_byte_is_upper_cased():
    # spec §5: training upper-cased every byte 97-122 (a-z), not only a/c/g/t/n, so soft-masked IUPAC codes
    # reach the model as upper case; every other byte (0-96, 123-255) passes through unchanged
    assert to_bytes("ryswkmbdhv") == b"RYSWKMBDHV"
    assert to_bytes("x-y_z.") == b"X-Y_Z."
    every = bytes(range(256))
    assert to_bytes(every) == bytes(b - 32 if 97 <= b <= 122 else b for b in every)


def test_utf8_is_kept():
    # multi-byte UTF-8 sequences never contain bytes < 0x80, so upper-casing ASCII cannot touch them
    text = "é中🧬"
    assert to_bytes(text) == text.encode("utf-8")
    assert decode(encode(text)) == text


def test_phylogenetic_tags_are_upper_cased_whole():
    """Control tags (|d__...;p__...|) are upper-cased as a whole, as savanna fed them in training (spec §5),
    never half-way (a/c/g/t/n only would give |d__BACTeriA;), and so is the DNA around them."""
    assert to_bytes("|d__Bacteria;") == b"|D__BACTERIA;"
    tag = "|d__Bacteria;p__Pseudomonadota;c__Gammaproteobacteria;o__Enterobacterales;f__Enterobacteriaceae;" \
          "g__Escherichia;s__Escherichia|"
    assert to_bytes(tag + "acgt") == (tag.upper() + "ACGT").encode()
    assert to_bytes("acgt" + tag + "ttaa") == ("ACGT" + tag.upper() + "TTAA").encode()
    assert to_bytes("ryk|x|ryk") == b"RYK|X|RYK"


def test_encode_batch_right_pads_with_pad():
    ids, lengths = encode_batch(["ACGT", "A", "", b"GG"])
    assert lengths.tolist() == [4, 1, 0, 2]
    assert ids.shape == (4, 4) and ids.dtype == torch.int64
    assert ids[0].tolist() == [65, 67, 71, 84]
    assert ids[1].tolist() == [65, PAD_ID, PAD_ID, PAD_ID]
    assert ids[2].tolist() == [PAD_ID] * 4
    assert ids[3].tolist() == [71, 71, PAD_ID, PAD_ID]
    ids, lengths = encode_batch([])
    assert ids.shape == (0, 0) and lengths.tolist() == []


def test_decode_out_of_byte_range_ids():
    assert decode(torch.tensor([65, 300, 67])) == "A\ufffdC"
    assert decode([[71], [84]]) == "GT"  # any shape, flattened
