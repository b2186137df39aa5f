"""``iso.store_displacements: false``: the replica tasks keep only their per-replica sums, the
output has no [S, R, T, N, 3] array, and propensity, F_s, MSD and the Debye–Waller factor are
bitwise those of the stored-displacement path (real LAMMPS, tiny KA config), even when the
replicas of one snapshot ran on different ranks."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from conftest import h5_datasets as _datasets
from mpi4py import MPI

from glasshpc import config, dynamics
from glasshpc.parallel import Context
from glasshpc.run import execute

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
DYNAMICS = ("propensity", "dynamics/fs", "dynamics/msd", "dynamics/debye_waller",
            "dynamics/fs_replicas", "dynamics/chi4_fs", "dynamics/chi4_propensity")


def _yaml(tiny_yaml, path, store):
    data = yaml.safe_load(tiny_yaml(path))
    data["iso"]["store_displacements"] = store
    data["inherent"]["enabled"] = False   # not needed here: keep the test short
    data["cage"]["enabled"] = False
    data["fits"]["feature_sets"] = {"g0": {"generations": 0}, "dw": {"features": "init+dw",
                                                                     "generations": 0,
                                                                     "allow_dynamical": True}}
    return yaml.safe_dump(data, allow_unicode=True)




@pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")
def test_unstored_displacements_give_bitwise_the_same_dynamics(tmp_path, tiny_yaml):
    stored = tmp_path / "stored.h5"
    text = _yaml(tiny_yaml, str(stored), True)
    execute(config.parse(text), text, Context(MPI.COMM_SELF))
    # 2 ranks, tasks (s, r) dealt round-robin: the 3 replicas of a snapshot run on both ranks
    bare = tmp_path / "bare.h5"
    cfg = tmp_path / "bare.yaml"
    cfg.write_text(_yaml(tiny_yaml, str(bare), False))
    plan = subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfg), "--dry-run"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    assert plan.returncode == 0, plan.stderr
    assert "displacements not stored (iso.store_displacements: false; saves" in plan.stdout
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "glasshpc.run", str(cfg)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr
    a, b = _datasets(stored), _datasets(bare)
    assert "iso/displacements" in a and "iso/displacements" not in b
    assert not any(k.startswith("replica_sums") for k in b)     # working data stays out
    assert set(a) - set(b) == {"iso/displacements"}
    for name in b:
        if b[name].dtype.kind in "OSU":
            assert list(a[name]) == list(b[name]), name
        else:                           # the fits too: bitwise on any rank count
            assert np.array_equal(a[name], b[name], equal_nan=True), name
    # and both equal the all-replicas-at-once formulas of dynamics.py (independent code) on the
    # stored displacements, to round-off of the different summation order
    d = a["iso/displacements"]
    times = a["iso/times"]
    with h5py.File(stored, "r") as f:
        q = f["dynamics"].attrs["q"]
    for s in range(d.shape[0]):
        types = a["snapshots/types"][s]
        np.testing.assert_allclose(b["propensity"][s], dynamics.propensity(d[s]), rtol=1e-12)
        np.testing.assert_allclose(b["dynamics/fs"][s],
                                   dynamics.self_intermediate_scattering(d[s], types, q, 2),
                                   rtol=1e-12)
        np.testing.assert_allclose(b["dynamics/msd"][s],
                                   dynamics.mean_squared_displacement(d[s], types, 2), rtol=1e-12)
        np.testing.assert_allclose(b["dynamics/debye_waller"][s],
                                   dynamics.debye_waller(d[s], times)[0], rtol=1e-12)
    for name in DYNAMICS:
        assert np.isfinite(b[name]).all(), name


def test_replica_sums_combine_to_the_reference_formulas():
    """combine_replica_sums of replica_sums = the (R, T, N, 3) formulas, 'squared' kind too; an
    absent species gives NaN rows, as mean_squared_displacement does."""
    rng = np.random.default_rng(3)
    d = rng.normal(scale=0.7, size=(4, 5, 30, 3)).astype(np.float32)
    types = np.where(np.arange(30) < 24, 0, 1)
    times = np.geomspace(0.1, 10, 5)
    k = dynamics.debye_waller_index(times)
    for kind in ("abs", "squared"):
        res = dynamics.combine_replica_sums(
            (dynamics.replica_sums(d[r], types, 7.2, 3, k, kind) for r in range(4)), types, 3)
        np.testing.assert_allclose(res["propensity"], dynamics.propensity(d, kind), rtol=1e-13)
        np.testing.assert_allclose(res["debye_waller"], dynamics.debye_waller(d, times)[0],
                                   rtol=1e-13)
        np.testing.assert_allclose(res["msd"], dynamics.mean_squared_displacement(d, types, 3),
                                   rtol=1e-13)
        fs = res["fs"]
        np.testing.assert_allclose(fs[:2], dynamics.self_intermediate_scattering(
            d, types, 7.2, 2), rtol=1e-13)
        assert np.isnan(fs[2]).all() and np.isnan(res["msd"][2]).all()
    with pytest.raises(ValueError, match="shape"):
        dynamics.replica_sums(d, types, 7.2, 2, k)


def test_store_displacements_false_refused_with_imported():
    with pytest.raises(config.ConfigError, match="iso.store_displacements"):
        config.parse(yaml.safe_dump({
            "output": "x.h5", "model": {"name": "kob_andersen", "n_particles": 1000,
                                        "density": 1.2, "temperature": 0.8},
            "snapshots": {"count": 4}, "iso": {"replicas": 1, "times": [0.5],
                                               "store_displacements": False},
            "fits": {"cv_folds": 2, "test_fraction": 0.25},
            "imported": {"format": "glassbench", "files": "data/*.npz"}}))
