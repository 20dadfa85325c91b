# Sourced from the repository root by the device scripts that keep a log (train_base_h200.sh,
# eval_models_h200.sh): everything they print also goes to $OUT/run.log, and a plain checkout (no pip install,
# as on the device machine) maps the top-level kernels/ and pipelines/ into evo2lite as pyproject does.
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/run.log") 2>&1
if ! python3 -c "import evo2lite.kernels, evo2lite.pipelines" 2>/dev/null; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  (cd evo2lite && ln -sfn ../kernels kernels && ln -sfn ../pipelines pipelines)
fi
