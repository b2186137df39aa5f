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


# -- the softness stages end to end (real LAMMPS, real MPI, real HDF5) --------------------------

SWEEP_YAML = """
output: {output}
seed: 3
model: {{name: kob_andersen, n_particles: 300, density: 1.2, temperature: 0.7}}
snapshots: {{count: 2}}
md: {{melt_time: 2, nvt_time: 5, nve_time: 5}}
descriptors:
  radial: [{{r_min: 0.0, r_max: 2.0, count: 9, delta: 0.2}}]
  angular: [{{r_min: 1.25, r_max: 1.75, count: 2, delta: 0.15}}]
  l: [2, 4, 6]
  generations: 0
  truncation: 4
state_points:
  - {{model: {{temperature: 0.7}}}}
  - {{model: {{temperature: 1.0}}}}
softness:
  trajectory: {{duration: 30, measure_frames: 4}}
  rearrangement: {{p_l: 0.05, quiet_time: 12}}
  training: {{rearranging: 100, fluidity_min_temperature: 1.0, fluidity_fraction: 0.01,
             fluidity_examples: 60}}
  p_r: {{replicas: 4, replicas_per_task: 2, duration: 12, by: 7}}
  models: [svc, ridge, linear_svr, mlp]
  barriers: {{max_temperature: 1.1, bins: {{min: -20, max: 20, count: 8}}, min_count: 1}}
"""


def _sweep(path, comm, text=SWEEP_YAML):
    from glasshpc import config
    from glasshpc.parallel import Context
    from glasshpc.run import execute
    text = text.format(output=path)
    return execute(config.parse(text), text, Context(comm))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """(path, summary) of the sweep run once on one rank in this process."""
    out = str(tmp_path_factory.mktemp("softness") / "sweep.h5")
    return out, _sweep(out, MPI.COMM_SELF)


def _plan(path):
    from glasshpc import config, softness_parts, stages
    cfg = config.parse(SWEEP_YAML.format(output=path))
    return softness_parts.Plan(cfg, stages.state_points(cfg))


def test_sweep_writes_softness_and_barriers(sweep_run):
    import h5py
    from glasshpc.structure.descriptors import compute_descriptors
    out, summary = sweep_run
    pl = _plan(out)
    assert pl.M == 2 * 9 + 2 * 3      # the descriptors: blocks of the config
    with h5py.File(out, "r") as f:
        state = f["softness/snapshot_state"][()]
        index = f["softness/snapshot_index"][()]
        assert state.tolist() == [0, 0, 1, 1] and index.tolist() == [0, 1, 0, 1]
        sp = [f[f"state_points/{k}"] for k in range(2)]
        d = [g["softness/data"] for g in sp]
        types = np.stack([g["snapshots/types"][s] for k, s in zip(state, index) for g in [sp[k]]])
        # stored snapshot features are the descriptors of the stored snapshot
        x0 = compute_descriptors(sp[0]["snapshots/positions"][1], types[1],
                                 sp[0]["snapshots/box"][1], pl.spec)
        np.testing.assert_allclose(d[0]["snapshot_features"][1], x0.astype(np.float32))
        normal = f["softness/models/svc/normal"][()]
        assert normal.shape == (pl.M,) and np.linalg.norm(normal) == pytest.approx(1.0)
        # the SVC refitted on the stored training set gives the stored hyperplane
        lab = d[0]["train_label"][()]
        sel = lab >= 0
        X = d[0]["train_X"][()][sel]
        refit = sm.SoftnessSVC(1e-2).fit(X, lab[sel] == 1)
        np.testing.assert_allclose(refit.coef_, normal, atol=1e-10)
        assert (lab[sel] == 1).sum() == (lab[sel] == 0).sum() > 10       # balanced
        # stored per-particle softness of every snapshot = the stored hyperplane applied to the
        # stored snapshot features (species A only); the ridge output lies along its own normal
        F0 = np.stack([sp[k]["softness/data/snapshot_features"][s]
                       for k, s in zip(state, index)]).astype(np.float64)
        svc = f["softness/models/svc"]
        S = f["softness/predictions/svc"][()]
        assert S.shape == types.shape and np.array_equal(np.isnan(S), types != 0)
        z = (F0[types == 0] - svc["mean"][()]) / svc["scale"][()]
        np.testing.assert_allclose(S[types == 0], z @ normal - svc.attrs["intercept"], atol=1e-9)
        rg = f["softness/models/ridge"]
        o = f["softness/predictions/ridge"][()][types == 0] - rg.attrs["intercept"]
        along = ((F0[types == 0] - rg["mean"][()]) / rg["scale"][()]) @ rg["normal"][()]
        assert abs(np.corrcoef(o, along)[0, 1]) > 1 - 1e-9
        for m in ("linear_svr", "mlp"):
            assert np.all(np.isfinite(f[f"softness/predictions/{m}"][()][types == 0]))
        # every A particle of every measured frame lands in a bin (edges ±20), and the
        # rearranging counts are those of the stored indicator
        A = types == 0
        re = [d[k]["rearranged"][()].astype(bool) for k in range(2)]
        for m in ("svc", "ridge", "linear_svr", "mlp", "svc_S"):
            n, k = f[f"barriers/{m}/n"][()], f[f"barriers/{m}/k"][()]
            for p in range(2):
                js = np.flatnonzero(state == p)
                assert n[p].sum() == A[js].sum() * pl.K
                assert k[p].sum() == sum(re[p][index[j]][:, A[j]].sum() for j in js)
            ev = f[f"barriers/{m}/explained_variance"][()]
            assert np.all((ev >= 0) & (ev <= 1))
        assert k[0].sum() < k[1].sum()           # hotter → more rearrangements in 2 τ
        D = f["softness/dot_products"][()]
        np.testing.assert_allclose(np.diag(D), 1.0)
        assert f["barriers/svc"].attrs["sigma_tr"] > 0
        assert f["softness"].attrs["indicator"] == "phop"
        assert "fix traj all nvt" in f["provenance"].attrs["lammps_commands"]
        assert f["provenance"].attrs["md_suffix"] in ("none", "opt", "omp", "intel")  # auto resolved
    assert set(summary["barriers"]) >= {"svc", "svc_S", "ridge"}


def _softness_datasets(path):
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith("state_points/"):
                out[name] = obj[()]
        f.visititems(visit)
    return out


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
    a_data, b_data = _softness_datasets(one), _softness_datasets(two)
    assert set(a_data) == set(b_data) and any("softness/data/pr_counts" in n for n in a_data)
    for name in a_data:      # snapshots and every task slot, bitwise (NaN in both where unused)
        np.testing.assert_array_equal(a_data[name], b_data[name], err_msg=name)
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
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


def test_sweep_resumes_after_a_kill(sweep_run, tmp_path):
    """SIGKILL after the first committed trajectory task (fault hook), then --resume: the same
    numbers as the uninterrupted run."""
    import os
    import subprocess
    import sys
    ref, _ = sweep_run
    out = str(tmp_path / "killed.h5")
    path = tmp_path / "killed.yaml"
    path.write_text(SWEEP_YAML.format(output=out))
    env = dict(os.environ, GLASSHPC_KILL_AFTER="softness trajectories:1")
    cmd = [sys.executable, "-m", "glasshpc.run", str(path)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert p.returncode != 0 and not os.path.exists(out)
    env.pop("GLASSHPC_KILL_AFTER")
    p = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr
    assert "[softness trajectories] resuming: 1 of 4 tasks already done" in p.stdout
    a, b = _softness_datasets(ref), _softness_datasets(out)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# a second model, the CSD indicator and the default features (descriptors preset softness_135)
HARMONIC_YAML = """
output: {output}
seed: 11
model: {{name: harmonic_spheres, n_particles: 200, density: 0.82, temperature: 0.01}}
snapshots: {{count: 1}}
md: {{timestep: 0.02, melt_temperature: 0.02, melt_time: 4, nvt_time: 10, nve_time: 10}}
state_points:
  - {{model: {{temperature: 0.01}}, snapshots: {{count: 2}}}}
  - {{model: {{temperature: 0.02}}}}
softness:
  indicator: csd
  trajectory: {{duration: 24, measure_frames: 3}}
  rearrangement: {{csd_threshold: 0.04, csd_quiet: 0.016, quiet_time: 4, csd_steps: 4}}
  training: {{rearranging: 16, fluidity_min_temperature: 0.02, fluidity_fraction: 0.05,
             fluidity_examples: 8}}
  models: [svc]
  barriers: {{max_temperature: 0.05, bins: {{min: -20, max: 20, count: 4}}, min_count: 1}}
"""


def test_second_model_csd_and_default_features(tmp_path):
    import h5py
    from glasshpc import rearrangements as rr
    out = str(tmp_path / "harmonic.h5")
    text = HARMONIC_YAML
    _sweep(out, MPI.COMM_SELF, text)
    with h5py.File(out, "r") as f:
        assert f["softness"].attrs["indicator"] == "csd"
        names = [n.decode() for n in f["softness/feature_names"][()]]
        assert len(names) == 135 and any(n.startswith("Q_") for n in names)   # sharp shells
        assert f["state_points/0/snapshots/positions"].shape == (2, 200, 3)
        assert f["state_points/1/snapshots/positions"].shape == (1, 200, 3)
        assert "harmonic" in f["provenance"].attrs["lammps_commands"]
        lab = f["state_points/0/softness/data/train_label"][()]
        assert (lab == 1).sum() == (lab == 0).sum() > 0
        assert np.all(np.isfinite(f["softness/predictions/svc"][()][
            np.stack([f[f"state_points/{k}/snapshots/types"][s] for k, s in
                      zip(f["softness/snapshot_state"][()], f["softness/snapshot_index"][()])])
            == 0]))
        rearranged = f["state_points/1/softness/data/rearranged"][0].astype(bool)
        t0 = f["softness/measure_frames"][()]
        pos = f["state_points/1/snapshots/positions"][0]
        types = f["state_points/1/snapshots/types"][0]
        box = f["state_points/1/snapshots/box"][0]
    # the stored flags are "CSD > csd_threshold in (t0, t0 + 2]" of the task's trajectory, with
    # the CSD computed here independently (numpy) from the same trajectory rerun
    from glasshpc import config, softness_parts
    from glasshpc.md import make_engine
    from glasshpc.md.accel import resolve_suffix
    from glasshpc.parallel import Context, task_rng
    cfg, _ = resolve_suffix(config.parse(text.format(output=out)), Context(MPI.COMM_SELF))
    eng = make_engine(cfg)
    try:
        frames = softness_parts.trajectory(eng, pos, types, box, 0.02,
                                           task_rng(11, "soft-trajectory", 1, 0), 24.0, 1.0, "nvt")
    finally:
        eng.close()
    step2 = np.sum(np.diff(frames, axis=0) ** 2, axis=2)            # (F − 1, N)
    csd = np.full(frames.shape[:2], np.nan)
    for t in range(4, frames.shape[0]):
        csd[t] = step2[t - 4:t].mean(axis=0)
    for m, t in enumerate(t0):
        np.testing.assert_array_equal(rearranged[m], np.any(csd[t + 1:t + 3] > 0.04, axis=0))
    assert 0 < rearranged.sum() < rearranged.size


@pytest.mark.parametrize("change, key", [
    (("p_l: 0.05", "p_l: -1"), "softness.rearrangement.p_l"),
    (("models: [svc, ridge, linear_svr, mlp]", "models: [svc, lasso]"), "softness.models[1]"),
    (("models: [svc, ridge, linear_svr, mlp]", "models: [ridge]"), "softness.models"),
    (("r_max: 2.0, count: 9", "r_max: -1.0, count: 9"), "descriptors.radial[0].r_max"),
    (("duration: 30,", "duration: 30.5,"), "softness.trajectory.duration"),
    (("by: 7", "by: 9"), "softness.p_r.by"),
    (("replicas_per_task: 2", "replicas_per_task: 3"), "softness.p_r.replicas_per_task"),
    (("{{model: {{temperature: 0.7}}}}", "{{model: {{temperature: 0.7}}, snapshots: {{count: 0}}}}"),
     "state_points[0].snapshots.count"),
    (("{{model: {{temperature: 1.0}}}}", "{{model: {{temperature: 0.7}}}}"), "state_points"),
    (("trajectory:", "indicator: hop\n  trajectory:"), "softness.indicator"),
    (("  training: {{rearranging: 100,", "  training: {{state_point: 2, rearranging: 100,"),
     "softness.training.state_point"),
    (("models: [svc,", "species: C\n  models: [svc,"), "softness.species"),
    # the former schema's keys, refused naming what replaces them
    (("rearrangement: {{p_l", "indicator: {{p_l"), "softness.indicator"),
    (("softness:\n", "softness:\n  state_points: []\n"), "softness.state_points"),
    (("softness:\n", "softness:\n  features: {{}}\n"), "softness.features"),
    (("softness:\n", "iso: {{replicas: 2, times: [1.0]}}\nsoftness:\n"), "iso"),
])
def test_sweep_config_errors_name_the_key(change, key):
    from glasshpc import config
    text = SWEEP_YAML.replace(*change)
    assert text != SWEEP_YAML
    with pytest.raises(config.ConfigError) as err:
        config.parse(text.format(output="x.h5"))
    assert err.value.key == key


def test_snapshots_override_only_in_a_softness_run():
    from glasshpc import config
    text = SWEEP_YAML.format(output="x.h5").replace("snapshots: {count: 2}", "snapshots: {count: 3}")
    text = text[:text.index("softness:")] + ("iso: {replicas: 2, times: [1.0]}\n"
                                             "fits: {feature_sets: {g0: {generations: 0}}, cv_folds: 2, "
                                             "test_snapshots: [1]}\n")
    config.parse(text)        # a valid propensity sweep without the override
    text = text.replace("{model: {temperature: 0.7}}", "{model: {temperature: 0.7}, snapshots: "
                                                       "{count: 3}}")
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert err.value.key == "state_points[0].snapshots"


def test_dry_run_of_the_softness_inputs(capsys):
    import glob
    import os
    from glasshpc.run import main
    inputs = os.path.join(os.path.dirname(__file__), "..", "inputs")
    for path in sorted(glob.glob(os.path.join(inputs, "ka_softness*.yaml"))):
        assert main(["--dry-run", "--no-calibration", path]) == 0
        out = capsys.readouterr().out
        assert "softness sweep" in out and "135 features (softness_135)" in out


HS_YAML = """
output: {output}
seed: 5
model: {{name: hard_spheres, n_particles: 200, packing_fraction: 0.50, temperature: 1.0}}
snapshots: {{count: 1}}
md: {{nve_time: 5}}
descriptors:
  radial: [{{r_min: 0.5, r_max: 2.0, count: 6, delta: 0.2}}]
  angular: [{{r_min: 1.0, r_max: 1.5, count: 2, delta: 0.15}}]
  l: [4, 6]
  generations: 0
  truncation: 4
state_points:
  - {{model: {{packing_fraction: 0.52}}}}
  - {{model: {{packing_fraction: 0.48}}}}
softness:
  trajectory: {{duration: 20, measure_frames: 2, ensemble: nve}}
  rearrangement: {{p_c: 0.3, p_l: 0.04, quiet_time: 3, half_window: 2}}
  training: {{rearranging: 10, fluidity_min_temperature: 2.0}}
  models: [svc]
  barriers: {{max_temperature: 2.0, bins: {{min: -20, max: 20, count: 4}}, min_count: 1}}
"""


def test_hard_spheres_edmd_end_to_end(tmp_path):
    """An η sweep of hard spheres (event-driven MD trajectories): training at the densest state
    point (every T is 1), counts per bin that add up, no barrier fit (one temperature), and more
    rearrangements in the less dense liquid."""
    import h5py
    out = str(tmp_path / "hs.h5")
    _sweep(out, MPI.COMM_SELF, HS_YAML)
    with h5py.File(out, "r") as f:
        assert f["softness"].attrs["training_state_point"] == 0          # η = 0.52
        lab = f["state_points/0/softness/data/train_label"][()]
        assert (lab == 1).sum() == (lab == 0).sum() == 10
        n, k = f["barriers/svc/n"][()], f["barriers/svc/k"][()]
        for p in range(2):
            types = f[f"state_points/{p}/snapshots/types"][0]
            re = f[f"state_points/{p}/softness/data/rearranged"][0].astype(bool)
            assert n[p].sum() == (types == 0).sum() * re.shape[0]
            assert k[p].sum() == re[:, types == 0].sum()
        assert k[1].sum() > k[0].sum()
        assert np.all(np.isnan(f["barriers/svc/delta_e"][()])) and "landscape" not in f["barriers/svc"]
    from glasshpc import config
    with pytest.raises(config.ConfigError) as err:      # event-driven MD has no thermostat
        config.parse(HS_YAML.replace("ensemble: nve", "ensemble: nvt").format(output="x.h5"))
    assert err.value.key == "softness.trajectory.ensemble"
