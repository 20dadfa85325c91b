"""Warnings and notes for users: one line each on stderr (results go to files/stdout)."""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    print(f"evo2lite: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(f"evo2lite: {message}", file=sys.stderr, flush=True)
