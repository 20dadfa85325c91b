"""Byte tokenizer of Evo 2 (spec §5): UTF-8 bytes are the ids 0..255 of a 512-entry vocabulary.

EOS = 0, PAD = 1, no BOS. Any byte is a valid input (N, IUPAC codes, phylogenetic tags). Case policy,
as in training (spec §5: savanna upper-cased every input byte 97-122, a-z, before the model, tags and
soft-masked repeats included): every ASCII lower-case letter is upper-cased, so `acgtn`, soft-masked
IUPAC codes (`ryk` -> `RYK`) and phylogenetic tags (`|d__Bacteria;|` -> `|D__BACTERIA;|`) reach the
model as it saw them. No other byte changes (UTF-8 multi-byte sequences have no byte below 0x80).
"""

from __future__ import annotations

import numpy as np
import torch

EOS_ID = 0
PAD_ID = 1
VOCAB_SIZE = 512

def to_bytes(seq: str | bytes) -> bytes:
    """The bytes the model sees: UTF-8 with a-z upper-cased (bytes.upper touches ASCII letters only)."""
    raw = seq.encode("utf-8") if isinstance(seq, str) else bytes(seq)
    return raw.upper()


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
