#!/usr/bin/env bash
# Issue #13 on one H200: training step (ours with kernels, the reference path, a Llama-style Transformer of the
# same size; eager and compiled; 8K, 32K and a 256K checkpointed step), the inference forward of the 7-block
# stack against vtx 1.1, cached decode against recompute and vtx, score-vcf against the official recipe on vtx
# (evo2_7b shape, window 8192, both strands) and the exact streamed 1 Mb embedding of the evo2_7b shape.
# Each part has its own timeout and rewrites its JSON/markdown after every measurement, so a part cut short
# keeps what it measured. Writes to $OUT: e2e.log and, per part run, {train_step,forward,generate_bench,
# score_vcf_gpu,embed}.{json,md}.
#
# E2E_PARTS (comma-separated, default all: train_step,forward,generate,score,embed) picks the parts. Their
# timeouts: train_step 230, forward 130, generate 100, score 320, embed 260 s; one device call runs at most
# 600 s, so all five take two calls:
#
#   run(command="E2E_PARTS=train_step,forward,generate bash benchmarks/e2e_h200.sh", carry=[".whl"], timeout_s=600)
#   run(command="E2E_PARTS=score,embed bash benchmarks/e2e_h200.sh", carry=[".whl"], timeout_s=600)
#
# E2E_SCALE (default 1) multiplies every part's timeout and budget; E2E_DRY=1 runs the same parts on a CPU, tiny.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
S=${E2E_SCALE:-1}
t() { python3 -c "print(int($1 * $S))"; }
exec > >(tee -a "$OUT/e2e.log") 2>&1

# vtx 1.1 (vortex) and its pure-Python companions, beside the image's torch (not on a dry run)
if [ -d .whl ] && [ -z "${E2E_DRY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
echo "== $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.cuda.is_available())'

PARTS=",${E2E_PARTS:-train_step,forward,generate,score,embed},"
for p in ${PARTS//,/ }; do
  case $p in train_step|forward|generate|score|embed) ;; *) echo "E2E_PARTS: unknown part $p" >&2; exit 2 ;; esac
done

part() {  # part NAME TIMEOUT_S COMMAND...: runs only the parts E2E_PARTS names
  local name=$1 limit=$2; shift 2
  [[ $PARTS == *",$name,"* ]] || { echo "== $name: not in E2E_PARTS"; return 0; }
  echo "== $name (timeout ${limit}s) $(date -u +%T)"
  local began=$SECONDS
  timeout -k 10 "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - began)) s"
}

if [ -n "${E2E_DRY:-}" ]; then  # the plumbing on a CPU, tiny shapes (tests/unit/test_bench_e2e.py)
  DRY=(--dry-run); GEN=(--device cpu --models debug --lengths 128 --steps 2 --compile-lengths 0)
  EMB=(--device cpu --preset debug --lengths 4k --chunk-size 1024)
else
  DRY=(); GEN=(--device cuda --models stack7,evo2_7b --lengths 8192,65536 --steps 32)
  EMB=(--device cuda --preset evo2_7b --lengths 1M --chunk-size 8192)
fi
part train_step "$(t 230)" python3 benchmarks/train_step.py --budget "$(t 180)" --profile "${DRY[@]}" --out "$OUT"
part forward "$(t 130)" python3 benchmarks/forward.py --timeout "$(t 60)" --reps 2 --seconds-per-length 6 --profile \
  "${DRY[@]}" --out "$OUT"
part generate "$(t 100)" python3 benchmarks/generate.py "${GEN[@]}" --long-prefill 0 --no-profile --budget "$(t 65)" \
  --out "$OUT"
part score "$(t 320)" python3 benchmarks/score_vcf_gpu.py --budget "$(t 300)" "${DRY[@]}" --out "$OUT"
# the exact streamed 1,048,576-base embedding (random evo2_7b weights, bf16, all 32 blocks): a run past
# --stop-after is cut and its row gives the bases done and the rate so far
part embed "$(t 260)" python3 benchmarks/embed.py --parts stream "${EMB[@]}" --stop-after "$(t 200)" \
  --budget "$(t 220)" --out "$OUT"
echo "== done $(date -u +%T) after $SECONDS s"
ls -la "$OUT"
