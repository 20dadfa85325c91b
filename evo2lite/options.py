"""Command-line options shared by every command: the one place where numeric options are validated, the
device is resolved, and the common option definitions (names, short flags, help) live.

Validation: `check_options(threads=..., batch_size=..., ...)` checks each given value (None = not given)
against `RULES`, keyed by the API argument name, and raises OptionError with the command-line spelling:
`--threads must be at least 1, got 0`. The CLI turns that into one line on stderr and exit code 2; API
functions call the same checks, so both surfaces refuse the same values with the same words.

Conventions (every command): `-r/--regions` repeatable region strings (samtools syntax, 1-based
inclusive), `-R/--regions-file` BED (0-based), `-f/--reference` FASTA, `-o/--output`, `--device
auto|cpu|cuda|cuda:N` (default auto), `--threads N`, and `-` for stdin where an input is streamed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import Evo2LiteError

__all__ = ["OptionError", "Rule", "RULES", "check_option", "check_options", "resolve_device", "apply_threads",
           "DeviceOpt", "ThreadsOpt", "RegionsOpt", "RegionsFileOpt", "ReferenceOpt", "OutputOpt", "ForceOpt",
           "Fp8Opt", "AllowInexactOpt", "ModelOpt", "ConfigOpt", "DtypeOpt", "VariantReferenceOpt", "ReduceOpt",
           "ProgressOpt"]


class OptionError(Evo2LiteError, ValueError):
    """An option (or API argument) outside its valid range."""


@dataclass(frozen=True)
class Rule:
    """kind int or float; low/high bounds (inclusive unless *_open); `note` explains a special value."""

    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{what} in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = (f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}")
        elif self.high is not None:
            text = (f"less than {self.high:g}" if self.high_open else f"at most {self.high:g}")
        else:
            text = what
        return f"{text} ({self.note})" if self.note else text

    def accepts(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, int):
                if not (isinstance(value, float) and value.is_integer()):
                    return False
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


# Keyed by the API argument name; the flag is `--` + the name with '-' for '_'.
RULES: dict[str, Rule] = {
    "threads": Rule(int, 1),
    "batch_size": Rule(int, 1),
    "chunk_size": Rule(int, 1),
    "chunk_len": Rule(int, 1),
    "context": Rule(int, 2),
    "window": Rule(int, 2),
    "window_overlap": Rule(int, 0),
    "stride": Rule(int, 1),
    "num_tokens": Rule(int, 1),
    "num_samples": Rule(int, 1),
    "temperature": Rule(float, 0, note="0 = greedy"),
    "top_k": Rule(int, note="<= 0 keeps every token"),
    "top_p": Rule(float, 0, 1, low_open=True),
    "seed": Rule(int, 0, 2 ** 63 - 1),
    "max_steps": Rule(int, 1),
    "time_budget": Rule(float, 0, low_open=True, note="seconds"),
    "capacity": Rule(int, 1),
}
_FLAGS = {"num_tokens": "-n/--num-tokens"}


def flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def check_option(name: str, value, rule: Rule | None = None, error: type[Exception] = OptionError):
    """`value` (as int or float) if it satisfies `rule` (default RULES[name]), else raise `error` (an
    Evo2LiteError subclass, e.g. a module's own); None passes (an option not given)."""
    if value is None:
        return None
    rule = rule or RULES[name]
    if not rule.accepts(value):
        raise error(f"{flag(name)} must be {rule.describe()}, got {value!r}")
    return int(value) if rule.kind is int else float(value)


def check_options(error: type[Exception] = OptionError, **values) -> None:
    """Check every given option against RULES (see the module docstring)."""
    for name, value in values.items():
        check_option(name, value, error=error)


_DEVICE = re.compile(r"^(auto|cpu|cuda|mps|cuda:\d+)$")


def resolve_device(device: str | None) -> str:
    """The torch device for `--device`: auto (or None) is cuda when available, else cpu; cuda and cuda:N
    must exist."""
    text = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE.match(text):
        raise OptionError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OptionError(f"--device {device}: no CUDA device is available here; use --device cpu (or auto)")
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            raise OptionError(f"--device {device}: there are {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
    if text == "mps" and not torch.backends.mps.is_available():
        raise OptionError("--device mps: MPS is not available here; use --device cpu (or auto)")
    return text


def apply_threads(threads: int | None) -> None:
    """Validate --threads and set torch's intra-op thread count (None leaves torch's default)."""
    threads = check_option("threads", threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# --- the common option definitions (typer) -----------------------------------------------------------

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for torch (default: torch's own choice).", show_default=False)]
RegionsOpt = Annotated[Optional[list[str]], typer.Option(
    "--regions", "-r", help="Region chr, chr:pos (to the contig end) or chr:start-end, 1-based inclusive as "
                            "samtools, thousands separators allowed; repeatable (regions add up).",
    show_default=False)]
RegionsFileOpt = Annotated[Optional[list[Path]], typer.Option(
    "--regions-file", "-R", help="BED file of regions (0-based half-open); repeatable.", show_default=False)]
ReferenceOpt = Annotated[Optional[str], typer.Option(
    "--reference", "-f", help="Reference FASTA (plain or BGZF, indexed on the fly).", show_default=False)]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Output file.", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
# every command that loads a model (evo2lite.loading.load_model's fp8 / allow_inexact; docs/checkpoints.md)
Fp8Opt = Annotated[str, typer.Option(
    "--fp8", help="Hyena input projections: auto, off, scaled_mm, mmaemu or emulate (docs/checkpoints.md).")]
AllowInexactOpt = Annotated[bool, typer.Option(
    "--allow-inexact", help="Run a 1B/20B/40B model where its FP8 projections cannot be computed exactly.")]
# the model to load (evo2lite.loading.load_model's model / config / dtype)
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="A shipped model: small (evo2lite-small, 2,048 context; the default) or base "
                          "(evo2lite-base, 8,192 context); or a model directory, Evo 2 .pt (with --config), "
                          "hf:REPO or an Evo 2 name (evo2_7b, evo2_40b, ...).", show_default=False)]
ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", help="YAML config (or preset name) for an Evo 2 .pt checkpoint.", show_default=False)]
ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress", help="Progress bar on stderr (drawn on a terminal, or with EVO2LITE_PROGRESS=1).")]
# score-vcf and mutagenize (one window per variant)
VariantReferenceOpt = Annotated[Path, typer.Option(
    "--reference", "-f", help="Reference FASTA (plain or BGZF); a .fai is built if missing.")]
ReduceOpt = Annotated[str, typer.Option(help="sum or mean of the window's next-token log-probs.")]
DtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", help="float32 or bfloat16 (default: float32 on CPU, bfloat16 on CUDA).", show_default=False)]
