#!/bin/bash
# (e) Issue 15 study at T = 0.44: the run, then bench/study_cage_convergence.py on its output.
#   bash jobs/study_cage_t044.sh [inputs/ka_t044_study.yaml]
# Submits, each only if the previous succeeded: 1. the run (jobs/run_state_point.sbatch);
# 2. a job array, one element (one core) per snapshot: K chains, chain 0 measuring LONG sweeps
#    (the 1×KM windows), the others SWEEPS, recorded every EVERY → study_t044/s<i>.npz;
# 3. the pipeline's ridge per window and estimator, RIDGE_PARTS elements; 4. the tables.
# Cost (N = 2000, ≈ 4 M trial moves/s per core): (LONG + (K − 1)·SWEEPS) × N moves per snapshot,
# ≈ 3 min at the defaults; memory ≈ 2 × 8 (LONG / EVERY) · N · 3 bytes per element (≈ 1.0 GB).
# Not runnable on a laptop: the run alone is ≈ 2 × 10¹² atom-steps (--dry-run prints it).
set -euo pipefail
INPUT=${1:-inputs/ka_t044_study.yaml}
K=${K:-6} SWEEPS=${SWEEPS:-30000} LONG=${LONG:-200000} EVERY=${EVERY:-20}
RIDGE_PARTS=${RIDGE_PARTS:-4}
DIR=${DIR:-study_t044}
OUTPUT=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output'])" "$INPUT")
S=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['snapshots']['count'])" "$INPUT")
mkdir -p "$DIR"
STUDY="python bench/study_cage_convergence.py $OUTPUT"
ALL="$DIR/s*.npz"                  # expanded inside the jobs, after the array wrote them
ENV='cd "${SLURM_SUBMIT_DIR:-.}" && . jobs/env.sh &&'

sim=$(sbatch --parsable jobs/run_state_point.sbatch "$INPUT")
mc=$(sbatch --parsable --dependency=afterok:"$sim" --array=0-$((S - 1)) --ntasks=1 \
     --cpus-per-task=1 --mem=4G --time=02:00:00 --job-name=cage-study-mc \
     --output="$DIR/mc-%A_%a.out" \
     --wrap="$ENV $STUDY --snapshots \$SLURM_ARRAY_TASK_ID --chains $K --sweeps $SWEEPS \
             --long $LONG --every $EVERY --out $DIR/s\$SLURM_ARRAY_TASK_ID.npz")
ridge=$(sbatch --parsable --dependency=afterok:"$mc" --array=0-$((RIDGE_PARTS - 1)) --ntasks=1 \
        --cpus-per-task=1 --mem=16G --time=04:00:00 --job-name=cage-study-ridge \
        --output="$DIR/ridge-%A_%a.out" \
        --wrap="$ENV $STUDY --table $ALL --ridge $DIR/ridge_\$SLURM_ARRAY_TASK_ID.npz \
                --ridge-part \$SLURM_ARRAY_TASK_ID $RIDGE_PARTS")
parts=$(for i in $(seq 0 $((RIDGE_PARTS - 1))); do printf '%s ' "$DIR/ridge_$i.npz"; done)
tab=$(sbatch --parsable --dependency=afterok:"$ridge" --ntasks=1 --mem=8G --time=00:30:00 \
      --job-name=cage-study-table --output="$DIR/table-%j.out" \
      --wrap="$ENV $STUDY --table $ALL --ridge $parts")
echo "run: job $sim; chains: array $mc ($S snapshots); ridge: array $ridge; tables: job $tab"
echo "(tables in $DIR/table-$tab.out)"
