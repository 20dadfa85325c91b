#!/usr/bin/env bash
# Fused Hyena decode step (issue #13) in ONE device call: the step kernel's tests on the GPU (fp32 to 1e-5 and the
# bf16 rule against hyena_step_ref, kinds S/M/L at 7B width, the Decoder with the kernel inside a CUDA graph
# against the full forward) and the CUDA-graph decode test of test_inference.py, then generate.py's decode of
# stack7 and evo2_7b at 8K with the reference step and the fused kernel in the same run (--step-backend), and
# hyena_step.py: one block's step (S, M, L at D 4096, bf16, CUDA graph) by the reference and the kernel at
# channel blocks 32/64/128. Writes step_tests.log, generate_bench.md/.json and hyena_step.md/.json to $OUT.
#
#   run(command="bash benchmarks/step_h200.sh", kind="nvidia-h200", timeout_s=420)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pytest -q tests/kernels/test_hyena_step.py "tests/unit/test_inference.py::test_cuda_graph_step_equals_eager_step" \
  2>&1 | tail -25 | tee "$OUT/step_tests.log"
python3 benchmarks/generate.py --device cuda --models stack7,evo2_7b --lengths 8192 --steps 32 --long-prefill 0 \
  --no-profile --no-vtx --recompute-steps 0 --compile-lengths 0 --step-backend reference,triton --budget 150 --out "$OUT"
python3 benchmarks/hyena_step.py --out "$OUT"
