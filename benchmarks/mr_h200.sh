#!/usr/bin/env bash
# Hyena-MR kernels (issue #11) in ONE device call: the fused-core kernel tests on the GPU (fp32 and bf16 against
# the reference, every gradient; the "gather" and "split" MR variants), then the MR rows of operators.py's sweep
# at L 8K (65,536 tokens, D 4096, 256 groups of 16, bf16): forward and backward time of every variant/option.
# Writes mr_tests.log and operators_h200_mr_sweep.md/.json to $OUT.
#
#   run(command="bash benchmarks/mr_h200.sh", kind="nvidia-h200", timeout_s=300)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pytest -q -x tests/kernels/test_hyena_conv.py -k "gpu or mr_variants" 2>&1 \
  | tail -25 | tee "$OUT/mr_tests.log"
python3 benchmarks/operators.py --sweep-only --sweep-ops mr --lengths 8192 --tag h200_mr_sweep --out "$OUT"
