#!/usr/bin/env bash
# The held-out evaluations of data/models/evo2lite-base.md that the training call (train_base_h200.sh) leaves
# out, for evo2lite-base and evo2lite-small in the same run, on one GPU (issue #20):
#   - the bacterial zero-shot check (benchmarks/vep_bacteria.py) on Roseobacter denitrificans (test split, never
#     trained on): stop-gain vs synonymous AUROC for both models on the SAME 800 sites (--draw-reach 6144: the
#     sites that fit evo2lite-base's window), with its base-composition controls (substitution-matched AUROC,
#     in-sample Markov models of orders 0, 2, 5);
#   - bits/base on the held-out organisms (benchmarks/heldout_bits.py): R. denitrificans (test split) and the
#     two val-split organisms that no train record comes from, Thermococcus kodakaraensis and phage lambda.
# Inputs (made here, CPU; .carry is git-ignored; ~8 MB):
#   mkdir -p .carry/evalpack && cp .carry/train2bit/{corpus.json.gz,test.*,val.*} .carry/evalpack/ &&
#   python -c "import json; m = json.load(open('.carry/train2bit/packed.json')); del m['splits']['train'];
#   json.dump(m, open('.carry/evalpack/packed.json', 'w'))"   # the val and test splits of the corpus's pack
#   gzip -c R_denitrificans.gbk > .carry/evalpack/R_denitrificans.gbk.gz   # cct-examples, vep_bacteria.py's
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl biopython==1.88       # vep_bacteria.py reads GenBank with it
#   run(command="python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/biopython-*.whl
#       && PYTHONPATH=/tmp/site bash benchmarks/eval_models_h200.sh", kind="nvidia-h200",
#       carry=[".carry/evalpack", ".whl/biopython-1.88-cp312-...whl"], timeout_s=420)      # ~225 s of work
# EVAL_DRY=1 runs the same steps on a CPU with tiny sizes (a check of the script before a device call).
# EVAL_MODELS="LABEL=DIR ..." picks the models (default: the two shipped folders).
# Writes to $OUT: vep_bacteria_{base,small}.json (variants included), heldout_{base,small}.json and run.log.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_device_setup.sh  # $OUT, the run.log tee, a plain checkout's imports
PACK=${EVAL_PACK:-.carry/evalpack}
CORPUS=${EVAL_CORPUS_DIR:-/tmp/evo2lite_evalcorpus}
GENBANK=${EVAL_GENBANK:-$PACK/R_denitrificans.gbk.gz}
MODELS=${EVAL_MODELS:-"base=evo2lite/weights/base small=evo2lite/weights/default"}  # LABEL=MODEL_DIR
if [ -n "${EVAL_DRY:-}" ]; then
  DEV=cpu; VEP=(--sites 2 --batch-size 2 --draw-reach 1000 --upstream 24 --downstream 8); HELD=(--max-bases 2000 --batch-size 2)
else
  DEV=cuda; VEP=(--sites 400 --batch-size 16 --draw-reach 6144); HELD=(--batch-size 16)
fi
echo "== $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
python3 -c "import sys; from evo2lite.apps.train_data import unpack_corpus; print('corpus:', unpack_corpus(*sys.argv[1:]))" \
  "$PACK" "$CORPUS" || exit 1

first=1
for pair in $MODELS; do
  m=${pair%%=*}; dir=${pair#*=}
  # the composition controls do not depend on the model: once
  if [ $first = 1 ]; then CTRL=(--markov-orders 0 2 5); else CTRL=(--markov-orders); fi
  echo "== vep_bacteria $m $(date -u +%T)"
  timeout -k 10 150 python3 benchmarks/vep_bacteria.py "$GENBANK" --model "$dir" --device "$DEV" "${VEP[@]}" "${CTRL[@]}" \
    -o "$OUT/vep_bacteria_$m.json" | python3 -c 'import json, sys; d = json.load(sys.stdin)
print({k: d.get(k) for k in ("model_source", "context", "n_stop_gain", "n_synonymous", "auroc_stop_vs_syn",
       "auroc_substitution_matched", "wall_s")}); print("markov", d.get("markov_in_sample"))'
  first=0
  python3 - "$dir" "$CORPUS" "$DEV" "$OUT/heldout_$m.json" "${HELD[@]}" <<'EOF'
# one file per model: each held-out organism through heldout_bits.py, a subprocess each (its own 120 s limit)
import json, subprocess, sys, time
model, corpus, dev, out, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
rows = {}
for split, organism in (("test", "Roseobacter denitrificans"), ("val", "Thermococcus kodakaraensis"),
                        ("val", "Escherichia phage lambda")):
    t = time.time()
    tmp = f"/tmp/heldout_{split}.json"
    rc = subprocess.run([sys.executable, "benchmarks/heldout_bits.py", model, corpus, "--split", split,
                         "--organism", organism, "--device", dev, *extra, "-o", tmp], timeout=120).returncode
    rows[organism] = json.load(open(tmp)) if rc == 0 else {"error": f"exit {rc}"}
    print(f"{model} {organism}: {rows[organism].get('bits_per_base')} bits/base in {time.time() - t:.0f} s")
json.dump(rows, open(out, "w"), indent=1)
EOF
done
echo "== done $(date -u +%T) after $SECONDS s"
