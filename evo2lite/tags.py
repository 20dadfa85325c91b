"""Evo 2 phylogenetic tags: ``|d__Bacteria;p__Pseudomonadota;c__...;o__...;f__...;g__...;s__...|``.

The official Evo 2 models saw such a tag in front of sequences in training (excluded from the loss; spec
§5: savanna ``mask_control_tags``), so a tag prepended to a prompt or a window conditions the model on the
lineage. The tokenizer upper-cases it as training did (``|D__BACTERIA;...|``). ``--tag`` on score, score-vcf,
generate and embed prepends it as context only: its tokens are never scored, never returned and never
pooled (see each command's docs). Models trained without tags (the shipped one, anything ``evo2lite
train`` made) read it as unfamiliar bytes: ``check_tag`` warns then.
"""

from __future__ import annotations

import re

from .errors import Evo2LiteError

__all__ = ["RANKS", "TagError", "build_tag", "check_tag", "trained_with_tags"]

RANKS = ("d", "p", "c", "o", "f", "g", "s")  # domain, phylum, class, order, family, genus, species
_NAMES = ("domain", "phylum", "class", "order", "family", "genus", "species")
_FIELD = re.compile(r"^([dpcofgs])__([^|;]*)$")


class TagError(Evo2LiteError, ValueError):
    """A malformed tag or lineage (a one-line CLI error, exit code 2)."""


def build_tag(lineage: str) -> str:
    """The tag of a lineage: ``"Bacteria;Pseudomonadota;Gammaproteobacteria;Enterobacterales;
    Enterobacteriaceae;Escherichia;Escherichia coli"`` (rank names in order, ``;``-separated; GTDB's
    ``d__Bacteria;p__...`` prefixes are accepted too) -> ``|d__Bacteria;p__...;s__Escherichia coli|``.
    Fewer than seven ranks give the leading ranks only (``|d__Bacteria;p__Pseudomonadota|``); an empty
    rank stays empty (``g__;``)."""
    text = lineage.strip()
    if text.startswith("|") and text.endswith("|") and len(text) > 1:
        text = text[1:-1]
    if not text:
        raise TagError("the lineage is empty: give ranks from domain down, e.g. 'Bacteria;Pseudomonadota'")
    parts = [p.strip() for p in text.split(";")]
    if len(parts) > len(RANKS):
        raise TagError(f"the lineage has {len(parts)} ranks; a tag has at most 7 ({', '.join(_NAMES)})")
    fields = []
    for rank, part in zip(RANKS, parts):
        m = _FIELD.match(part)
        if m:
            if m.group(1) != rank:
                raise TagError(f"lineage rank {len(fields) + 1} is {part!r}: expected the {_NAMES[len(fields)]} "
                               f"({rank}__...)")
            part = m.group(2)
        if "|" in part:
            raise TagError(f"lineage rank {part!r} holds '|', which delimits the tag")
        fields.append(f"{rank}__{part}")
    return "|" + ";".join(fields) + "|"


def check_tag(tag: str, model=None) -> str:
    """``tag`` if it is a well-formed tag (``|d__...|``, ranks in order d p c o f g s, at least the domain),
    else a TagError saying what is wrong; with ``model``, warns when that model was not trained with tags."""
    if not (len(tag) > 2 and tag.startswith("|") and tag.endswith("|")):
        raise TagError(f"--tag {tag!r}: a tag is |d__...;p__...;...;s__...| (build one with `evo2lite tag "
                       "'Bacteria;Pseudomonadota;...'`)")
    fields = tag[1:-1].split(";")
    if len(fields) > len(RANKS):
        raise TagError(f"--tag {tag!r}: {len(fields)} ranks; a tag has at most 7 (d p c o f g s)")
    for rank, field in zip(RANKS, fields):
        m = _FIELD.match(field)
        if not m or m.group(1) != rank:
            raise TagError(f"--tag {tag!r}: field {field!r} should be {rank}__NAME ({_NAMES[RANKS.index(rank)]})")
    if model is not None and not trained_with_tags(model):
        from .log import warn

        name = getattr(model.config, "name", "") or str(getattr(model, "source", "this model"))
        warn(f"--tag: {name} was not trained with phylogenetic tags (the official Evo 2 checkpoints were): "
             "it reads the tag as unfamiliar bytes, which conditions it on nothing useful")
    return tag


def trained_with_tags(model) -> bool:
    """Whether the model saw phylogenetic tags in training: the official Evo 2 checkpoints (config names
    evo2_*, as evo2lite.loading names them) did; the shipped evo2lite-small and anything trained by
    ``evo2lite train`` did not (its corpus has none)."""
    return str(getattr(model.config, "name", "")).startswith("evo2_")
