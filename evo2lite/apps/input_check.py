"""A check that the input is DNA: `score` and `embed` accept any bytes (the model's vocabulary is every
byte), so a protein FASTA would be scored or embedded without a word. `DnaCheck` counts, per record, the
bytes outside A/C/G/T/N (either case); a record with more than NON_DNA_SHARE of them is reported in one
warning line at the end of the run, with counts.

The threshold: IUPAC ambiguity codes (R, Y, K, M, S, W, ...) are rare in assemblies (well under 1% of a
genome), while a protein sequence has about 75% residues outside A/C/G/T/N (only Ala, Cys, Gly, Thr and Asn
share the letters), so 25% separates the two with a wide margin either side.
"""

from __future__ import annotations

import numpy as np

from ..log import warn

NON_DNA_SHARE = 0.25
_NOT_DNA = np.ones(256, dtype=bool)
_NOT_DNA[np.frombuffer(b"ACGTNacgtn", dtype=np.uint8)] = False


def non_dna_count(seq: bytes | str | np.ndarray) -> int:
    """Bytes of `seq` (text, or an array of byte values / token ids < 256) outside A/C/G/T/N (either case)."""
    if isinstance(seq, np.ndarray):
        values = seq
    else:
        values = np.frombuffer(seq.encode("utf-8") if isinstance(seq, str) else seq, dtype=np.uint8)
    return int(np.count_nonzero(_NOT_DNA[values]))


class DnaCheck:
    """`add(seq)` per piece of the current record, `end_record()` after each record, `report()` at the end."""

    def __init__(self, threshold: float = NON_DNA_SHARE) -> None:
        self.threshold = threshold
        self.records = self.flagged = 0
        self.flagged_bases = self.flagged_other = 0
        self._bases = self._other = 0

    def add(self, seq: bytes | str | np.ndarray) -> None:
        self._bases += len(seq)
        self._other += non_dna_count(seq)

    def end_record(self) -> None:
        self.records += 1
        if self._bases and self._other > self.threshold * self._bases:
            self.flagged += 1
            self.flagged_bases += self._bases
            self.flagged_other += self._other
        self._bases = self._other = 0

    def message(self) -> str | None:
        if not self.flagged:
            return None
        return (f"{self.flagged} of {self.records} record(s) do not look like DNA: {self.flagged_other:,} of "
                f"their {self.flagged_bases:,} bytes ({self.flagged_other / self.flagged_bases:.0%}) are not "
                f"A/C/G/T/N (threshold {self.threshold:.0%}); the model was trained on DNA, so their results "
                f"are not meaningful (a protein FASTA?)")

    def report(self) -> None:
        """Print the one-line warning when any record was flagged."""
        text = self.message()
        if text:
            warn(text)
