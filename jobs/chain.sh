#!/bin/bash
# (c) simulate → analyse: the MPI run, then (only if it succeeded) a small serial analysis job.
#   bash jobs/chain.sh inputs/ka.yaml
set -euo pipefail
INPUT=${1:?usage: bash jobs/chain.sh CONFIG.yaml}
OUTPUT=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output'])" "$INPUT")
sim=$(sbatch --parsable jobs/run_state_point.sbatch "$INPUT")
ana=$(sbatch --parsable --dependency=afterok:"$sim" jobs/analyse.sbatch "$OUTPUT")
echo "simulate: job $sim; analyse: job $ana (starts only if $sim exits 0)"
