"""Byte tokenizer of Evo 2 (spec §5): UTF-8 bytes are the ids 0..255 of a 512-entry vocabulary.

EOS = 0, PAD = 1, no BOS. Any byte is a valid input (N, IUPAC codes, phylogenetic tags). Case policy:
Evo 2 was trained on upper-cased input only (savanna upper-cased every lower-case letter, spec §5), so the
lower-case bases a/c/g/t/n are upper-cased, and a phylogenetic tag between '|' marks (`|d__Bacteria;...|`)
is upper-cased whole, as the model saw it in training (`|D__BACTERIA;...|`). Other bytes are kept.
"""

from __future__ import annotations

import numpy as np
import torch

EOS_ID = 0
PAD_ID = 1
VOCAB_SIZE = 512

_CASE_TABLE = bytes.maketrans(b"acgtn", b"ACGTN")


def to_bytes(seq: str | bytes) -> bytes:
    """The bytes the model sees: UTF-8, a/c/g/t/n upper-cased, tags between '|' marks upper-cased whole."""
    raw = seq.encode("utf-8") if isinstance(seq, str) else bytes(seq)
    if b"|" not in raw:
        return raw.translate(_CASE_TABLE)
    parts = raw.split(b"|")  # odd parts lie inside |...| tags
    return b"|".join(part.upper() if i % 2 else part.translate(_CASE_TABLE) for i, part in enumerate(parts))


def encode(seq: str | bytes) -> torch.Tensor:
    """Token ids (int64, 1-D) of a sequence."""
    return torch.from_numpy(np.frombuffer(to_bytes(seq), dtype=np.uint8).astype(np.int64))


def encode_batch(seqs: list[str | bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, Lmax) with PAD and the lengths (B,)."""
    ids = [encode(s) for s in seqs]
    lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
    out = torch.full((len(ids), int(lengths.max()) if ids else 0), PAD_ID, dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, : len(i)] = i
    return out, lengths


def decode(ids) -> str:
    """Text of byte ids. Ids 256..511 (never produced by a trained model) decode to U+FFFD."""
    out = bytearray()
    for value in torch.as_tensor(ids).flatten().tolist():
        out += bytes([value]) if 0 <= value < 256 else "\ufffd".encode()
    return out.decode("utf-8", errors="replace")
