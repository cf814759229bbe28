#!/usr/bin/env bash
# BENCHMARKS.md's trial tables (§0, §0b) in one run on one GPU: the attention kernels alone, `wanlora trial
# --profile` on three shapes in bf16 and fp8 compute and on the guide's runs, and bench/step.py's plain
# diffusers/peft eager baseline (and the trainer plan) at the same shapes.  FA4 rows need `pip install -e '.[cuda]'`.
#   bash bench/trial_suite.sh OUT_DIR        (then: python3 bench/trial_table.py OUT_DIR)
# Knobs (environment): SHAPES, GUIDES (job names from bench/trial_jobs.py), STEPS (timed steps per bucket, 2),
# CLIPS (clips per dataset the guides cache and train on, 4; caching is projected to all 20), VARIANTS
# (bench/step.py's, "eager,compile_sac_sel"), NO_ATTENTION / NO_STEP / NO_GUIDE / NO_WARM=1 skip a part.
set -uo pipefail
OUT=${1:-trial_results}
STEPS=${STEPS:-2}
mkdir -p "$OUT"
J="$OUT/jobs"
python3 bench/trial_jobs.py "$J" > /dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
run_trial() {  # name tag [extra args]
  local name=$1 tag=$2; shift 2
  wanlora trial "$J/$name.toml" --json --no-preview "$@" > "$OUT/trial_$name$tag.json" 2> "$OUT/trial_$name$tag.log"
  echo "trial $name$tag rc=$?" >> "$OUT/done.txt"
}
if [ -z "${NO_ATTENTION:-}" ]; then
  python3 bench/attention.py --out "$OUT/attention.jsonl" > "$OUT/attention.log" 2>&1  # every kernel importable here
  echo "attention rc=$?" >> "$OUT/done.txt"
fi
SHAPES=${SHAPES:-s41x512 s41x480 s81x480 s41x512_fp8 s41x480_fp8 s81x480_fp8}
for s in $SHAPES; do run_trial "$s" "" --steps "$STEPS" --profile; done
if [ -z "${NO_STEP:-}" ]; then
  python3 bench/step.py --shapes 41x512x512,41x480x848,81x480x848 --variants "${VARIANTS:-eager,compile_sac_sel}" \
    --steps 2 --warmup 1 --out "$OUT/step.jsonl" > "$OUT/step.log" 2>&1
  echo "step rc=$?" >> "$OUT/done.txt"
fi
if [ -z "${NO_GUIDE:-}" ]; then
  for g in ${GUIDES:-guide guide_fp8 guide81_fp8}; do
    case $g in guide81*) st=1 ;; *) st=$STEPS ;; esac  # an 81-frame 1024² step is ~40 s
    run_trial "$g" "" --steps "$st" --profile --clips "${CLIPS:-4}"
  done
fi
# the first shape again: its compile warm-up with the kernels the first run left in WANLORA_HOME/cache/compile
if [ -z "${NO_WARM:-}" ]; then first=${SHAPES%% *}; run_trial "$first" _warmcache --steps "$STEPS"; fi
echo finished >> "$OUT/done.txt"
