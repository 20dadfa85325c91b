"""`evo2lite selftest --model NAME`: does this install reproduce the published numbers of an Evo 2 checkpoint?

The check is evo2's own upstream test (`evo2/test/test_evo2.py`, spec §7): the four sequences of
`evo2/test/data/prompts.csv`, each run whole; per sequence the mean next-token cross entropy of positions
1..L-1 and the argmax accuracy; the means over sequences compared with the published values. The test
passes when |loss - expected| < 1e-3, as upstream (which computes the loss from bf16 logits, so a bf16
model's per-sequence loss is rounded to bf16 here too). Accuracy is reported beside it, not judged.

The sequences are evo2's own file (Apache-2.0), shipped byte-identical with its data card in
data/evo2_selftest/ (installed as evo2lite/selftest_data/) and checked against its sha256 before use;
`--prompts CSV` runs another file instead.

Legend: L length, V vocabulary.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import Evo2LiteError, cli_errors
from ..options import AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, Fp8Opt

# evo2/test/test_evo2.py expected_metrics: mean loss, accuracy in percent
EXPECTED = {
    "evo2_40b": (0.2159424, 91.673),
    "evo2_7b": (0.3476563, 86.346),
    "evo2_40b_base": (0.2149658, 91.741),
    "evo2_7b_base": (0.3520508, 85.921),
    "evo2_1b_base": (0.501953125, 79.556),
    "evo2_20b": (0.2166748046875, 91.666),
}
LOSS_TOLERANCE = 1e-3  # upstream's eps
# evo2 test/data/prompts.csv (the same blob since the file was added; data/evo2_selftest/README.md)
PROMPTS_SHA256 = "371015ef6e1c87bfa2cfe548e3025230f0fdd1a2b63af8a7e110b84341e0493c"
_HERE = Path(__file__).resolve().parent
# installed: package data; source checkout: data/ beside the package
SHIPPED_PROMPTS = (_HERE.parent / "selftest_data" / "prompts.csv",
                   _HERE.parents[1] / "data" / "evo2_selftest" / "prompts.csv")


@dataclass
class SelftestResult:
    name: str
    losses: list[float]
    accuracies: list[float]  # fractions
    expected_loss: float
    expected_accuracy: float | None  # percent

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    @property
    def accuracy(self) -> float:
        return 100.0 * sum(self.accuracies) / len(self.accuracies)

    @property
    def passed(self) -> bool:
        return abs(self.loss - self.expected_loss) < LOSS_TOLERANCE


def find_prompts(path: str | Path | None = None) -> Path:
    """`path`, else the shipped copy of evo2's prompts.csv after checking its sha256 (a changed file would
    make a PASS meaningless)."""
    if path is not None:
        if not Path(path).is_file():
            raise Evo2LiteError(f"--prompts {path}: no such file")
        return Path(path)
    for candidate in SHIPPED_PROMPTS:
        if candidate.is_file():
            digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
            if digest != PROMPTS_SHA256:
                raise Evo2LiteError(f"{candidate}: not evo2's prompts.csv (sha256 {digest[:16]}..., expected "
                                    f"{PROMPTS_SHA256[:16]}...); reinstall evo2lite or pass --prompts PATH")
            return candidate
    raise Evo2LiteError("selftest needs evo2's reference sequences (evo2/test/data/prompts.csv, 4 sequences), "
                        "which this installation lacks: pass --prompts PATH to a copy")


def read_prompts(path: Path) -> list[str]:
    """The first column after the header (upstream's read_prompts)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    seqs = [row[0] for row in rows[1:] if row and row[0]]
    if not seqs:
        raise Evo2LiteError(f"{path}: no sequences (expected a CSV with a header and sequences in column 1)")
    if any(len(s) < 2 for s in seqs):
        raise Evo2LiteError(f"{path}: every sequence needs at least 2 bases")
    return seqs


def sequence_metrics(model, seq: str, chunk_len: int) -> tuple[float, float]:
    """(mean cross entropy, argmax accuracy) of positions 1..L-1, streamed through the engine in chunks."""
    import torch

    from ..inference.engine import forward_chunk
    from ..tokenizer import encode

    ids_L = encode(seq).to(model.device)
    L = ids_L.shape[0]
    state = model.new_state(1)
    state.extra["kv_capacity"] = L
    nll = correct = 0.0
    with torch.inference_mode():
        for a in range(0, L - 1, chunk_len):
            b = min(L - 1, a + chunk_len)
            logits_LV = forward_chunk(model, ids_L[None, a:b], state, logits="all")[0].float()
            target_L = ids_L[a + 1:b + 1]
            nll += torch.nn.functional.cross_entropy(logits_LV, target_L, reduction="sum").item()
            correct += (logits_LV.argmax(-1) == target_L).sum().item()
    loss = nll / (L - 1)
    if model.dtype == torch.bfloat16:  # upstream's loss is a bf16 scalar (cross entropy of bf16 logits)
        loss = torch.tensor(loss).to(torch.bfloat16).item()
    return loss, correct / (L - 1)


def selftest(model, sequences: list[str], name: str, *, expected: tuple[float, float | None] | None = None,
             chunk_len: int = 8192, progress=None) -> SelftestResult:
    """Run the upstream test on a loaded model; `expected` (loss, accuracy %) defaults to the published
    values for `name`."""
    if expected is None:
        if name not in EXPECTED:
            raise Evo2LiteError(f"no published reference for {name!r} (known: {', '.join(EXPECTED)}); give "
                                "--expect-loss for another checkpoint")
        expected = EXPECTED[name]
    losses, accs = [], []
    for seq in sequences:
        loss, acc = sequence_metrics(model, seq, chunk_len)
        losses.append(loss)
        accs.append(acc)
        if progress is not None:
            progress(len(losses), loss, acc)
    return SelftestResult(name, losses, accs, float(expected[0]), expected[1])


@cli_errors
def selftest_command(
    model: Annotated[str, typer.Option("--model", "-m", help="An Evo 2 name (evo2_7b, evo2_40b, ...) or any "
                                       "model spec with --expect-loss.")],
    config: ConfigOpt = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="A CSV of sequences in column 1 (default: "
                                                    "evo2's test/data/prompts.csv, shipped).")] = None,
    expect_loss: Annotated[Optional[float], typer.Option("--expect-loss", help="Expected mean loss (default: "
                                                         "the published value for the model name).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
) -> None:
    """Run evo2's upstream forward test (4 sequences, spec §7) and print PASS or FAIL (exit 0 / 1)."""
    from ..loading import EVO2_REPOS, load_model
    from ..log import note
    from ..options import resolve_device

    if expect_loss is None and model in EVO2_REPOS and model not in EXPECTED:  # before importing tens of GB
        raise Evo2LiteError(f"evo2 publishes no reference loss for {model} (published: {', '.join(EXPECTED)}); "
                            "give --expect-loss")
    path = find_prompts(prompts)
    sequences = read_prompts(path)
    net = load_model(model, config=config, device=resolve_device(device), dtype=dtype, fp8=fp8,
                     allow_inexact=allow_inexact)
    name = model if model in EXPECTED else net.config.name
    expected = None if expect_loss is None else (expect_loss, None)
    result = selftest(net, sequences, name, expected=expected,
                      progress=lambda i, loss, acc: note(f"sequence {i}: loss {loss:.4f}, accuracy {acc:.2%}"))
    from .provenance import weights_digest

    prov = getattr(net, "provenance", {})
    acc_text = (f"accuracy {result.accuracy:.3f}%" + (f" (published {result.expected_accuracy:.3f}%)"
                                                       if result.expected_accuracy is not None else ""))
    verdict = "PASS" if result.passed else "FAIL"
    typer.echo(f"{verdict}: {name} loss {result.loss:.6f} (expected {result.expected_loss:.6f} +- "
               f"{LOSS_TOLERANCE:g}), {acc_text}; dtype {prov.get('dtype', '?')}, fp8 {prov.get('fp8', '?')}, "
               f"weights {weights_digest(net)[:16]}, {len(sequences)} sequences from {path}")
    if not result.passed:
        raise typer.Exit(1)
