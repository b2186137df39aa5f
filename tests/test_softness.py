"""Softness SVC and regressors on synthetic data with a known generating hyperplane."""
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc.learn import softness as sm


def _separable(n=3000, M=20, seed=0, gap=0.3):
    """Anisotropic features (scales 0.5..5) labelled by a hyperplane in raw units, with an empty
    slab of half-width ``gap`` around it."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 5.0, M)
    X = rng.standard_normal((n, M)) * scales + 3.0
    u = _unit(rng.standard_normal(M))
    d = (X - 3.0) @ u - 0.4
    keep = np.abs(d) > gap
    return X[keep], d[keep] > 0, u


def _unit(v):
    return v / np.linalg.norm(v)


def test_svc_recovers_generating_hyperplane():
    X, y, u = _separable()
    svc = sm.SoftnessSVC(C=1e-2).fit(X, y)
    assert svc.normal_raw_ @ u > 0.99
    assert np.linalg.norm(svc.coef_) == pytest.approx(1.0)
    assert svc.train_accuracy_ > 0.97
    # softness is the signed distance in standardised units, positive on the rearranging side
    S = svc.softness(X)
    np.testing.assert_allclose(S, ((X - svc.mean_) / svc.scale_) @ svc.coef_ - svc.intercept_)
    assert np.mean(S[y] > 0) > 0.97 and np.mean(S[~y] < 0) > 0.97
    # the best bias on the bias-free output is close to the SVC's own bias
    b = sm.best_bias(svc.raw_output(X), y)
    assert abs(b - svc.intercept_) < 0.5 * svc.margin_width_


def test_best_bias_exact():
    out = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    lab = np.array([False, False, False, True, True, True])
    assert sm.best_bias(out, lab) == pytest.approx(2.5)


def test_regressors_on_linear_logit():
    rng = np.random.default_rng(2)
    M, n = 12, 1500
    scales = np.linspace(1.0, 3.0, M)
    X = rng.standard_normal((n, M)) * scales
    w = _unit(rng.standard_normal(M))
    y = (X / scales) @ w * 1.5 - 4.0 + 0.1 * rng.standard_normal(n)
    Xte = rng.standard_normal((500, M)) * scales
    yte = (Xte / scales) @ w * 1.5 - 4.0
    for name in sm.REGRESSORS:
        reg = sm.fit_regressor(name, X, y, seed=3)
        rho = sm.pearson(reg.predict(Xte), yte)
        assert rho > (0.99 if name in ("linear_svr", "ridge") else 0.9), (name, rho)
        if reg.coef_ is not None:
            # standardised features here equal X / scales up to sampling → same normal
            assert reg.coef_ @ w > 0.99
            assert reg.intercept_ == pytest.approx(-4.0, abs=0.1)
    names, D = sm.normal_dot_products({"a": w, "b": 2 * w, "c": -w})
    np.testing.assert_allclose(D, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)


def test_rfe_keeps_informative_features():
    rng = np.random.default_rng(8)
    M, n = 30, 2000
    X = rng.standard_normal((n, M))
    inform = [3, 11, 17, 25]
    y = X[:, inform] @ np.array([1.0, -0.8, 0.6, 0.5]) + 0.3 * rng.standard_normal(n)
    rank, rho = sm.rfe_curve(X[:1500], y[:1500], X[1500:], y[1500:], [1, 4, 30])
    assert set(np.argsort(rank)[:4]) == set(inform)
    assert rho[0] < rho[1] and rho[1] > 0.95 and abs(rho[2] - rho[1]) < 0.02


def test_bad_input():
    with pytest.raises(ValueError, match="both"):
        sm.SoftnessSVC().fit(np.ones((4, 2)), [True] * 4)
    with pytest.raises(ValueError, match="sample 1, column 0"):
        sm.SoftnessSVC().fit(np.array([[0.0, 1], [np.nan, 2]]), [True, False])
    with pytest.raises(ValueError, match="unknown regressor"):
        sm.fit_regressor("lasso", np.ones((3, 2)), np.ones(3))


def test_gather_rows_orders_by_key_serial():
    X, y = sm.gather_rows(MPI.COMM_SELF, [(2,), (0,)], [np.ones((2, 3)), np.zeros((1, 3))],
                          [np.array([2, 2]), np.array([0])])
    assert y.tolist() == [0, 2, 2] and X.shape == (3, 3)


@pytest.mark.mpi(min_size=2)
def test_gather_and_spread_fits_rank_independent():
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    y = X @ np.arange(1.0, 7.0) + 0.1 * rng.standard_normal(400)
    blocks = [(b,) for b in range(8)]
    mine = blocks[comm.rank::comm.size]
    Xg, yg = sm.gather_rows(comm, mine, [X[50 * b[0]:50 * b[0] + 50] for b in mine],
                            [y[50 * b[0]:50 * b[0] + 50] for b in mine])
    assert np.array_equal(Xg, X) and np.array_equal(yg, y)
    models = sm.fit_models(comm, ["ridge", "linear_svr", "mlp"],
                           lambda name: sm.fit_regressor(name, Xg, yg, seed=1))
    serial = {n: sm.fit_regressor(n, X, y, seed=1) for n in models}
    for n in models:
        assert np.array_equal(models[n].predict(X[:20]), serial[n].predict(X[:20])), n


# -- the softness sweep end to end (real LAMMPS, real MPI, real HDF5) ---------------------------

SWEEP_YAML = """
output: {output}
seed: 3
model: {{name: kob_andersen, n_particles: 300}}
md: {{melt_time: 2, nvt_time: 5, nve_time: 5}}
softness:
  state_points:
    - {{temperature: 0.7, density: 1.2, snapshots: 2}}
    - {{temperature: 1.0, density: 1.2, snapshots: 2}}
  trajectory: {{duration: 30, measure_frames: 4}}
  indicator: {{p_l: 0.05, quiet_time: 12}}
  training: {{rearranging: 100, fluidity_min_temperature: 1.0, fluidity_fraction: 0.01,
             fluidity_examples: 60}}
  p_r: {{replicas: 4, replicas_per_task: 2, duration: 12, by: 7}}
  features:
    radial: [{{r_min: 0.0, r_max: 2.0, count: 9, delta: 0.2}}]
    angular: [{{r_min: 1.25, r_max: 1.75, count: 2, delta: 0.15}}]
    l: [2, 4, 6]
    truncation: 4
  models: [svc, ridge, linear_svr, mlp]
  barriers: {{max_temperature: 1.1, bins: {{min: -20, max: 20, count: 8}}, min_count: 1}}
"""


def _sweep(path, comm):
    from glasshpc import config
    from glasshpc.parallel import Context
    from glasshpc.run import execute
    text = SWEEP_YAML.format(output=path)
    return execute(config.parse(text), text, Context(comm))


def test_sweep_writes_softness_and_barriers(tmp_path):
    import h5py
    from glasshpc.structure.descriptors import compute_descriptors
    from glasshpc.softness_stages import Plan
    from glasshpc import config
    out = str(tmp_path / "sweep.h5")
    summary = _sweep(out, MPI.COMM_SELF)
    pl = Plan(config.parse(SWEEP_YAML.format(output=out)))
    with h5py.File(out, "r") as f:
        d = f["softness/data"]
        types = d["types"][()]
        # stored snapshot features are the descriptors of the stored snapshot
        x0 = compute_descriptors(d["positions"][1], types[1], d["box"][1], pl.spec)
        np.testing.assert_allclose(d["snapshot_features"][1], x0.astype(np.float32))
        normal = f["softness/models/svc/normal"][()]
        assert normal.shape == (pl.M,) and np.linalg.norm(normal) == pytest.approx(1.0)
        # the SVC refitted on the stored training set gives the stored hyperplane
        lab = d["train_label"][()]
        sel = (lab >= 0) & (f["softness/snapshot_state"][()] == 0)[:, None]
        X = d["train_X"][()][sel]
        refit = sm.SoftnessSVC(1e-2).fit(X, lab[sel] == 1)
        np.testing.assert_allclose(refit.coef_, normal, atol=1e-10)
        assert (lab[sel] == 1).sum() == (lab[sel] == 0).sum() > 10       # balanced
        # stored per-particle softness of every snapshot = the stored hyperplane applied to the
        # stored snapshot features (species A only); the ridge output lies along its own normal
        F0 = d["snapshot_features"][()].astype(np.float64)
        svc = f["softness/models/svc"]
        S = f["softness/predictions/svc"][()]
        assert S.shape == types.shape and np.array_equal(np.isnan(S), types != 0)
        z = (F0[types == 0] - svc["mean"][()]) / svc["scale"][()]
        np.testing.assert_allclose(S[types == 0], z @ normal - svc.attrs["intercept"], atol=1e-9)
        rg = f["softness/models/ridge"]
        out = f["softness/predictions/ridge"][()][types == 0] - rg.attrs["intercept"]
        along = ((F0[types == 0] - rg["mean"][()]) / rg["scale"][()]) @ rg["normal"][()]
        assert abs(np.corrcoef(out, along)[0, 1]) > 1 - 1e-9
        for m in ("linear_svr", "mlp"):
            assert np.all(np.isfinite(f[f"softness/predictions/{m}"][()][types == 0]))
        # every A particle of every measured frame lands in a bin (edges ±20), and the
        # rearranging counts are those of the stored indicator
        A = types == 0
        re = d["rearranged"][()].astype(bool)
        for m in ("svc", "ridge", "linear_svr", "mlp", "svc_S"):
            n, k = f[f"barriers/{m}/n"][()], f[f"barriers/{m}/k"][()]
            for p in range(2):
                js = np.flatnonzero(f["softness/snapshot_state"][()] == p)
                assert n[p].sum() == A[js].sum() * pl.K
                assert k[p].sum() == sum(re[j][:, A[j]].sum() for j in js)
            ev = f[f"barriers/{m}/explained_variance"][()]
            assert np.all((ev >= 0) & (ev <= 1))
        assert k[0].sum() < k[1].sum()           # hotter → more rearrangements in 2 τ
        D = f["softness/dot_products"][()]
        np.testing.assert_allclose(np.diag(D), 1.0)
        assert f["barriers/svc"].attrs["sigma_tr"] > 0
        assert "fix traj all nvt" in f["provenance"].attrs["lammps_commands"]
        assert f["provenance"].attrs["md_suffix"] in ("none", "opt", "omp", "intel")  # auto resolved
    assert set(summary["barriers"]) >= {"svc", "svc_S", "ridge"}


@pytest.mark.mpi(min_size=2)
def test_sweep_one_and_two_ranks_agree(tmp_path):
    import os
    import h5py
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    two, one = os.path.join(folder, "two.h5"), os.path.join(folder, "one.h5")
    _sweep(two, comm)
    if comm.rank == 0:
        _sweep(one, MPI.COMM_SELF)
    comm.Barrier()
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in a["softness/data"]:
            # bitwise (NaN marks the unused slots, equal in both)
            np.testing.assert_array_equal(a["softness/data"][name][()],
                                          b["softness/data"][name][()], err_msg=name)
        for m in ("svc", "ridge", "linear_svr"):
            np.testing.assert_allclose(a[f"softness/models/{m}/normal"][()],
                                       b[f"softness/models/{m}/normal"][()], rtol=1e-10, atol=1e-12)
        for m in ("svc", "ridge", "linear_svr"):
            np.testing.assert_allclose(a[f"softness/predictions/{m}"][()],
                                       b[f"softness/predictions/{m}"][()], rtol=1e-9, atol=1e-9)
        for m in ("svc", "svc_S", "ridge", "mlp"):
            assert np.array_equal(a[f"barriers/{m}/n"][()], b[f"barriers/{m}/n"][()]), m
            assert np.array_equal(a[f"barriers/{m}/k"][()], b[f"barriers/{m}/k"][()]), m
            np.testing.assert_allclose(a[f"barriers/{m}/delta_e"][()],
                                       b[f"barriers/{m}/delta_e"][()], rtol=1e-9)
        assert b["provenance"].attrs["ranks"] == comm.size


@pytest.mark.parametrize("change, key", [
    (("p_l: 0.05", "p_l: -1"), "softness.indicator.p_l"),
    (("models: [svc, ridge, linear_svr, mlp]", "models: [svc, lasso]"), "softness.models[1]"),
    (("models: [svc, ridge, linear_svr, mlp]", "models: [ridge]"), "softness.models"),
    (("r_max: 2.0, count: 9", "r_max: 3.0, count: 9"), "softness.features.radial[0]"),
    (("duration: 30,", "duration: 30.5,"), "softness.trajectory.duration"),
    (("by: 7", "by: 9"), "softness.p_r.by"),
    (("replicas_per_task: 2", "replicas_per_task: 3"), "softness.p_r.replicas_per_task"),
    (("snapshots: 2}}\n    - {{temperature: 1.0", "snapshots: 0}}\n    - {{temperature: 1.0"),
     "softness.state_points[0].snapshots"),
])
def test_sweep_config_errors_name_the_key(change, key):
    from glasshpc import config
    text = SWEEP_YAML.replace(*change)
    assert text != SWEEP_YAML
    with pytest.raises(config.ConfigError) as err:
        config.parse(text.format(output="x.h5"))
    assert err.value.key == key
