#!/usr/bin/env bash
# evo2lite-base (issue #20) in ONE device call on one H200: train data/train/base.yaml (schedule fitted to its
# time_budget_s, fused Triton kernels), export the weights in bf16 (what ships; the loader upcasts on CPU), then
# evaluate that bf16 export: bits/base on held-out human chr20:10-15 Mb (benchmarks/heldout_bits.py) and the
# zero-shot human coding/splice variant AUROCs (benchmarks/vep_human.py; its Markov controls run on a CPU).
# Writes 8 files to $OUT, each < 16 MiB: model.safetensors.part0/.part1 (the bf16 weights split in two; join
# with cat), config.json, train_log.jsonl (its last line is the run's summary), heldout_human.json,
# vep_human.json and vep_human_small.json (the shipped evo2lite-small on the same variants), run.log.
#
#   run(command="bash benchmarks/train_base_h200.sh", kind="nvidia-h200", carry=[".carry/train2bit",
#       ".carry/vep_human"], timeout_s=570)
#
# Several calls (BASE_PHASE; the device keeps /tmp while it stays warm, i.e. calls < 30 s apart): one schedule
# of BASE_MAX_STEPS steps (default: pilot 1's 5.87 steps/s x BASE_TOTAL_S, default 1300 s of training) is
# laid out by the first call and never recalibrated; every call stops after BASE_SLICE_S seconds of training
# (default 480) with a checkpoint in /tmp, and the next one resumes it exactly (evo2lite train --resume auto):
#   BASE_PHASE=first  fresh start, stop after the slice       (out: run.log, train_log.jsonl)
#   BASE_PHASE=next   resume, stop after the slice; repeatable (same two files)
#   BASE_PHASE=last   resume, train to BASE_MAX_STEPS (a safety stop after BASE_LAST_S, default 420 s, keeps
#                     ~2.5 min for the rest), then export and evaluate as the one-call run (the 8 files)
# e.g. BASE_CONFIG=data/train/base2.yaml and three calls, first, next, last, each
#   run(command="BASE_CONFIG=data/train/base2.yaml BASE_PHASE=first bash benchmarks/train_base_h200.sh", ...,
#       timeout_s=600)
# Unset, BASE_PHASE is "one": the single call of pilot 1 (schedule fitted to the time budget).
# The carried inputs are made here first (~2 min on a CPU; data/models/evo2lite-base.md, "Exact commands").
# BASE_DRY=1 runs the same steps on a CPU with a tiny budget and window (tests/unit/test_vep_human.py);
# BASE_TIME_BUDGET=S fits the one-call training into S seconds instead of base.yaml's 400 (the rest ~2.5 min);
# BASE_CONFIG picks another training config (default data/train/base.yaml); BASE_CORPUS another corpus than its
# `corpus:`. Pilot 4 (data/train/base4.yaml, .carry/train4bit: 57.6 MiB) fits the 64 MiB tree only without the
# shipped weights and with the pack carried once: docs/base_pilot4.md gives the three calls.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_device_setup.sh  # $OUT, the run.log tee, a plain checkout's imports
RUN=${BASE_RUN_DIR:-/tmp/evo2lite_base_run}
WORK=/tmp/evo2lite_work                               # base.yaml's work_dir: the 2-bit pack is unpacked there
VEP_IN=${BASE_VEP_INPUTS:-.carry/vep_human}           # overrides (the dry run's test): the vep_human.py inputs,
VEP_REGION=${BASE_VEP_REGION:-20:10000000-15000000}   # its region
HELD_SPLIT=${BASE_HELD_SPLIT:-test}                   # and the held-out split
CONFIG=${BASE_CONFIG:-data/train/base.yaml}
# a built corpus or a 2-bit pack: the config's `corpus:` (.carry/train2bit for base*.yaml up to pilot 3,
# .carry/train4bit for base4.yaml), so that a config never trains on another pilot's data by default
CORPUS=${BASE_CORPUS:-$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["corpus"])' \
  "$CONFIG" 2>/dev/null)} || { echo "cannot read corpus: from $CONFIG"; exit 2; }
PHASE=${BASE_PHASE:-one}
case $PHASE in one|first|next|last) ;; *) echo "BASE_PHASE must be one, first, next or last, got '$PHASE'"; exit 2;; esac

echo "== $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"

if [ -n "${BASE_DRY:-}" ]; then
  DEV=cpu; WORK=$RUN/work
  TRAIN=(--set seq_len=512 --set global_batch_size=2 --set micro_batch_size=2 --set eval_windows=1
         --set calibrate_steps=2 --set time_reserve_s=5 --set warmup_steps=2 --set eval_every=0 --set "work_dir=$WORK"
         --set "model={name: evo2lite-base-dry, layout: SMLA, d_model: 32, num_heads: 2, d_mlp: 64,
                        num_se_groups: 2, num_mr_groups: 2}")
  HELD=(--max-bases 3000 --batch-size 2); VEP=(--sites 2 --batch-size 2 --site-reach 400)
else
  DEV=cuda; TRAIN=()
  # 120 sites per class: ~480 sites x 2 strands x 14,336 tokens (6,144 + 4 x 2,048) = ~14 M fp32 tokens at 8K
  HELD=(--batch-size 16); VEP=(--sites 120 --batch-size 16)
  # the training must take the fused path: Triton importable and the tensors on CUDA (evo2lite.mixers, backend auto)
  python3 -c 'import torch, triton; from evo2lite.kernels.hyena import triton_available as ok
assert ok(torch.zeros(1, device="cuda"))
print("torch", torch.__version__, "triton", triton.__version__, "fused Hyena kernels: yes")' || exit 1
  # which path each block of this config takes on CUDA (informative only: expect 6 of 9 and ['triton'])
  case $PHASE in one|first) INSPECT=60;; *) INSPECT=0;; esac  # once per run
  [ "$INSPECT" = 0 ] || timeout "$INSPECT" python3 - "$CONFIG" <<'EOF' || echo "could not inspect the training path"
import sys, torch, yaml
from evo2lite.apps.train import model_config_from
from evo2lite.kernels.modal import resolve_backend
from evo2lite.mixers import HyenaMixer, ModalFilter
from evo2lite.model import StripedHyena2
from evo2lite.train_params import make_trainable
m = StripedHyena2(model_config_from(yaml.safe_load(open(sys.argv[1]))["model"], 8192)).cuda()
make_trainable(m, None)
x = torch.zeros(1, 8, m.config.d_model, device="cuda")
mix = [mod for mod in m.modules() if isinstance(mod, HyenaMixer)]
lr = {resolve_backend(f.backend, x, f.log_poles.shape[1]) for f in m.modules() if isinstance(f, ModalFilter)}
print(f"training path: {sum(mod._fused(x, None) for mod in mix)} of {len(mix)} Hyena mixers on the fused "
      f"hyena_conv kernel (SE and MR; LR is not), Hyena-LR modal backend {sorted(lr)}")
EOF
fi
EVAL_CORPUS=$CORPUS; [ -f "$CORPUS/corpus.json" ] || EVAL_CORPUS=$WORK/corpus_unpacked
SLICE=${BASE_SLICE_S:-480}; [ "$PHASE" = last ] && SLICE=${BASE_LAST_S:-420}
case $PHASE in
  one)  # the schedule is fitted to the time budget after calibrate_steps timed steps
    rm -rf "$RUN"
    if [ -n "${BASE_DRY:-}" ]; then TRAIN+=(--time-budget 25); else TRAIN+=(${BASE_TIME_BUDGET:+--time-budget "$BASE_TIME_BUDGET"}); fi
    LIMIT=450;;
  first)  # one schedule for all the calls, fixed here; calibration can never fire (calibrate_steps >= max_steps),
    rm -rf "$RUN"; mkdir -p "$RUN"  # so the time budget only stops the call
    MAX_STEPS=${BASE_MAX_STEPS:-$((587 * ${BASE_TOTAL_S:-1300} / 100))}  # pilot 1: 5.87 steps/s
    echo "$MAX_STEPS" > "$RUN/max_steps";;
  next|last)
    if ! ls -d "$RUN"/checkpoints/step_* >/dev/null 2>&1 || [ ! -f "$RUN/max_steps" ]; then
      echo "BASE_PHASE=$PHASE: no checkpoint of a first call in $RUN (the machine was not kept warm?)"; exit 1
    fi
    MAX_STEPS=$(cat "$RUN/max_steps")
    echo "== resuming $(basename "$(ls -d "$RUN"/checkpoints/step_* | tail -1)") of $MAX_STEPS steps"
    TRAIN+=(--resume auto);;
esac
if [ "$PHASE" != one ]; then
  TRAIN+=(--max-steps "$MAX_STEPS" --time-budget "$SLICE" --set calibrate_steps="$MAX_STEPS" --set time_reserve_s=0
          --set save_every=1000)
  LIMIT=$((${SLICE%.*} + 90))  # a guard: the trainer stops itself after the slice
fi

part() {  # part NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (timeout ${limit}s) $(date -u +%T)" >&2  # stderr: a part's stdout may be redirected
  local began=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - began)) s" >&2
  return $rc
}

part train "$LIMIT" python3 -m evo2lite.apps.train_cli "$CONFIG" --out-dir "$RUN" --corpus "$CORPUS" \
  --device "$DEV" "${TRAIN[@]}" \
  || exit 1
cp "$RUN/log.jsonl" "$OUT/train_log.jsonl"
if [ "$PHASE" = first ] || [ "$PHASE" = next ]; then
  echo "== $PHASE call done after $SECONDS s: $(basename "$(ls -d "$RUN"/checkpoints/step_* | tail -1)") of $MAX_STEPS;" \
       "start the next call within 30 s"
  exit 0
fi

# bf16 export: every tensor in bf16 except the ones the model keeps in fp32 (LR poles/residues, rotary inv_freq)
part export 60 python3 - "$RUN/model" "$RUN/model_bf16" <<'EOF' || exit 1
import sys, torch
from evo2lite.checkpoint import load_model, save_state
from evo2lite.model import FP32_PARAMS
model = load_model(sys.argv[1], device="cpu", dtype="float32")
state = {k: v if k.endswith(FP32_PARAMS) else v.to(torch.bfloat16) for k, v in model.state_dict().items()}
save_state(model.config, state, sys.argv[2])
print(f"{sum(v.numel() for v in state.values()):,} parameters in bf16 -> {sys.argv[2]}")
EOF
cp "$RUN/model_bf16/config.json" "$OUT/config.json"
split -n 2 -d -a 1 "$RUN/model_bf16/model.safetensors" "$OUT/model.safetensors.part"
sha256sum "$RUN/model_bf16/model.safetensors" "$RUN/model_bf16/config.json"

part heldout_bits 75 python3 benchmarks/heldout_bits.py "$RUN/model_bf16" "$EVAL_CORPUS" --split "$HELD_SPLIT" \
  --organism "Homo sapiens" --device "$DEV" "${HELD[@]}" -o "$OUT/heldout_human.json"
part vep_human 90 python3 benchmarks/vep_human.py --model "$RUN/model_bf16" --reference "$VEP_IN/chr20_masked.fa.gz" \
  --annotation "$VEP_IN/hg19_RefSeq_exon_chr20.txt" --region "$VEP_REGION" --device "$DEV" "${VEP[@]}" \
  -o "$OUT/vep_human.json" \
  > "$RUN/vep_human.stdout"
# the shipped evo2lite-small on the same variants (same draw: the site set does not depend on the context)
part vep_human_small 45 python3 benchmarks/vep_human.py --reference "$VEP_IN/chr20_masked.fa.gz" \
  --annotation "$VEP_IN/hg19_RefSeq_exon_chr20.txt" --region "$VEP_REGION" --device "$DEV" "${VEP[@]}" \
  -o "$OUT/vep_human_small.json" > "$RUN/vep_human_small.stdout"
python3 -c 'import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    print(f, {k: v for k, v in d.get("model", {}).items() if k != "forward_strand_only"})' "$OUT"/vep_human*.json
echo "== done $(date -u +%T) after $SECONDS s"
ls -la "$OUT"
