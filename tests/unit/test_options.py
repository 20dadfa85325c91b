"""evo2lite/options.py: the one place numeric options and --device are validated."""

from __future__ import annotations

import math

import pytest
import torch

from evo2lite.errors import Evo2LiteError
from evo2lite.options import RULES, OptionError, apply_threads, check_option, check_options, resolve_device


@pytest.mark.parametrize("name,bad", [("threads", 0), ("threads", -1), ("batch_size", 0), ("chunk_size", -5),
                                      ("context", 1), ("stride", 0), ("window_overlap", -1),
                                      ("num_tokens", 0), ("num_samples", 0), ("temperature", -0.5),
                                      ("temperature", math.nan), ("temperature", math.inf), ("top_p", 0.0),
                                      ("top_p", 1.5), ("top_k", 2.5), ("seed", -1), ("threads", 2.5),
                                      ("threads", True), ("time_budget", 0.0), ("batch_size", "8")])
def test_bad_values_raise_one_line_user_errors(name, bad):
    with pytest.raises(OptionError) as info:
        check_options(**{name: bad})
    message = str(info.value)
    assert isinstance(info.value, Evo2LiteError) and isinstance(info.value, ValueError)
    assert name.replace("_", "-") + " must be " in message and message.startswith("-") and repr(bad) in message
    assert "\n" not in message


@pytest.mark.parametrize("name,good", [("threads", 1), ("batch_size", 64), ("context", 2), ("window_overlap", 0),
                                       ("temperature", 0.0), ("top_p", 1.0), ("top_k", -1), ("top_k", 0),
                                       ("seed", 0), ("num_tokens", 3.0)])
def test_good_values_pass(name, good):
    check_options(**{name: good})
    assert check_option(name, good) == good and type(check_option(name, good)) is RULES[name].kind


def test_none_means_not_given_and_messages_name_the_range():
    check_options(threads=None, top_p=None)
    with pytest.raises(OptionError, match=r"--top-p must be a number in \(0, 1\], got 0"):
        check_options(top_p=0)
    with pytest.raises(OptionError, match=r"-n/--num-tokens must be at least 1, got 0"):
        check_options(num_tokens=0)
    with pytest.raises(KeyError):
        check_options(no_such_option=1)  # a typo in our code, not user input


def test_apply_threads_validates_then_sets():
    before = torch.get_num_threads()
    try:
        with pytest.raises(OptionError, match="--threads must be at least 1, got 0"):
            apply_threads(0)
        apply_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("CPU") == "cpu"
    for bad in ("gpu", "cuda:x", "", "cuda:-1"):
        with pytest.raises(OptionError, match="--device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no CUDA device"):
            resolve_device("cuda:0")
