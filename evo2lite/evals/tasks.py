"""The six token-manipulation tasks of the MAD suite (mechanistic architecture design, athms/mad-lab), written
from their published definitions (mad/data/instances.py, configs/tasks/*.yml at mad-lab 0f49a45).

Every generator returns (inputs, targets), two int64 arrays of equal length; targets hold IGNORE where a
position is not scored. Token ids are task-local (0 .. vocab_size-1); special tokens sit at the top of the
vocabulary as in MAD. A generator takes a numpy Generator, so a (setting, split, seed) triple always gives the
same data. Two deliberate departures from mad-lab, both bugs there: selective copying draws its blank
positions from the task's generator (mad-lab uses the global numpy RNG, so its data cannot be reproduced),
and the train and test splits come from independent seed streams with test examples that also occur in
the training set removed and redrawn (mad-lab continues one stream and only warns about leakage). The
memorization task is the exception: its test set asks the same fixed key -> value map by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

IGNORE = -100


# --- in-context recall (plain, noisy, multi-query) ------------------------------------------------------
def in_context_recall(rng: np.random.Generator, *, vocab_size: int = 16, seq_len: int = 128,
                      multi_query: bool = True, noise_vocab_size: int = 0, frac_noise: float = 0.0,
                      is_training: bool = True, **_) -> tuple[np.ndarray, np.ndarray]:
    """Key-value pairs k v k v ...; a key keeps its value within a sequence. Multi-query: every value of a key
    seen before is a target. Single-query: a copy-prefix token then one probed key, its value the target.
    Training targets are the next tokens everywhere (MAD trains it as a language model).
    Vectorised per sequence (a Python loop per token made a 12,800-example split take ~20 s); drawing each
    key's value up front is the same distribution as drawing it at the key's first occurrence."""
    if seq_len % 2 or seq_len < 4:
        raise ValueError("in-context recall needs an even seq_len of at least 4")
    if not 0 <= frac_noise < 1:
        raise ValueError("frac_noise must be in [0, 1)")
    copy_prefix = vocab_size - 1
    plain = (vocab_size if multi_query else vocab_size - 1) - noise_vocab_size
    if plain < 2:
        raise ValueError("vocab_size leaves no room for keys and values")
    num_keys = plain // 2  # keys 0..num_keys-1, values num_keys..plain-1, noise plain..plain+noise-1
    n = seq_len // 2 - 1  # the last pair is the probe
    keys = rng.integers(0, num_keys, size=n)
    value_of = rng.integers(num_keys, plain, size=num_keys)
    pairs = np.stack([keys, value_of[keys]], 1)
    real = np.ones(n, dtype=bool)
    if frac_noise > 0:
        real = rng.random(n) >= frac_noise
        real[rng.integers(n)] = True  # at least one real pair
        pairs[~real] = rng.integers(plain, plain + noise_vocab_size, size=(int((~real).sum()), 2))
    first = np.full(num_keys, n)
    np.minimum.at(first, keys[real], np.flatnonzero(real))
    seen = real & (np.arange(n) > first[keys])
    targets = np.full((n, 2), IGNORE)
    if multi_query:
        targets[seen, 1] = pairs[seen, 1]
    k_probe = int(rng.choice(np.unique(keys[real])))
    tail = [k_probe, int(value_of[k_probe])]
    tail_targets = [IGNORE, int(value_of[k_probe])]
    if not multi_query:
        tail, tail_targets = [copy_prefix] + tail, [IGNORE] + tail_targets
    inputs = np.concatenate([pairs.reshape(-1), tail])
    return _shift(inputs, np.concatenate([targets.reshape(-1), tail_targets]), is_training)


def noisy_in_context_recall(rng, *, vocab_size: int = 32, noise_vocab_size: int = 16, frac_noise: float = 0.2,
                            **kw) -> tuple[np.ndarray, np.ndarray]:
    return in_context_recall(rng, vocab_size=vocab_size, noise_vocab_size=noise_vocab_size,
                             frac_noise=frac_noise, **kw)


def fuzzy_in_context_recall(rng: np.random.Generator, *, vocab_size: int = 16, seq_len: int = 128,
                            k_motif_size: int = 3, v_motif_size: int = 3, multi_query: bool = True,
                            is_training: bool = True, **_) -> tuple[np.ndarray, np.ndarray]:
    """In-context recall where keys and values are motifs of 1..k (1..v) adjacent tokens; the test prompts
    keys at the full motif size. Left-padded with a pad token to seq_len."""
    copy_prefix = vocab_size - 1
    pad = vocab_size - 1 if multi_query else vocab_size - 2
    plain = vocab_size - 1 if multi_query else vocab_size - 2
    key_vocab, value_vocab = np.arange(plain // 2), np.arange(plain // 2, plain)
    key_sizes = list(range(1, k_motif_size + 1)) if is_training else [k_motif_size]
    value_sizes = list(range(1, v_motif_size + 1))

    def motifs(vocab: np.ndarray, sizes: list[int]):
        # uniform draws over all ordered motifs of a uniform size: what mad-lab gets by shuffling the full
        # permutation list, without building it; drawn in one batch (every loop step uses >= 2 tokens)
        count = seq_len // 2 + 2
        perm = vocab[rng.random((count, len(vocab))).argsort(1)[:, :max(sizes)]].tolist()
        size = np.asarray(sizes)[rng.integers(len(sizes), size=count)].tolist()
        return iter([tuple(p[:k]) for p, k in zip(perm, size)])

    key_motifs, value_motifs = motifs(key_vocab, key_sizes), motifs(value_vocab, value_sizes)
    k_probe, v_probe = next(key_motifs), next(value_motifs)
    probe_len = len(k_probe) + len(v_probe)
    probe_at = rng.integers(seq_len - 2 * probe_len)
    kv: dict[tuple, tuple] = {k_probe: v_probe}
    seen: set[tuple] = set()
    inputs: list[int] = []
    targets: list[int] = []
    probe_added = False
    while len(inputs) < seq_len - probe_len - (k_motif_size + v_motif_size):
        if len(inputs) >= probe_at and not probe_added:
            k, probe_added = k_probe, True
        else:
            k = next(key_motifs)
            probe_added = probe_added or k == k_probe
        if k not in kv:
            kv[k] = next(value_motifs)
        v = kv[k]
        inputs += [*k, *v]
        targets += [IGNORE] * len(k) + (list(v) if (k in seen and multi_query) else [IGNORE] * len(v))
        seen.add(k)
    if not multi_query:
        inputs.append(copy_prefix)
        targets.append(IGNORE)
    inputs += [*k_probe, *v_probe]
    targets += [IGNORE] * len(k_probe) + list(v_probe)
    n_pad = seq_len + 1 - len(inputs)
    inputs = [pad] * n_pad + inputs
    targets = [IGNORE] * n_pad + targets
    return _shift(np.array(inputs), np.array(targets), is_training)


# --- memorization ----------------------------------------------------------------------------------------
def memorization_map(vocab_size: int, seed: int) -> dict[int, int]:
    """The fixed key -> value map (one per setting): keys from the lower half, values from the upper half of
    the plain vocabulary (vocab_size - 1: the top token is the insert token)."""
    plain = vocab_size - 1
    map_rng = np.random.default_rng(seed)
    keys = np.arange(plain // 2)
    vals = np.arange(plain // 2, plain)
    map_rng.shuffle(keys)
    map_rng.shuffle(vals)
    return dict(zip(keys.tolist(), vals.tolist()))


def memorization(rng: np.random.Generator, *, vocab_size: int = 256, seq_len: int = 32,
                 kv_map: dict[int, int] | None = None, map_seed: int = 12345, **_
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs `key insert`; the target at the insert token is the key's value under a map fixed for the
    whole setting, so it can only be learnt into the weights."""
    kv_map = kv_map if kv_map is not None else memorization_map(vocab_size, map_seed)
    insert = vocab_size - 1
    keys = np.array(sorted(kv_map))
    chosen = rng.choice(keys, size=seq_len // 2)
    inputs = np.stack([chosen, np.full_like(chosen, insert)], 1).reshape(-1)
    targets = np.stack([np.full_like(chosen, IGNORE), np.array([kv_map[int(k)] for k in chosen])], 1).reshape(-1)
    return inputs, targets


# --- compression -----------------------------------------------------------------------------------------
def compression(rng: np.random.Generator, *, vocab_size: int = 16, seq_len: int = 32, **_
                ) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens and a final compression token; an encoder squeezes the sequence into the last
    position's vector and a decoder must reproduce every input token from it (targets = inputs)."""
    body = rng.integers(0, vocab_size - 1, size=seq_len - 1)
    inputs = np.concatenate([body, [vocab_size - 1]])
    return inputs, inputs.copy()


# --- selective copying -----------------------------------------------------------------------------------
def selective_copying(rng: np.random.Generator, *, vocab_size: int = 16, seq_len: int = 256,
                      num_tokens_to_copy: int = 16, **_) -> tuple[np.ndarray, np.ndarray]:
    """Tokens to copy scattered among blank tokens, a copy token, then blanks during which the tokens must
    be reproduced in order."""
    copy_token, blank = vocab_size - 1, vocab_size - 2
    num_blank = seq_len - 2 * num_tokens_to_copy - 1
    if num_blank < 0:
        raise ValueError("seq_len must exceed 2 * num_tokens_to_copy")
    to_copy = rng.integers(0, vocab_size - 2, size=num_tokens_to_copy)
    slots = np.sort(rng.choice(num_tokens_to_copy + num_blank, size=num_tokens_to_copy, replace=False))
    body = np.full(num_tokens_to_copy + num_blank, blank)
    body[slots] = to_copy
    inputs = np.concatenate([body, [copy_token], np.full(num_tokens_to_copy, blank)])
    targets = np.concatenate([np.full(num_tokens_to_copy + num_blank + 1, IGNORE), to_copy])
    return inputs, targets


def _shift(inputs: np.ndarray, targets: np.ndarray, is_training: bool) -> tuple[np.ndarray, np.ndarray]:
    """Next-token framing: training predicts every next token, testing scores only the task's targets."""
    return (inputs[:-1], inputs[1:]) if is_training else (inputs[:-1], targets[1:])


# --- registry: MAD's baseline settings and difficulty sweeps (configs/tasks/*.yml) -------------------------
@dataclass(frozen=True)
class Task:
    name: str
    short: str
    generate: Callable[..., tuple[np.ndarray, np.ndarray]]
    baseline: dict
    changes: dict[str, list] = field(default_factory=dict)
    encoder_decoder: bool = False  # compression: an encoder, a pooled vector, a position-wise decoder

    def settings(self, grid: str = "full") -> list[dict]:
        """The baseline, then one change at a time (MAD's sweep). grid 'baseline': the baseline alone;
        'reduced': the baseline and the first (easiest) change along each axis."""
        out = [dict(self.baseline)]
        if grid == "baseline":
            return out
        for key, values in self.changes.items():
            for value in (values[:1] if grid == "reduced" else values):
                out.append({**self.baseline, key: value})
        return out


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("in-context-recall", "CR", in_context_recall,
         dict(vocab_size=16, seq_len=128, num_train_examples=12800, multi_query=True),
         dict(vocab_size=[32, 64, 128], seq_len=[256, 512, 1024], num_train_examples=[6400, 3200, 1600, 800])),
    Task("noisy-in-context-recall", "NR", noisy_in_context_recall,
         dict(vocab_size=32, noise_vocab_size=16, seq_len=128, num_train_examples=12800, multi_query=True,
              frac_noise=0.2),
         dict(vocab_size=[48, 80, 144], seq_len=[256, 512, 1024], num_train_examples=[6400, 3200, 1600, 800],
              frac_noise=[0.4, 0.6, 0.8])),
    Task("fuzzy-in-context-recall", "FR", fuzzy_in_context_recall,
         dict(vocab_size=16, seq_len=128, num_train_examples=12800, multi_query=True, k_motif_size=3,
              v_motif_size=3),
         dict(vocab_size=[32, 64, 128], seq_len=[256, 512, 1024], num_train_examples=[6400, 3200, 1600, 800])),
    Task("selective-copying", "SC", selective_copying,
         dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train_examples=12800),
         dict(vocab_size=[32, 64, 128], seq_len=[512, 1024], num_train_examples=[6400, 3200, 1600, 800],
              num_tokens_to_copy=[32, 64, 96])),
    Task("compression", "C", compression,
         dict(vocab_size=16, seq_len=32, num_train_examples=12800),
         dict(vocab_size=[32, 64, 128], seq_len=[64, 128, 256], num_train_examples=[6400, 3200, 1600, 800]),
         encoder_decoder=True),
    Task("memorization", "M", memorization,
         dict(vocab_size=256, seq_len=32, num_train_examples=256),
         dict(vocab_size=[512, 1024, 2048, 4096, 8192])),
)}

NUM_TEST_EXAMPLES = 1280  # MAD's default


@dataclass(frozen=True)
class TaskData:
    train_inputs: np.ndarray  # (N, L) int64
    train_targets: np.ndarray
    test_inputs: np.ndarray
    test_targets: np.ndarray


def _split_seed(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, {"train": 0, "test": 1}[split]]))


def make_data(task: Task, setting: dict, seed: int = 12345, num_test: int = NUM_TEST_EXAMPLES,
              num_train: int | None = None) -> TaskData:
    """Train and test sets of one setting from independent seed streams; test examples whose inputs also
    occur in the training set are redrawn (except memorization, whose test asks the training map)."""
    kwargs = {k: v for k, v in setting.items() if k != "num_train_examples"}
    if task.name == "memorization":
        kwargs["kv_map"] = memorization_map(setting["vocab_size"], seed)
    num_train = num_train if num_train is not None else setting["num_train_examples"]

    def draw(split: str, n: int, exclude: set[bytes]) -> tuple[np.ndarray, np.ndarray]:
        rng = _split_seed(seed, split)
        xs, ys = [], []
        attempts = 0
        while len(xs) < n:
            x, y = task.generate(rng, is_training=split == "train", **kwargs)
            attempts += 1
            if exclude and x.tobytes() in exclude:
                if attempts > 20 * n:
                    raise RuntimeError(f"{task.name}: cannot draw {n} test examples disjoint from training")
                continue
            xs.append(x)
            ys.append(y)
        return np.stack(xs).astype(np.int64), np.stack(ys).astype(np.int64)

    train_x, train_y = draw("train", num_train, set())
    exclude = set() if task.name == "memorization" else {row.tobytes() for row in train_x}
    test_x, test_y = draw("test", num_test, exclude)
    return TaskData(train_x, train_y, test_x, test_y)


def setting_id(task: Task, setting: dict) -> str:
    """A stable short name, e.g. CR-vocab_size=16-seq_len=128-... (keys sorted)."""
    return task.short + "-" + "-".join(f"{k}={setting[k]}" for k in sorted(setting))


__all__ = ["IGNORE", "TASKS", "Task", "TaskData", "make_data", "setting_id"]
