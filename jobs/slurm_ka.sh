#!/bin/bash
# SLURM template: one glasshpc run over many ranks (edit the resources and the input).
#SBATCH --job-name=glasshpc-ka
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=128
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail
export OMP_NUM_THREADS=1          # one serial LAMMPS instance per rank
export NUMBA_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
# Activate the environment that holds glasshpc, your LAMMPS Python module and mpi4py built against
# the cluster MPI (see README "On a cluster").
# source ~/venvs/glasshpc/bin/activate

INPUT=${1:-inputs/ka.yaml}
python -m glasshpc.run "$INPUT" --dry-run
srun python -m glasshpc.run "$INPUT"
