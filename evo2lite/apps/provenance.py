"""What produced an output: one provenance dict for `score`, `generate` and `embed`, with the same keys,
values and text form as `score-vcf`'s header and table (`#evo2lite_KEY=VALUE` lines), so every output says
which model (source and a weights digest), dtype, FP8 mode and window/context made it.

The digest and the line format are score-vcf's own functions, reused rather than copied: a run scored with
score-vcf and one with score carry the same `weights` value for the same loaded model.
"""

from __future__ import annotations

from .score_vcf import _model_identity
from .score_vcf_io import _meta_lines

__all__ = ["run_provenance", "comment_lines", "weights_digest"]


def weights_digest(model) -> str:
    """sha256 over every tensor's name, shape and (abs) sums: score-vcf's identity of a loaded model."""
    return _model_identity(model)["weights"]


def run_provenance(model, **settings) -> dict[str, str]:
    """version, model (its source), weights (sha256 of per-tensor name, shape and sums: score-vcf's run
    fingerprint), dtype, fp8 (load_model's choice; "off" for a model built by hand), device, the trained
    context, then `settings` (window/context and the like; None values left out), all as strings."""
    from .. import __version__

    prov = getattr(model, "provenance", {})
    meta = {"version": __version__, "model": str(getattr(model, "source", type(model).__name__)),
            "weights": weights_digest(model),
            "dtype": str(model.dtype).removeprefix("torch."), "fp8": prov.get("fp8", "off"),
            "device": model.device.type, "trained_context": str(model.config.context_len)}
    meta.update({key: str(value) for key, value in settings.items() if value is not None})
    return meta


def comment_lines(meta: dict[str, str]) -> list[str]:
    """`#evo2lite_KEY=VALUE` lines, as score-vcf's table starts (whitespace in values folded to one space)."""
    return _meta_lines(meta, "#")
