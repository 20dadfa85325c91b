"""DNA generation: cached sampling from prompts (`evo2lite generate`, `evo2lite.generate`).

Each (prompt, sample) pair is one row. Rows go in batches; within a batch the distinct prompts are
prefilled once each (prompts of equal length together, in chunks), their states are copied into one
`Decoder` (rows of unequal prompt length decode side by side, each at its own position), and every step
samples one token per row. Row r of prompt i, sample j draws its randomness from its own generator
seeded by (seed, i, j): a seed reproduces a sample whatever the batch size or the other prompts.

Legend: B batch (rows), L prompt length, V vocabulary.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from ..inference import (DEFAULT_CHUNK_LEN, Decoder, GenerationError, SamplingParams, draw_uniforms,
                         make_generators, prefill, row_seed, sample_next)
from ..inference.sampling import EOS_ID
from ..log import warn
from ..tokenizer import decode, encode

MIN_STEPS_FOR_GRAPH = 16  # below this, capturing a CUDA graph costs more than it saves


@dataclass
class GeneratedSequence:
    name: str  # record name: "<prompt name>_sample<j>" (j from 1)
    prompt_name: str
    prompt_index: int
    sample_index: int  # 0-based
    prompt: str
    seed: int  # this row's own seed (derived from run_seed, prompt_index, sample_index)
    run_seed: int = 0  # the seed of the whole run (--seed, or the one drawn when none was given)
    token_ids: list[int] = field(default_factory=list)
    stop_reason: str = ""  # "length" or "eos" (the EOS token is not part of token_ids)
    logprob: float = 0.0  # sum of log P(token) under the model (temperature 1, no top-k/top-p)

    @property
    def text(self) -> str:
        return decode(self.token_ids)


class GenerationSink:
    """Receives results as they are produced (override what you need)."""

    def start(self, row: GeneratedSequence) -> None:
        pass

    def tokens(self, row: GeneratedSequence, text: str) -> None:
        pass

    def finish(self, row: GeneratedSequence) -> None:
        pass


def _normalise_prompts(prompts) -> list[tuple[str, str]]:
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    out = []
    for i, item in enumerate(prompts):
        if isinstance(item, (str, bytes)):
            name, seq = ("prompt" if i == 0 and len(prompts) == 1 else f"prompt{i + 1}"), item
        else:
            name, seq = item[0], item[1]
        if isinstance(seq, bytes):
            seq = seq.decode("utf-8", errors="replace")
        out.append((str(name), seq))
    if not out:
        raise GenerationError("no prompts given")
    return out


def _resolve_model(model, config, device, dtype, fp8=None, allow_inexact=None):
    if isinstance(model, torch.nn.Module):
        return model
    from ..loading import load_model

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(model, config=config, device=device, dtype=dtype, fp8=fp8, allow_inexact=allow_inexact)


@torch.inference_mode()
def generate(prompts: str | Sequence[str] | Sequence[tuple[str, str]], n_tokens: int, *,
             model=None, config=None, temperature: float = 1.0, top_k: int = 4, top_p: float = 1.0,
             seed: int | None = None, num_samples: int = 1, acgt_only: bool = False,
             stop_at_eos: bool = True, batch_size: int = 8, device: str | None = None,
             dtype: str | torch.dtype | None = None, fp8: str | None = None, allow_inexact: bool | None = None,
             chunk_len: int = DEFAULT_CHUNK_LEN,
             cuda_graph: bool | str = "auto", compile: bool = False, sink: GenerationSink | None = None,
             progress: Callable[[int], None] | None = None, tag: str = "") -> list[GeneratedSequence]:
    """Sample `n_tokens` new tokens after each prompt, `num_samples` times per prompt.

    prompts: one string, a list of strings, or (name, sequence) pairs; any bytes are allowed (DNA, tags
    such as '|d__Bacteria;p__Pseudomonadota|'); bases and tags are upper-cased as in training (spec §5). model: a
    loaded StripedHyena2, or a spec for `load_model` (None = the shipped model; then config, device -
    "auto" picks CUDA when present - dtype, fp8 and allow_inexact apply, as in load_model). Sampling: temperature (0 = greedy), top_k (Evo 2's
    default 4; <= 0 = all), top_p in (0, 1], acgt_only (sample only A/C/G/T; the prompt may hold any
    bytes). seed: None draws one (it is recorded in every result's header). A row stops after n_tokens
    or at EOS (id 0) when stop_at_eos. Engine: prompts are prefilled in chunks of chunk_len; decoding
    runs as a CUDA graph on CUDA ("auto": when at least 16 steps), compile=True fuses the step with
    torch.compile first (slow to start, faster per token). sink receives tokens as they are produced;
    progress(n) is called with the number of tokens of each step. tag: an Evo 2 phylogenetic tag
    (evo2lite.tags) put before every prompt, as the official models were trained; it is context only: the
    results' prompt and output hold no tag tokens. Returns one GeneratedSequence per (prompt, sample),
    prompt-major.
    """
    params = SamplingParams(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                            acgt_only=bool(acgt_only))
    from ..options import check_options

    check_options(GenerationError, num_tokens=n_tokens, num_samples=num_samples, batch_size=batch_size,
                  seed=seed, chunk_len=chunk_len)
    records = _normalise_prompts(prompts)
    if tag:
        from ..tags import check_tag

        check_tag(tag)
    ids = []
    for name, seq in records:
        if not seq:
            raise GenerationError(f"prompt {name!r} is empty; give at least one base or tag")
        ids.append(encode(tag + seq))  # the tokenizer's case policy: bases and |tags| upper-cased (spec §5)
    net = _resolve_model(model, config, device, dtype, fp8, allow_inexact)
    if tag:
        check_tag(tag, net)
    for (name, _), prompt_ids in zip(records, ids):
        if len(prompt_ids) > net.config.context_len:
            warn(f"prompt {name!r} has {len(prompt_ids):,} tokens, longer than the model's trained context "
                 f"({net.config.context_len:,}); generation quality may degrade")
    run_seed = secrets.randbits(63) if seed is None else int(seed)
    rows = [GeneratedSequence(name=f"{name}_sample{j + 1}", prompt_name=name, prompt_index=i,
                              sample_index=j, prompt=seq, seed=row_seed(run_seed, i, j), run_seed=run_seed)
            for i, (name, seq) in enumerate(records) for j in range(num_samples)]
    for a in range(0, len(rows), batch_size):
        _generate_batch(net, rows[a:a + batch_size], ids, int(n_tokens), params, stop_at_eos, chunk_len,
                        cuda_graph, compile, sink, progress)
    return rows


def _generate_batch(net, rows: list[GeneratedSequence], ids: list[torch.Tensor], n_tokens: int,
                    params: SamplingParams, stop_at_eos: bool, chunk_len: int, cuda_graph, compile: bool,
                    sink, progress):
    device = net.device
    # prefill each distinct prompt once; prompts of equal length together
    prompts = sorted({row.prompt_index for row in rows})
    by_len: dict[int, list[int]] = {}
    for p in prompts:
        by_len.setdefault(len(ids[p]), []).append(p)
    where: dict[int, tuple[object, int]] = {}  # prompt index -> (state, row in that state)
    first_logits: dict[int, torch.Tensor] = {}
    for length, group in by_len.items():
        logits_GV, state = prefill(net, torch.stack([ids[p] for p in group]).to(device),
                                   chunk_len=chunk_len, capacity=length + n_tokens)
        for g, p in enumerate(group):
            where[p] = (state, g)
            first_logits[p] = logits_GV[g]
    parts: list[tuple[object, list[int]]] = []
    for row in rows:  # consecutive rows of one state form one part (lets the decoder adopt its KV)
        state, g = where[row.prompt_index]
        if parts and parts[-1][0] is state:
            parts[-1][1].append(g)
        else:
            parts.append((state, [g]))
    logits_BV = torch.stack([first_logits[row.prompt_index] for row in rows])
    B = len(rows)
    generators = make_generators([row.seed for row in rows])
    active = [True] * B
    for row in rows:
        if sink is not None:
            sink.start(row)
    decoder = None
    for step in range(n_tokens):
        uniforms = None if params.greedy else draw_uniforms(generators)
        tokens_B = sample_next(logits_BV, params, uniforms)
        logp_B = torch.log_softmax(logits_BV.float(), -1).gather(-1, tokens_B[:, None])[:, 0]
        tokens, logps = tokens_B.tolist(), logp_B.tolist()
        produced = 0
        for b, row in enumerate(rows):
            if not active[b]:
                continue
            if stop_at_eos and tokens[b] == EOS_ID:
                active[b] = False
                row.stop_reason = "eos"
                if sink is not None:
                    sink.finish(row)
                continue
            row.token_ids.append(tokens[b])
            row.logprob += logps[b]
            produced += 1
            if sink is not None:
                sink.tokens(row, decode([tokens[b]]))
        if progress is not None:
            progress(produced)
        if not any(active) or step == n_tokens - 1:
            break
        if decoder is None:
            use_graph = (device.type == "cuda" and n_tokens - 1 >= MIN_STEPS_FOR_GRAPH) \
                if cuda_graph == "auto" else bool(cuda_graph)
            longest = max(len(ids[row.prompt_index]) for row in rows)
            decoder = Decoder(net, parts, capacity=longest + n_tokens, cuda_graph=use_graph, compile=compile)
            parts = where = state = None  # prefill states: copied into the decoder (or adopted); free them
        logits_BV = decoder.step(tokens_B)
    for b, row in enumerate(rows):
        if active[b]:
            row.stop_reason = "length"
            if sink is not None:
                sink.finish(row)


# --- FASTA output ------------------------------------------------------------------------------------

def _fasta_safe(text: str) -> str:
    """Sampled bytes outside printable ASCII (control bytes, ids >= 128) would break FASTA: write N."""
    return "".join(c if "!" <= c <= "~" else "N" for c in text)


def fasta_header(row: GeneratedSequence, n_tokens: int, params: SamplingParams, model_name: str,
                 meta: dict[str, str] | None = None) -> str:
    """The record's header: its sampling settings, the model, and with `meta` (apps.provenance.run_provenance)
    the dtype, FP8 mode and weights digest (first 16 hex digits), each a space-free key=value."""
    text = (f">{row.name} prompt={row.prompt_name} sample={row.sample_index + 1} n={n_tokens} "
            f"temperature={params.temperature:g} top_k={params.top_k} top_p={params.top_p:g} "
            f"acgt_only={str(params.acgt_only).lower()} seed={row.run_seed} "
            f"model={model_name}")
    if meta:
        text += "".join(f" {key}={''.join(meta[key].split())}" for key in ("dtype", "fp8") if key in meta)
        if "weights" in meta:
            text += f" weights={meta['weights'][:16]}"
    return text


class FastaSink(GenerationSink):
    """Writes one FASTA record per row, in row order, streaming the earliest unfinished row token by token
    (others are buffered until their turn). Sequence on one line; with include_prompt the prompt text
    precedes the generated bases."""

    def __init__(self, out: TextIO, header: Callable[[GeneratedSequence], str], *,
                 include_prompt: bool = False, flush: bool = False) -> None:
        self.out, self.header, self.include_prompt, self.flush = out, header, include_prompt, flush
        self.pending: list[GeneratedSequence] = []  # started, not yet fully written, in row order
        self.buffers: dict[int, list[str]] = {}
        self.done: set[int] = set()
        self.live: GeneratedSequence | None = None

    def _write(self, text: str) -> None:
        self.out.write(text)
        if self.flush:
            self.out.flush()

    def _advance(self) -> None:
        while self.live is None and self.pending:
            row = self.pending.pop(0)
            self._write(self.header(row) + "\n")
            if self.include_prompt:
                self._write(_fasta_safe(row.prompt))
            self._write("".join(self.buffers.pop(id(row), [])))
            if id(row) in self.done:
                self._write("\n")
            else:
                self.live = row

    def start(self, row: GeneratedSequence) -> None:
        self.pending.append(row)
        self.buffers[id(row)] = []
        self._advance()

    def tokens(self, row: GeneratedSequence, text: str) -> None:
        if row is self.live:
            self._write(_fasta_safe(text))
        else:
            self.buffers[id(row)].append(_fasta_safe(text))

    def finish(self, row: GeneratedSequence) -> None:
        self.done.add(id(row))
        if row is self.live:
            self._write("\n")
            self.live = None
            self._advance()


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(name, sequence) of every record of a FASTA (any compression) of prompts."""
    from ..errors import InputError
    from ..pipelines.fasta import read_sequences

    try:
        records = [(r.name, r.seq.decode("utf-8", errors="replace")) for r in read_sequences(path, "fasta")]
    except OSError as exc:
        raise InputError(f"cannot read prompts file {path}: {exc.strerror or exc}") from None
    if not records:
        raise InputError(f"{path}: no FASTA records; each prompt is a record ('>name' then the sequence)")
    return records
