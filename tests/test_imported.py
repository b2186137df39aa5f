"""Published-data import (glasshpc.io.imported): GlassBench .npz and Bapst et al. pickles written by the tests,
read back exactly, checked against the config, and run through dynamics → descriptors → fits (1 and 2 ranks)."""
import json
import os
import pickle

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc import config
from glasshpc.io.imported import import_snapshots, imported_files, read_bapst, read_glassbench
from glasshpc.parallel import Context
from glasshpc.run import execute, main, tau_alpha_text, tau_alpha_value

N, RHO, S, R = 400, 1.2, 5, 4
L = (N / RHO) ** (1 / 3)
TIMES = [0.5, 2.0, 8.0]


def _config(seed):
    """Disordered configuration (no pair closer than 0.8) and a planted structure–mobility link: the
    replica displacement scale grows with the number of neighbours beyond 1.25 missing within 1.5."""
    rng = np.random.default_rng(seed)
    g = np.arange(8) * (L / 8)  # 400 of the 512 sites of a cubic grid (spacing 0.87), jittered by ≤ 0.03
    sites = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
    pos = (sites[rng.permutation(512)[:N]] + rng.uniform(-0.03, 0.03, size=(N, 3))) % L
    types = np.zeros(N, np.int64)
    types[rng.permutation(N)[:N // 5]] = 1
    d = pos[None] - pos[:, None]
    d -= L * np.rint(d / L)
    r = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
    crowd = ((r > 0) & (r < 1.5)).sum(1)
    scale = 0.05 + 0.3 * np.exp(-(crowd - crowd.mean()) / crowd.std())
    return pos, types, scale, rng


def write_glassbench(folder, first_type=1):
    out = []
    for s in range(S):
        pos, types, scale, rng = _config(100 + s)
        disp = rng.normal(size=(R + 1, N, 3)) * scale[None, :, None]
        np.savez(os.path.join(folder, f"ka_{s:03d}.npz"), types=types + first_type, initial_positions=pos,
                 positions=pos[None] + disp)
        out.append((pos, types, disp))
    return out


def write_bapst(folder):
    out = []
    for s in range(S):
        pos, types, scale, rng = _config(200 + s)
        start = pos + L * rng.integers(-2, 3, size=pos.shape)   # absolute (unwrapped) coordinates
        disp = rng.normal(size=(R, len(TIMES), N, 3)) * scale[None, None, :, None] * np.sqrt(TIMES)[None, :, None,
                                                                                                    None]
        time = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
        d = {"positions": start, "types": types, "box": np.full(3, L), "time": time,
             "time_indices": np.array([1, 3, 5]), "is_values": np.array([0.9, 0.7, 0.5]),
             "trajectory_start_velocities": rng.normal(size=(len(TIMES), R, N, 3)),
             "trajectory_target_positions": [[start + disp[r, k] for r in range(R)] for k in range(len(TIMES))],
             "metadata": {"temperature": 0.8, "fluid": "Kob-Andersen"}}
        with open(os.path.join(folder, f"system_{s:03d}.pickle"), "wb") as fh:
            pickle.dump(d, fh, protocol=3)
        out.append((pos, types, disp))
    return out


YAML = """
output: {output}
seed: 3
model: {{name: kob_andersen, n_particles: {n}, density: 1.2, temperature: 0.8}}
snapshots: {{count: {s}}}
iso: {{replicas: {r}, times: {times}}}
dynamics: {{q: 7.2}}
imported: {{format: {fmt}, files: '{pattern}', first_type: {first}}}
descriptors:
  radial: [{{r_min: 0.8, r_max: 2.2, count: 8, delta: 0.12}}]
  angular: [{{r_min: 1.0, r_max: 2.0, count: 3, delta: 0.12}}]
  l: [2, 4, 6]
  generations: 1
  r_generation: 1.5
fits: {{cv_folds: 3, test_fraction: 0.25, feature_sets: {{g1: {{generations: 1}}}}}}
"""


def _yaml(tmp, fmt, output="out.h5", n=N, s=S, r=R, times=None, first=None):
    pattern = os.path.join(tmp, "ka_*.npz" if fmt == "glassbench" else "system_*.pickle")
    times = times if times is not None else ([2.0] if fmt == "glassbench" else TIMES)
    first = first if first is not None else (1 if fmt == "glassbench" else 0)
    return YAML.format(output=os.path.join(tmp, output), n=n, s=s, r=r, times=times, fmt=fmt, pattern=pattern,
                       first=first)


def test_glassbench_roundtrip(tmp_path):
    truth = write_glassbench(str(tmp_path))
    snap = read_glassbench(str(tmp_path / "ka_002.npz"), L)
    np.testing.assert_allclose(snap.displacements[:, 0], truth[2][2], rtol=0, atol=1e-12)
    cfg = config.parse(_yaml(str(tmp_path), "glassbench"))
    data = import_snapshots(cfg)
    assert data["displacements"].shape == (S, R, 1, N, 3) and data["displacements"].dtype == np.float32
    for s, (pos, types, disp) in enumerate(truth):
        np.testing.assert_allclose(data["positions"][s], pos, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(data["types"][s], types)           # first_type = 1 removed
        np.testing.assert_allclose(data["displacements"][s, :, 0], disp[:R], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(data["box"], L)


def test_bapst_roundtrip(tmp_path):
    truth = write_bapst(str(tmp_path))
    snap = read_bapst(str(tmp_path / "system_001.pickle"))
    np.testing.assert_allclose(snap.times, TIMES)
    assert np.all((snap.positions >= 0) & (snap.positions < L))      # wrapped back into the box
    np.testing.assert_allclose(snap.positions, truth[1][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(snap.displacements, truth[1][2], rtol=0, atol=1e-9)
    # the targets' propensity of Bapst et al.'s get_targets equals ours
    with open(tmp_path / "system_001.pickle", "rb") as fh:
        d = pickle.load(fh)
    ref = np.mean([np.linalg.norm(t - d["positions"], axis=-1) for t in d["trajectory_target_positions"][2]], 0)
    np.testing.assert_allclose(np.linalg.norm(snap.displacements[:, 2], axis=-1).mean(0), ref, rtol=1e-12)


@pytest.fixture(scope="module")
def bapst_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bapst"))
    write_bapst(folder)
    return folder


@pytest.mark.parametrize("change, key", [
    (dict(n=401), "model.n_particles"),
    (dict(s=9), "imported.files"),
    (dict(r=7), "iso.replicas"),
    (dict(times=[0.5, 2.0, 9.0]), "iso.times"),
    (dict(first=1), "imported.first_type"),
])
def test_config_mismatch_names_the_key(bapst_folder, change, key):
    cfg = config.parse(_yaml(bapst_folder, "bapst", **change))
    with pytest.raises(config.ConfigError) as err:
        import_snapshots(cfg)
    assert err.value.key == key


def test_pipeline_on_imported_bapst(tmp_path):
    truth = write_bapst(str(tmp_path))
    text = _yaml(str(tmp_path), "bapst")
    summary = execute(config.parse(text), text, Context(MPI.COMM_SELF))
    with h5py.File(tmp_path / "out.h5", "r") as f:
        d = f["iso/displacements"][()]
        assert d.shape == (S, R, 3, N, 3)
        for s in range(S):
            np.testing.assert_allclose(d[s], truth[s][2], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(f["snapshots/positions"][s], truth[s][0], atol=1e-9)
        np.testing.assert_allclose(f["propensity"][()], np.linalg.norm(d.astype(float), axis=-1).mean(1),
                                   rtol=1e-6)
        np.testing.assert_allclose(f["iso/times"][()], TIMES)
        rho = f["fits/g1/pearson"][()]
        # no MD on imported data: LAMMPS only evaluates energies and forces at t = 0 (`run 0`)
        runs = [c for c in f["provenance"].attrs["lammps_commands"].splitlines()
                if c.startswith("run")]
        assert runs and all(c.startswith("run 0 ") for c in runs)
    # the planted crowding → mobility link is learnt from the radial descriptors (held-out snapshots)
    assert rho.shape == (2, 3) and np.all(rho[0] > 0.3), rho
    assert "import" in summary["wall"]


@pytest.mark.mpi(min_size=2)
def test_imported_one_and_two_ranks_identical(tmp_path):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    if comm.rank == 0:
        write_glassbench(folder)
    comm.Barrier()
    two = _yaml(folder, "glassbench", output="two.h5")
    execute(config.parse(two), two, Context(comm))
    if comm.rank == 0:
        one = _yaml(folder, "glassbench", output="one.h5")
        execute(config.parse(one), one, Context(MPI.COMM_SELF))
    comm.Barrier()
    with h5py.File(os.path.join(folder, "one.h5"), "r") as a, h5py.File(os.path.join(folder, "two.h5"), "r") as b:
        for name in ("snapshots/positions", "iso/displacements", "propensity", "descriptors/init"):
            assert np.array_equal(a[name][()], b[name][()]), name
        np.testing.assert_allclose(a["fits/g1/pearson"][()], b["fits/g1/pearson"][()], rtol=1e-8, atol=1e-10)


def test_pipeline_with_descriptor_preset(tmp_path, capsys):
    """descriptors: {preset: softness_135} from YAML through the pipeline: 135 named features ([SOFT]) on a box
    smaller than the preset's reach (sums over periodic images). The GlassBench files carry no time:
    iso.times: unknown stores NaN times and no τ_α value, and prints none."""
    write_glassbench(str(tmp_path))
    text = _yaml(str(tmp_path), "glassbench", times="unknown")
    head, tail = text.split("descriptors:\n")
    text = head + "descriptors: {preset: softness_135, generations: 0, r_generation: 1.5}\n" + \
        tail[tail.index("fits:"):].replace("g1: {generations: 1}", "g0: {generations: 0}")
    cfg = config.parse(text)
    execute(cfg, text, Context(MPI.COMM_SELF))
    with h5py.File(tmp_path / "out.h5", "r") as f:
        names = f["descriptors/feature_names"].asstr()[()]
        X = f["descriptors/init"][()]
        rho = f["fits/g0/pearson"][()]
        assert np.isnan(f["iso/times"][()]).all() and f["iso/times"].shape == (1,)
        assert not f["iso"].attrs["times_known"]
        assert np.isnan(f["dynamics"].attrs["tau_alpha"]).all()
        assert all(t.startswith("unknown") for t in json.loads(f["dynamics"].attrs["tau_alpha_text"]))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "τ_α" in x)
    assert "unknown" in line and "τ (A)" not in line, line
    assert X.shape == (S, N, 135) and len(names) == 135
    assert names[0] == "G_A(r=0.00,δ=0.20)" and names[100] == "Q_2(1.00<r<1.50)"
    assert np.isfinite(X).all() and np.all(X[..., 100:] <= 1.0 + 1e-12) and np.isfinite(rho).all()


def test_natural_file_order(tmp_path):
    """imported.files lists …_2_ before …_10_ (as snapshots.path), not lexicographically."""
    for i in (10, 2, 1, 11, 3):
        (tmp_path / f"ka_{i}_.npz").write_bytes(b"")
    cfg = config.parse(_yaml(str(tmp_path), "glassbench").replace("ka_*.npz", "ka_*_.npz"))
    assert [os.path.basename(f) for f in imported_files(cfg)] == ["ka_1_.npz", "ka_2_.npz", "ka_3_.npz",
                                                                  "ka_10_.npz", "ka_11_.npz"]


def test_unknown_times_keys(tmp_path):
    """iso.times: unknown / {unknown: T}: T read-outs, NaN times; refused without imported:, with the dw block,
    with files that carry times, and with a read-out count other than the files'."""
    gb = config.parse(_yaml(str(tmp_path), "glassbench", times="unknown"))
    assert not gb.times_known and np.isnan(gb.replica_times()).all() and gb.replica_steps().tolist() == [1]
    three = config.parse(_yaml(str(tmp_path), "bapst", times="{unknown: 3}"))
    assert three.replica_times().shape == (3,) and not three.times_known
    for bad, key in (("{unknown: 0}", "iso.times.unknown"), ("{unknown: 2, count: 3}", "iso.times.count"),
                     ("unknwn", "iso.times")):
        with pytest.raises(config.ConfigError) as err:
            config.parse(_yaml(str(tmp_path), "glassbench", times=bad))
        assert err.value.key == key
    sim = _yaml(str(tmp_path), "glassbench", times="unknown").replace("imported:", "unused:")
    sim = "\n".join(x for x in sim.splitlines() if not x.startswith("unused:"))
    with pytest.raises(config.ConfigError, match="only with imported") as err:
        config.parse(sim)
    assert err.value.key == "iso.times"
    dw = _yaml(str(tmp_path), "glassbench", times="unknown").replace("g1: {generations: 1}",
                                                                       "g1: {features: init+dw}")
    with pytest.raises(config.ConfigError, match="undefined with iso.times: unknown") as err:
        config.parse(dw)
    assert err.value.key == "fits.feature_sets.g1.features"
    write_bapst(str(tmp_path))             # carries times: 'unknown' is refused, naming them
    with pytest.raises(config.ConfigError, match="carries the times") as err:
        import_snapshots(config.parse(_yaml(str(tmp_path), "bapst", times="{unknown: 3}")))
    assert err.value.key == "iso.times"
    write_glassbench(str(tmp_path))        # one read-out per file, no times
    with pytest.raises(config.ConfigError, match="holds 1 read-out") as err:
        import_snapshots(config.parse(_yaml(str(tmp_path), "glassbench", times="{unknown: 2}")))
    assert err.value.key == "iso.times"
    data = import_snapshots(config.parse(_yaml(str(tmp_path), "glassbench", times="unknown")))
    assert data["displacements"].shape == (S, R, 1, N, 3)


def test_tau_alpha_words():
    """τ_α is a number only when F_s crosses 1/e between read-outs; a bound or an unknown time is said so."""
    t = np.array([1.0, 10.0, 100.0])
    cases = [(np.array([0.9, 0.5, 0.1]), "τ", True), (np.array([0.2, 0.1, 0.05]), "< 1 τ", False),
             (np.array([0.9, 0.8, 0.7]), "> 100 τ", False)]
    from glasshpc.dynamics import tau_alpha
    for fs, start, finite in cases:
        tau = tau_alpha(t, fs)
        text = tau_alpha_text(t, fs, tau)
        assert text.startswith(start) if start != "τ" else text == f"{tau:.4g} τ", text
        assert np.isfinite(tau_alpha_value(t, fs, tau)) == finite
    assert tau_alpha_text(np.full(1, np.nan), np.array([0.2]), np.nan).startswith("unknown")
    assert "3000" not in tau_alpha_text(np.array([3000.0]), np.array([0.2]), 3000.0).split("<")[0]


def test_dry_run_checks_files_and_plans_only_what_runs(tmp_path, capsys):
    """--dry-run of an imported config: a damaged file is refused naming it; with good files the plan has the
    import stage and no MD stage, MD line or core-hour estimate, and the schedule prices the import."""
    write_glassbench(str(tmp_path))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(_yaml(str(tmp_path), "glassbench", times="unknown"))
    good = (tmp_path / "ka_003.npz").read_bytes()
    (tmp_path / "ka_003.npz").write_bytes(good[:len(good) // 2])
    assert main([str(cfg), "--dry-run"]) == 2
    assert "ka_003.npz" in capsys.readouterr().err
    (tmp_path / "ka_003.npz").write_bytes(good)
    assert main([str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage import" in out and "all 5 glassbench files read and checked" in out
    for phantom in ("stage snapshots", "stage replicas", "core-hours", "atom-steps", "    snapshots ",
                    "    replicas "):
        assert phantom not in out, (phantom, out)
    assert "    import " in out and "times unknown" in out
    assert not os.path.exists(tmp_path / "out.h5") and not os.path.exists(tmp_path / "out.h5.partial")
