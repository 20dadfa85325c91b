"""Long scoring windows stream through the inference engine: chunked == unchunked, and the peak memory of
a long window is bounded by the chunk, not by the window."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from evo2lite.apps.score import chunked_token_logprobs, score_sequences, token_logprobs
from evo2lite.apps.score_vcf_jobs import make_job, run_jobs
from evo2lite.loading import load_model
from helpers import run_peak_probe


@pytest.fixture(scope="module")
def model():
    return load_model("debug", random_init=True, seed=5)


def test_chunked_logprobs_equal_one_pass(model):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (2, 700), generator=gen)
    ids = torch.tensor([65, 67, 71, 84])[ids]
    want = token_logprobs(model(ids), ids)
    for chunk_len in (1, 97, 256, 700, 5000):
        got = chunked_token_logprobs(model, ids, chunk_len=chunk_len)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)
    # continuing a prefix's state equals the whole pass, too
    state = model.new_state(2)
    chunked_token_logprobs(model, ids[:, :300], state, chunk_len=128)
    got = chunked_token_logprobs(model, ids[:, 300:], state, chunk_len=64)
    torch.testing.assert_close(got, want[:, 300:], rtol=1e-5, atol=2e-5)


def test_score_sequences_chunk_len_does_not_change_scores(model):
    rng = np.random.default_rng(1)
    records = [(f"r{i}", "".join(rng.choice(list("ACGT"), n))) for i, n in enumerate((50, 900, 1500))]
    a = score_sequences(model, records, batch_size=2)
    b = score_sequences(model, records, batch_size=2, chunk_len=128)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.per_position[1:], y.per_position[1:], rtol=1e-5, atol=2e-5)


def test_variant_jobs_with_chunked_prefix_and_suffix(model):
    rng = np.random.default_rng(2)
    ref = "".join(rng.choice(list("ACGT"), 600))
    alt = ref[:300] + ("A" if ref[300] != "A" else "C") + ref[301:]
    job = make_job(ref, [alt], 300)
    assert len(job.prefix) == 300
    whole = run_jobs(model, [job], batch_size=4)[0]
    from evo2lite.apps import score_vcf_jobs as J

    out = [[None, None]]
    J.run_chunk(model, [job], 300, [(0, 0), (0, 1)], out, chunk_len=64)
    for a, b in zip(whole, out[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


_PEAK_SCRIPT = """
import sys, torch
from evo2lite.apps.score import chunked_token_logprobs
from evo2lite.loading import load_model

torch.set_num_threads(1)
model = load_model("debug", random_init=True, seed=5)
L = int(sys.argv[1])
ids = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, L), generator=torch.Generator().manual_seed(3))]
chunked_token_logprobs(model, ids[:, :2048], chunk_len=512)  # warm-up: allocator and kernels
small = peak_growth(lambda: chunked_token_logprobs(model, ids, chunk_len=512))
whole = peak_growth(lambda: chunked_token_logprobs(model, ids, chunk_len=L))
print(small, whole, model.config.d_model, model.config.vocab_size)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads /proc (Linux)")
def test_peak_memory_of_a_long_window_is_bounded_by_the_chunk():
    L = 12_000
    small, whole, d_model, vocab = run_peak_probe(_PEAK_SCRIPT, L)
    # what must stay: the result (L x 4 B) and the one attention block's KV cache (2 x L x D x 4 B)
    kept = L * 4 + 2 * L * d_model * 4
    logits_one_chunk = 512 * vocab * 4
    assert whole > 4 * small, (small, whole)  # unchunked: the full-window activations and logits
    assert small < kept + 40 * logits_one_chunk + (16 << 20), (small, kept)
