#!/usr/bin/env python
"""The official Evo 2 checkpoints at full scale (issue #10): import memory, the 40B forward, FP8 GEMMs.

(a) import: writes a full-size official-format checkpoint (default evo2_7b shape, random bf16 weights, TE
    FP8 extra states) to local disk, then imports it in fresh processes to --device in bf16 two ways: the
    streaming importer (evo2lite.loading.load_model: mmap, tensor by tensor, straight to the device) and the
    old path (the whole state materialised in fp32 on the host, then cast and moved). Peak host RSS (VmHWM,
    which counts the checkpoint's mapped file pages), peak anonymous RSS (sampled every 20 ms) and time.
(b) forward: the largest of --big (default evo2_40b, then evo2_20b, evo2_7b) that fits, built directly on
    the GPU in bf16 (no checkpoint: 82 GB would not fit the disk twice), forward at --seq-len tokens with
    bf16 projections and with FP8 projections (the auto backend: torch._scaled_mm on Hopper); peak GPU
    memory and time (second call; the first calibrates the FP8 scales).
(c) FP8 GEMM backends on Evo 2 projection shapes: torch._scaled_mm(use_fast_accum=True) (native, the
    reference on Hopper), mmaemu (PyPI, claims bit-exact H100 PCIe TE GEMMs; from .whl/ when not installed)
    with profiles hopper-te and hopper, and evo2lite's emulation (E4M3 quantisation + fp32 accumulation):
    fraction of bf16 outputs bit-equal to native, max |diff|, time. And (d) the same backends through a
    whole random evo2_1b_base-shaped model: relative logits difference from the native FP8 run.

Everything runs in one invocation, < 240 s on one H200; a table on stdout and checkpoint_scale.json under
--out (default $OUT, else ./bench_out), rewritten after every section so a timeout keeps what was done.

  GPU:  python benchmarks/checkpoint_scale.py
  CPU smoke test (tiny shapes, seconds):  python benchmarks/checkpoint_scale.py --dry-run
  mmaemu vs the emulation on a CPU, 64 rows of a 1B projection (about a minute):
    python benchmarks/checkpoint_scale.py --device cpu --sections gemm --gemm 1B-64rows:64x5760x1920
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bootstrap(root: Path) -> None:
    """Import evo2lite from this checkout even when it is not installed (kernels/ -> evo2lite.kernels)."""
    sys.path.insert(0, str(root))
    import evo2lite

    try:
        import evo2lite.kernels  # noqa: F401
    except ImportError:
        evo2lite.__path__.append(str(root))  # the package-dir mapping of pyproject.toml, by hand
        import evo2lite.kernels  # noqa: F401


_bootstrap(ROOT)

import torch  # noqa: E402

RESULTS: dict = {"sections": {}}
T0 = time.perf_counter()


def _save(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint_scale.json").write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- (a) import -------------------------------------------------------------------------------------

_IMPORT_CHILD = r"""
import json, sys, threading, time
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[5] + "/benchmarks")
from checkpoint_scale import _bootstrap
_bootstrap(Path(sys.argv[5]))
from evo2lite.config import PRESETS
from evo2lite.model import StripedHyena2

def status_kib(key):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(key)).split()[1])

with torch.device("meta"):  # warm-up: the first meta build imports torch's meta kernels
    StripedHyena2(PRESETS["debug"])
if sys.argv[3] == "cuda":
    torch.zeros(1, device="cuda")  # the CUDA context is not the import's cost
peak_anon = [status_kib("RssAnon")]
done = threading.Event()
def sample():
    while not done.wait(0.02):
        peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    hwm_reset = True
except OSError:  # a container without it: VmHWM then includes the import of torch (an overestimate)
    hwm_reset = False
rss0, anon0 = status_kib("VmRSS"), status_kib("RssAnon")
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
if sys.argv[4] == "streaming":
    from evo2lite.loading import load_model
    model = load_model(sys.argv[1], config=sys.argv[2], device=sys.argv[3], dtype="bfloat16", fp8="off")
else:  # the importer before issue #10: whole state, fp32 copy on the host, cast, move
    from evo2lite.checkpoint import load_state
    cfg, state, _ = load_state(sys.argv[1], sys.argv[2])
    with torch.device("meta"):
        model = StripedHyena2(cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    del state
    model = model.cast(torch.bfloat16).to(sys.argv[3])
if sys.argv[3] == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t0
done.set()
peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
print(json.dumps({"seconds": seconds, "peak_rss_gib": (status_kib("VmHWM") - rss0) / 2**20,
                  "peak_anon_gib": (peak_anon[0] - anon0) / 2**20, "model_gib": nbytes / 2**30,
                  "hwm_reset": hwm_reset}))
"""


def write_official(preset: str, directory: Path, device: str) -> tuple[Path, Path, float]:
    """A full-size official-format checkpoint with random bf16 weights (drawn on `device`, copied to the
    host one tensor at a time) and a TE extra state per Hyena block."""
    import io

    import yaml

    from evo2lite.checkpoint import config_to_vortex_yaml, key_map
    from evo2lite.config import PRESETS
    from evo2lite.model import FP32_PARAMS, StripedHyena2

    cfg = PRESETS[preset]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in StripedHyena2(cfg).state_dict().items()}
    raw = {}
    gen = torch.Generator(device).manual_seed(0)
    for ours, theirs in key_map(cfg).items():
        shape = shapes[ours]
        if theirs.endswith(("filter.h", "short_filter_weight")):
            shape = (shape[0], 1, shape[1])
        elif theirs.endswith("log_poles"):
            shape = (*shape, 1)
        dtype = torch.float32 if ours.endswith(FP32_PARAMS) else torch.bfloat16
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).mul_(0.02)
        if theirs.endswith("log_poles"):
            t = -t.abs() - 0.01
        raw[theirs] = t.to(dtype).cpu()
        del t
    for i, kind in enumerate(cfg.layout):
        if kind != "A":
            buf = io.BytesIO()
            torch.save({"scale_fwd": torch.full((3,), 100.0), "scale_inv_fwd": torch.full((3,), 0.01),
                        "amax_history_fwd": torch.full((16, 3), 4.48)}, buf)
            raw[f"blocks.{i}.projections._extra_state"] = buf
    pt, yml = directory / f"{preset}.pt", directory / f"{preset}.yml"
    t0 = time.perf_counter()
    torch.save(raw, pt)
    yml.write_text(yaml.safe_dump(config_to_vortex_yaml(cfg), sort_keys=False))
    return pt, yml, time.perf_counter() - t0


def section_import(args, device: str) -> dict:
    res = {"preset": args.import_preset, "rows": []}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        pt, yml, write_s = write_official(args.import_preset, Path(tmp), device)
        res["checkpoint_gib"] = pt.stat().st_size / 2**30
        res["write_seconds"] = write_s
        for way in ("streaming", "old (fp32 host copy)"):
            if way.startswith("old") and args.skip_old:
                continue
            run = subprocess.run([sys.executable, "-c", _IMPORT_CHILD, str(pt), str(yml), device,
                                  way.split()[0], str(ROOT)], capture_output=True, text=True, timeout=args.child_timeout)
            if run.returncode != 0:
                res["rows"].append({"importer": way, "error": run.stderr.strip().splitlines()[-1:]})
                continue
            row = json.loads(run.stdout.strip().splitlines()[-1])
            res["rows"].append({"importer": way, **row})
    return res


# --- (b) the big forward ----------------------------------------------------------------------------

def build_on_device(preset: str, device: str, dtype=torch.bfloat16):
    """The model of `preset` allocated directly on `device` in `dtype` (fp32 poles / residues / inv_freq),
    initialised there (spec §9), never on the host."""
    from evo2lite.config import PRESETS
    from evo2lite.model import StripedHyena2, init_weights_

    with torch.device("meta"):
        model = StripedHyena2(PRESETS[preset])
    model.cast(dtype)
    model = model.to_empty(device=device)
    with torch.no_grad():
        init_weights_(model, seed=0)
        hd = PRESETS[preset].head_dim
        freq = 1.0 / PRESETS[preset].rotary_base ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
        for block in model.blocks:
            if block.kind == "A":  # a buffer: to_empty left it uninitialised
                block.mixer.inv_freq.copy_(freq)
    return model.eval()


def timed_forward(model, ids, device) -> tuple[float, torch.Tensor]:
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = model(ids)
    _sync(device)
    return time.perf_counter() - t0, logits


def section_forward(args, device: str) -> dict:
    from evo2lite.fp8 import choose_fp8, enable_fp8
    from evo2lite.config import PRESETS

    res = {"tried": [], "rows": []}
    for preset in args.big.split(","):
        try:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            model = build_on_device(preset, device)
            _sync(device)
            build_s = time.perf_counter() - t0
            weights_gib = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30
            ids = torch.randint(65, 85, (1, args.seq_len), device=device)
            rows = []
            modes = ["off", choose_fp8(PRESETS[preset], torch.device(device), "auto", allow_inexact=True)]
            if args.dry_run:
                modes.append("emulate")  # the debug shapes have no FP8 flag: exercise the path anyway
            for mode in dict.fromkeys(modes):
                if mode != "off":
                    enable_fp8(model, mode)
                try:
                    timed_forward(model, ids, device)  # warm-up; calibrates the FP8 scales
                except torch.OutOfMemoryError:
                    raise
                except Exception as exc:  # a kernel of the auto dispatch failing here: fall back, say so
                    from evo2lite.mixers import HyenaLR

                    for block in model.modules():  # the LR blocks' switch (HyenaMixer.backend)
                        if isinstance(block, HyenaLR):
                            block.backend = "reference"
                    res["modal_backend"] = f"reference (auto failed: {type(exc).__name__}: {str(exc)[:200]})"
                    timed_forward(model, ids, device)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds, logits = timed_forward(model, ids, device)
                peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
                rows.append({"model": preset, "projections": mode, "seq_len": args.seq_len, "seconds": seconds,
                             "tokens_per_s": args.seq_len / seconds, "peak_gpu_gib": peak,
                             "weights_gib": weights_gib, "build_seconds": build_s,
                             "finite": bool(torch.isfinite(logits).all())})
                del logits
            res["rows"] = rows
            res["tried"].append({"model": preset, "fits": True})
            del model
            return res
        except torch.OutOfMemoryError as exc:
            res["tried"].append({"model": preset, "fits": False, "why": str(exc).splitlines()[0]})
            if device == "cuda":
                torch.cuda.empty_cache()
    return res


# --- (c) FP8 GEMM backends --------------------------------------------------------------------------

def _import_mmaemu(tmp: str):
    try:
        import mmaemu

        return mmaemu
    except ImportError:
        pass
    wheels = sorted((ROOT / ".whl").glob("mmaemu-*.whl"))
    if not wheels:
        return None
    target = Path(tmp) / "mmaemu_wheel"
    with zipfile.ZipFile(wheels[-1]) as z:  # extracted: it reads its data files (fatbins, tables) by path
        z.extractall(target)
    sys.path.insert(0, str(target))
    import mmaemu

    return mmaemu


def _compare(y, ref) -> dict:
    y, ref = y.float().cpu(), ref.float().cpu()
    same = (y.to(torch.bfloat16).view(torch.int16) == ref.to(torch.bfloat16).view(torch.int16)).float().mean()
    return {"bit_equal_frac": same.item(), "max_abs_diff": (y - ref).abs().max().item(),
            "rel_diff": ((y - ref).norm() / ref.norm().clamp_min(1e-30)).item()}


def section_gemm(args, device: str, mmaemu) -> dict:
    from evo2lite.fp8 import exact_backend, fp8_gemm_ref, quantize_e4m3

    torch.backends.cuda.matmul.allow_tf32 = False  # the emulation's fp32 accumulation must be fp32
    native_ok = exact_backend(torch.device(device)) == "scaled_mm"
    rows = []
    for label, M, N, K in args.gemm_shapes:
        gen = torch.Generator(device).manual_seed(1)
        x = torch.randn(M, K, generator=gen, device=device) * 2
        w = torch.randn(N, K, generator=gen, device=device) * 0.02
        sx = (448.0 / x.abs().max()).float()
        sw = (448.0 / w.abs().max()).float()
        q, qw = quantize_e4m3(x, sx), quantize_e4m3(w, sw)
        ix, iw = (1 / sx).reshape(()), (1 / sw).reshape(())
        runs = {}
        if native_ok:
            runs["torch._scaled_mm (native)"] = lambda: torch._scaled_mm(q, qw.t(), scale_a=ix, scale_b=iw,
                                                                        out_dtype=torch.bfloat16, use_fast_accum=True)
        runs["evo2lite emulate (fp32 acc)"] = lambda: fp8_gemm_ref(q, qw, ix, iw)
        if mmaemu is not None:
            for profile in ("hopper-te", "hopper") if label in ("1B proj", "tiny") or device == "cpu" else ("hopper-te",):
                def run(profile=profile):
                    return mmaemu.scaled_mm(q, qw.t(), ix, iw, out_dtype=torch.bfloat16, use_fast_accum=True,
                                            profile=profile, splitk=args.mmaemu_splitk)
                runs[f"mmaemu {profile}"] = run
        outputs = {}
        for name, fn in runs.items():
            row = {"shape": label, "M": M, "N": N, "K": K, "backend": name}
            if time.perf_counter() - T0 > args.budget:
                row["error"] = "skipped: time budget"
                rows.append(row)
                continue
            try:
                if name.startswith("mmaemu"):
                    plan = mmaemu.explain(q, qw.t(), ix, iw, out_dtype=torch.bfloat16, use_fast_accum=True,
                                          profile=name.split()[1], splitk=args.mmaemu_splitk)
                    row["mmaemu_backend"], row["mmaemu_split"] = plan.backend, str(plan.split)
                    if plan.backend == "reference" and device == "cuda":
                        row["error"] = "skipped: mmaemu chose its float64 reference (no validated kernel here)"
                        rows.append(row)
                        continue
                if not name.startswith("mmaemu"):
                    fn()  # warm-up (cuBLAS heuristics); mmaemu runs once (it may be slow), its time includes loading
                _sync(device)
                t0 = time.perf_counter()
                outputs[name] = fn()
                _sync(device)
                row["seconds"] = time.perf_counter() - t0
            except Exception as exc:  # report, do not stop the run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            rows.append(row)
        ref_name = "torch._scaled_mm (native)" if native_ok else "evo2lite emulate (fp32 acc)"
        for row in rows:
            if row.get("shape") == label and row["backend"] in outputs and ref_name in outputs:
                row.update(_compare(outputs[row["backend"]], outputs[ref_name]))
                row["vs"] = ref_name
    return {"rows": rows}


def _mmaemu_has_kernel(mmaemu, model, M: int, device: str) -> bool:
    """Whether mmaemu runs this model's projection on a kernel (its CPU / float64 reference would take
    hours for a whole model)."""
    D = model.config.d_model
    q = torch.zeros(M, D, device=device).to(torch.float8_e4m3fn)
    w = torch.zeros(3 * D, D, device=device).to(torch.float8_e4m3fn)
    one = torch.ones((), device=device)
    try:
        plan = mmaemu.explain(q, w.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True, profile="hopper-te")
    except Exception:
        return False
    return device == "cuda" and plan.backend != "reference"


def section_model_fp8(args, device: str, mmaemu) -> dict:
    """A random evo2_1b_base-shaped model at --model-seq-len tokens with each FP8 backend from the same
    calibrated scaling state; logits compared with the first backend (native on Hopper)."""
    from evo2lite.fp8 import enable_fp8, exact_backend

    torch.backends.cuda.matmul.allow_tf32 = False  # the emulation's fp32 accumulation must be fp32
    model = build_on_device(args.fp8_model, device)
    ids = torch.randint(65, 85, (1, args.model_seq_len), device=device, generator=torch.Generator(device).manual_seed(2))
    enable_fp8(model, "emulate")
    with torch.inference_mode():
        model(ids)  # calibrate: the scales after one call, as after loading + one batch
    snapshot = {i: copy.deepcopy(b.mixer.in_proj.scaling) for i, b in enumerate(model.blocks) if b.kind != "A"}
    backends = (["scaled_mm"] if exact_backend(torch.device(device)) == "scaled_mm" else []) + ["emulate"]
    if mmaemu is not None and _mmaemu_has_kernel(mmaemu, model, args.model_seq_len, device):
        backends.append("mmaemu")
    rows, ref = [], None
    bf16 = copy.deepcopy(model)
    for i, block in enumerate(bf16.blocks):  # the same weights with plain bf16 projections
        if block.kind != "A":
            lin = torch.nn.Linear(1, 1, bias=False)
            lin.weight = block.mixer.in_proj.weight
            lin.in_features, lin.out_features = block.mixer.in_proj.in_features, block.mixer.in_proj.out_features
            block.mixer.in_proj = lin
    for backend in backends + ["bf16 (no FP8)"]:
        row = {"model": args.fp8_model, "seq_len": args.model_seq_len, "projections": backend}
        try:
            if backend.startswith("bf16"):
                seconds, logits = timed_forward(bf16, ids, device)
            else:
                enable_fp8(model, backend, {i: copy.deepcopy(s) for i, s in snapshot.items()})
                seconds, logits = timed_forward(model, ids, device)
            row["seconds"] = seconds
            logits = logits.float()
            if ref is None:
                ref = logits
                row["vs"] = "itself (reference)"
            else:
                row.update(_compare(logits, ref))
                row["top1_agree"] = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        rows.append(row)
    return {"rows": rows, "reference": backends[0]}


# --- output -----------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (a smoke test)")
    ap.add_argument("--device", default=None, help="default cuda when available, else cpu")
    ap.add_argument("--import-preset", default=None, help="shape of the checkpoint written in (a) (evo2_7b)")
    ap.add_argument("--big", default=None, help="comma list tried in order in (b) (evo2_40b,evo2_20b,evo2_7b)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens in (b) (8192)")
    ap.add_argument("--fp8-model", default=None, help="model shape of (d) (evo2_1b_base)")
    ap.add_argument("--model-seq-len", type=int, default=None, help="tokens in (d) (2048)")
    ap.add_argument("--gemm", default=None, help="(c) shapes as LABEL:MxNxK,... (default: the Evo 2 projections "
                                              "at 2,048 tokens)")
    ap.add_argument("--skip-old", action="store_true", help="do not run the old importer in (a)")
    ap.add_argument("--sections", default="import,forward,gemm,model_fp8")
    ap.add_argument("--tmp", default=None, help="where (a) writes its checkpoint (default: the temp dir)")
    ap.add_argument("--child-timeout", type=int, default=150)
    ap.add_argument("--budget", type=float, default=225.0, help="seconds: later sections are skipped after it")
    ap.add_argument("--out", default=os.environ.get("OUT") or "bench_out")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    tiny = args.dry_run
    args.import_preset = args.import_preset or ("debug" if tiny else "evo2_7b")
    args.big = args.big or ("debug" if tiny else "evo2_40b,evo2_20b,evo2_7b")
    args.seq_len = args.seq_len or (256 if tiny else 8192)
    args.fp8_model = args.fp8_model or ("debug" if tiny else "evo2_1b_base")
    args.model_seq_len = args.model_seq_len or (128 if tiny else 2048)
    # Evo 2 projection shapes (M tokens, N = 3D, K = D), one 2,048-token window each
    args.gemm_shapes = ([("tiny", 64, 192, 1024)] if tiny else
                        [("1B proj", 2048, 5760, 1920), ("7B proj", 2048, 12288, 4096),
                         ("40B proj", 2048, 24576, 8192)])
    if args.gemm:
        args.gemm_shapes = [(label, *map(int, dims.split("x"))) for label, dims in
                            (item.split(":") for item in args.gemm.split(","))]
    args.mmaemu_splitk = 1 if tiny else "auto"  # tiny K is outside mmaemu's split-K tables; Evo 2 shapes are in
    out = Path(args.out)
    RESULTS.update({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
                    "args": {k: v for k, v in vars(args).items()}})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        mmaemu = _import_mmaemu(tmp)
        RESULTS["mmaemu"] = getattr(mmaemu, "__version__", None) if mmaemu else "not available"
        steps = {"import": lambda: section_import(args, device),
                 "forward": lambda: section_forward(args, device),
                 "gemm": lambda: section_gemm(args, device, mmaemu),
                 "model_fp8": lambda: section_model_fp8(args, device, mmaemu)}
        for name in args.sections.split(","):
            t0 = time.perf_counter()
            if t0 - T0 > args.budget:
                RESULTS["sections"][name] = {"error": "skipped: time budget"}
                continue
            try:
                RESULTS["sections"][name] = steps[name]()
            except Exception:
                RESULTS["sections"][name] = {"error": traceback.format_exc().splitlines()[-1]}
            RESULTS["sections"][name]["section_seconds"] = time.perf_counter() - t0
            _save(out)
            if device == "cuda":
                torch.cuda.empty_cache()
    RESULTS["total_seconds"] = time.perf_counter() - started
    _save(out)
    s = RESULTS["sections"]
    print(f"# checkpoint_scale on {RESULTS['device']} (torch {torch.__version__}, mmaemu {RESULTS['mmaemu']}), "
          f"{RESULTS['total_seconds']:.0f} s")
    if "import" in s:
        print(f"\ncheckpoint: {s['import'].get('preset')} {s['import'].get('checkpoint_gib', float('nan')):.2f} GiB, "
              f"written in {s['import'].get('write_seconds', float('nan')):.1f} s {s['import'].get('error', '')}")
        print_table("(a) import to bf16 on " + device, s["import"].get("rows", []),
                    ["importer", "seconds", "peak_rss_gib", "peak_anon_gib", "model_gib", "error"])
    if "forward" in s:
        print(f"\ntried: {s['forward'].get('tried')} {s['forward'].get('error', '')} "
              f"{s['forward'].get('modal_backend', '')}")
        print_table("(b) forward, built on the device in bf16", s["forward"].get("rows", []),
                    ["model", "projections", "seq_len", "seconds", "tokens_per_s", "peak_gpu_gib", "weights_gib",
                     "finite"])
    if "gemm" in s:
        print_table("(c) FP8 GEMM backends", s["gemm"].get("rows", []),
                    ["shape", "backend", "seconds", "bit_equal_frac", "max_abs_diff", "rel_diff", "vs",
                     "mmaemu_backend", "error"])
    if "model_fp8" in s:
        print_table("(d) whole model, FP8 backends", s["model_fp8"].get("rows", []),
                    ["model", "seq_len", "projections", "seconds", "rel_diff", "max_abs_diff", "top1_agree", "vs",
                     "error"])
    for name, sec in s.items():
        if "error" in sec:
            print(f"\nsection {name} failed: {sec['error']}")


if __name__ == "__main__":
    main()
