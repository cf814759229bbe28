#!/usr/bin/env bash
# BENCHMARKS.md's trial tables (§0, §0b) in one run on one GPU: the attention kernels alone, `wanlora trial
# --profile` on three shapes in bf16 and fp8 compute and on the guide's run, and bench/step.py's trainer plan +
# the plain diffusers/peft eager baseline at the same shapes.  FA4 rows need `pip install -e '.[cuda]'`.
#   bash bench/trial_suite.sh OUT_DIR        (then: python3 bench/trial_table.py OUT_DIR)
set -uo pipefail
OUT=${1:-trial_results}
STEPS=${STEPS:-2}
mkdir -p "$OUT"
J="$OUT/jobs"
python3 bench/trial_jobs.py "$J" > /dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
run_trial() {  # name [extra args]
  local name=$1; shift
  wanlora trial "$J/$name.toml" --steps "$STEPS" --json "$@" > "$OUT/trial_$name${TAG:-}.json" 2> "$OUT/trial_$name${TAG:-}.log"
  echo "trial $name${TAG:-} rc=$?" >> "$OUT/done.txt"
}
python3 bench/attention.py --out "$OUT/attention.jsonl" > "$OUT/attention.log" 2>&1  # every kernel importable here
echo "attention rc=$?" >> "$OUT/done.txt"
for s in ${SHAPES:-s41x512 s41x480 s81x480 s41x512_fp8 s41x480_fp8 s81x480_fp8}; do run_trial "$s" --profile; done
if [ -z "${NO_STEP:-}" ]; then
  python3 bench/step.py --shapes 41x512x512,41x480x848,81x480x848 --variants eager,compile_sac_sel \
    --steps 3 --warmup 2 --out "$OUT/step.jsonl" > "$OUT/step.log" 2>&1
  echo "step rc=$?" >> "$OUT/done.txt"
fi
if [ -z "${NO_GUIDE:-}" ]; then for g in ${GUIDES:-guide guide_fp8 guide81_fp8}; do run_trial "$g" --no-preview --profile; done; fi
echo finished >> "$OUT/done.txt"
