"""Set-up shared by the benchmark scripts (imported as `_common`: a script's own folder is on sys.path).

`bootstrap()` imports evo2lite from this checkout when it is not installed, mapping kernels/ and pipelines/
to evo2lite.kernels / evo2lite.pipelines as the installed package does (setuptools package-dir). Call it
before importing anything from evo2lite.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30


def bootstrap() -> None:
    try:
        import evo2lite.kernels  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    sys.path.insert(0, str(ROOT))
    import evo2lite

    for sub in ("kernels", "pipelines"):
        name = f"evo2lite.{sub}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, ROOT / sub / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / sub)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(evo2lite, sub, module)


def default_out() -> str:
    """--out's default: $OUT, else benchmarks/out."""
    return os.environ.get("OUT") or str(ROOT / "benchmarks" / "out")


def default_device_dtype(args) -> None:
    """Fill --device (cuda when there is one) and --dtype (bf16 on CUDA, fp32 on the CPU) where not given."""
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")


def parse_length(text: str) -> int:
    """'8k' -> 8192, '1m' -> 1048576, '1.5k' -> 1536, '777' -> 777."""
    text = text.strip().lower()
    scale = {"k": 1024, "m": 1 << 20}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def human(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}k"
    return str(n)


def run_child(script: str, argv: list[str], timeout: float) -> tuple[dict | None, str | None, str]:
    """Run `python script *argv --json PATH` in a fresh process (own CUDA context and allocator: a crash, an
    illegal memory access or an OOM ends only it) under `timeout` seconds. Returns (the JSON the child wrote to
    PATH, or None; None if it exited 0, else "exit N: <last stderr line>" or "timeout after N s"; its stderr
    tail). What a child saved before it died or timed out is returned too."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "child.json"
        try:
            proc = subprocess.run([sys.executable, script, *argv, "--json", str(path)], timeout=timeout,
                                  capture_output=True, text=True)
            tail = proc.stderr
            failure = None if proc.returncode == 0 else \
                f"exit {proc.returncode}: " + (tail.strip().splitlines() or [""])[-1][:300]
        except subprocess.TimeoutExpired as exc:
            tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            failure = f"timeout after {timeout:.0f} s"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):  # none written, or cut short mid-write
            result = None
    return result, failure, tail[-3000:]
