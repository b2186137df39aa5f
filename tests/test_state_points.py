"""State-point sweeps (``state_points:``): one pipeline over (state point, snapshot[, replica |
chain]) tasks. The key fact: state point k of a sweep is bitwise the single-state run of its
overrides (config.state_point_yaml: the overrides applied, seed = state_point_seed(seed, k)).
Real LAMMPS, real MPI, real HDF5 on a tiny 2-state-point Kob–Andersen sweep."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from mpi4py import MPI

from conftest import TINY_YAML, h5_datasets
from glasshpc import cluster, config, resources, schedule, stages
from glasshpc.parallel import Context
from glasshpc.run import execute, plan_text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")

# state point 1 overrides T, ρ, the NVE time and the read-outs (as many: the models trained at
# state point 0 apply read-out by read-out, fits.train_state_point)
SWEEP = {"state_points": [
    {"model": {"temperature": 0.8}},
    {"model": {"temperature": 1.1, "density": 1.15}, "md": {"nve_time": 3.0},
     "iso": {"times": {"start": 0.01, "stop": 1.0, "count": 8}}}]}


def sweep_yaml(output):
    """The tiny config made smaller (4 snapshots, 2 replicas, no inherent states, 2 feature sets)
    with two state points."""
    data = yaml.safe_load(TINY_YAML.format(output=output))
    data["snapshots"]["count"] = 4
    data["iso"]["replicas"] = 2
    data["inherent"] = {"enabled": False}
    data["fits"]["cv_folds"] = 2
    data["fits"]["feature_sets"] = {"g0": {"generations": 0},
                                    "cs": {"features": "init+cs+drcs", "generations": 1}}
    data["fits"]["train_state_point"] = 0
    data.update(SWEEP)
    return yaml.safe_dump(data, sort_keys=False)


def _execute(text, comm):
    return execute(config.parse(text), text, Context(comm))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """(path, yaml text) of the finished tiny sweep, one rank, in this process."""
    out = str(tmp_path_factory.mktemp("sweep") / "sweep.h5")
    text = sweep_yaml(out)
    _execute(text, MPI.COMM_SELF)
    return out, text


def _same(a, b, name):
    if a.dtype.kind in "OSU":
        assert list(a) == list(b), name
    else:
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_state_point_is_the_single_state_run(sweep_run, tmp_path):
    path, text = sweep_run
    single_text = config.state_point_yaml(text, 1)
    single_text = single_text.replace(path, str(tmp_path / "single.h5"))
    assert "state_points" not in yaml.safe_load(single_text)
    _execute(single_text, MPI.COMM_SELF)
    one = h5_datasets(tmp_path / "single.h5")
    allsets = h5_datasets(path)
    sp1 = {n[len("state_points/1/"):]: v for n, v in allsets.items()
           if n.startswith("state_points/1/")}
    assert sp1.keys() == one.keys()          # the single-state layout inside /state_points/1
    for name in one:
        _same(sp1[name], one[name], name)    # bitwise: the same streams, the same numbers
    with h5py.File(path, "r") as f, h5py.File(tmp_path / "single.h5", "r") as g:
        for attr in ("tau_alpha", "q", "ballistic_end", "chi4_threshold"):
            _same(f["state_points/1/dynamics"].attrs[attr], g["dynamics"].attrs[attr], attr)
        assert f["state_points/1"].attrs["seed"] == config.state_point_seed(7, 1)
        assert f["state_points/1"].attrs["config_yaml"] == config.state_point_yaml(text, 1)
        # the cross-state summaries are the state points' own numbers
        sw = f["sweep"]
        np.testing.assert_array_equal(sw["temperature"][()], [0.8, 1.1])
        np.testing.assert_array_equal(sw["density"][()], [1.2, 1.15])
        _same(sw["tau_alpha"][1], g["dynamics"].attrs["tau_alpha"], "tau_alpha")
        assert sw["times"].shape == (2, 8)
        _same(sw["times"][1], g["iso/times"][()], "times")
        assert sw["times"][1, -1] == 1.0 and sw["times"][0, -1] == 2.0
        for name in ("g0", "cs"):
            _same(sw[f"pearson/{name}"][1], g[f"fits/{name}/pearson"][()], name)
            _same(sw[f"pearson/{name}"][0], f[f"state_points/0/fits/{name}/pearson"][()], name)
        types = g["snapshots/types"][()]
        d = g["states/cage/displacement"][()]
        np.testing.assert_allclose(sw["drcs_mean"][1], [d[types == k].mean() for k in (0, 1)],
                                   rtol=1e-12)
        # independent streams: state point 0 (same T, ρ as the base) is not state point 1, and
        # not the run without state_points (its seed is state_point_seed(7, 0), not 7)
        assert not np.array_equal(f["state_points/0/iso/displacements"][0, 0, 0],
                                  f["state_points/1/iso/displacements"][0, 0, 0])
        assert f["state_points/0"].attrs["seed"] != 7


def test_transferability(sweep_run):
    """fits.train_state_point: 0 — state point 0's models at state point 0 give its own held-out ρ
    (bitwise), at state point 1 the ρ of X·coef + intercept over all of its snapshots."""
    from glasshpc.learn.fits import prediction_inputs
    path, _ = sweep_run
    with h5py.File(path, "r") as f:
        sw = f["sweep"]
        assert sw.attrs["train_state_point"] == 0
        g0, g1 = f["state_points/0"], f["state_points/1"]
        for name in ("g0", "cs"):
            rho = sw[f"transfer_pearson/{name}"][()]
            assert rho.shape == (2, 2, 8)
            _same(rho[0], g0[f"fits/{name}/pearson"][()], name)
            coef, b = g0[f"fits/{name}/coef"][()], g0[f"fits/{name}/intercept"][()]
            names = g0[f"fits/{name}/feature_names"][()]
            types, prop = g1["snapshots/types"][()], g1["propensity"][()]
            X = np.stack([prediction_inputs(g1, names, s) for s in range(types.shape[0])])
            for sp in (0, 1):
                m = types == sp
                pred = X[m] @ coef[sp].T + b[sp]                     # (rows, T)
                y = prop.transpose(0, 2, 1)[m]
                expect = [np.corrcoef(y[:, t], pred[:, t])[0, 1] for t in range(8)]
                np.testing.assert_allclose(rho[1, sp], expect, rtol=1e-9, atol=1e-12)
            assert not np.array_equal(rho[1], g1[f"fits/{name}/pearson"][()])


def test_plot_tool_on_the_sweep(sweep_run, tmp_path):
    path, _ = sweep_run
    png = tmp_path / "sweep.png"
    tool = os.path.join(ROOT, "tools", "plot_state_points.py")
    p = subprocess.run([sys.executable, tool, path, "-o", str(png)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the single-state tools read one state point of a sweep (--state-point), refuse without one
    pearson = os.path.join(ROOT, "tools", "plot_pearson.py")
    p = subprocess.run([sys.executable, pearson, path, "--state-point", "1", "-o",
                        str(tmp_path / "sp1.png")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "sp1.png").read_bytes()[:4] == b"\x89PNG"
    p = subprocess.run([sys.executable, pearson, path, "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--state-point 0..1" in p.stderr
    selection = os.path.join(ROOT, "tools", "plot_selection.py")
    p = subprocess.run([sys.executable, selection, path], capture_output=True, text=True)
    assert p.returncode != 0 and "--state-point 0..1" in p.stderr
    p = subprocess.run([sys.executable, selection, path, "--state-point", "1"], capture_output=True,
                       text=True)   # the sweep runs no feature selection: said, from state point 1's /fits
    assert p.returncode != 0 and "no /fits/<set>/selection group" in p.stderr
    from glasshpc.io.export import ExportError, export
    res = export(path, "extxyz", str(tmp_path / "sp1.xyz"), snapshots="0", state_point=1)
    with h5py.File(path, "r") as f:
        pos = f["state_points/1/snapshots/positions"][0]
    import ase.io
    atoms = ase.io.read(res["files"][0])
    np.testing.assert_allclose(atoms.get_positions(), pos % f_box(path, 1), atol=1e-12)
    with pytest.raises(ExportError, match="sweep over 2 state points"):
        export(path, "extxyz", str(tmp_path / "none.xyz"))
    # a file without /sweep: a one-line refusal naming the other tools
    single = tmp_path / "plain.h5"
    with h5py.File(single, "w") as f:
        f["x"] = 1
    p = subprocess.run([sys.executable, tool, str(single)], capture_output=True, text=True)
    assert p.returncode != 0 and "no /sweep" in p.stderr


def f_box(path, k):
    with h5py.File(path, "r") as f:
        return f[f"state_points/{k}/snapshots/box"][0]


@pytest.mark.parametrize("override, key, words", [
    ({"model": {"pressure": 1.0}}, "state_points[1].model.pressure",
     "['temperature', 'density', 'packing_fraction']"),
    ({"md": {"timestep": 0.001}}, "state_points[1].md.timestep", "nve_time"),
    ({"model": {"packing_fraction": 0.5}}, "state_points[1].model.packing_fraction",
     "hard_spheres"),
    ({"model": {"temperature": -1.0}}, "state_points[1].model.temperature", "> 0"),
    ({}, "state_points[1]", "overrides nothing"),
    # a state point so dense that its box is too small for the shells: the single-state check,
    # located
    ({"model": {"density": 3.0}}, "descriptors.radial[0]", "state_points[1]"),
])
def test_bad_override_refused(override, key, words):
    data = yaml.safe_load(sweep_yaml("/tmp/never.h5"))
    data["state_points"][1] = override
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == key and words in str(err.value), str(err.value)


def test_train_state_point_refused():
    data = yaml.safe_load(sweep_yaml("/tmp/never.h5"))
    data["fits"]["train_state_point"] = 2
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == "fits.train_state_point" and "0..1" in err.value.message
    data["fits"]["train_state_point"] = 1
    data["state_points"][1]["iso"]["times"]["count"] = 6
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == "fits.train_state_point" and "[8, 6]" in err.value.message
    data = yaml.safe_load(TINY_YAML.format(output="/tmp/never.h5"))
    data["fits"]["train_state_point"] = 0
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert "only with state_points" in err.value.message


def test_sweep_refused_with_files():
    data = yaml.safe_load(sweep_yaml("/tmp/never.h5"))
    data["imported"] = {"format": "glassbench", "files": "/nonexistent/*.npz"}
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == "state_points" and "imported" in err.value.message


def test_plan_counts_every_state_point():
    cfg = config.parse(sweep_yaml("/tmp/never.h5"))
    points = stages.state_points(cfg)
    assert [p.key(3) for p in points] == [(0, 3), (1, 3)]
    text = plan_text(cfg, Context(MPI.COMM_SELF))
    assert "sweep over 2 state points" in text and "8 snapshot tasks" in text
    assert "16 replica tasks" in text and "state point 1: T = 1.1, ρ = 1.15" in text
    assert "fits.train_state_point" not in config.state_point_yaml(sweep_yaml("/tmp/n.h5"), 1)
    singles = [p.cfg for p in points]
    for key in ("output", "partial", "disk"):
        assert resources.plan(cfg, 2, "shards")[key] == \
            sum(resources.plan(c, 2, "shards")[key] for c in singles)
    assert cluster.md_steps(cfg) == tuple(np.sum([cluster.md_steps(c) for c in singles], axis=0))
    assert cluster.output_bytes(cfg) == sum(cluster.output_bytes(c) for c in singles)
    cal = {k: (1e-6, 2e-6) for k in ("dynamics", "descriptors", "gram_per_row_f2",
                                    "eigh_per_f3", "cage_move", "cage_fixed")}
    cal["md"] = (1e6, 5e5)
    models = {st.name: st for st in schedule.stage_models(cfg, cal)}
    # the cage chains share the replicas' queue (stages.replicas_and_cage): per state point its 4 × 2
    # replicas, then its 4 chains
    costs = models["replicas + cage"].costs
    assert costs.size == 2 * (4 * 2 + 4) and "cage" not in models
    # the colder (longer) replicas of state point 0 cost more than state point 1's
    assert costs[0] > costs[4 * 2 + 4]


@pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")
def test_sweep_resume(sweep_run, tmp_path):
    """Killed (SIGKILL) after 5 replica tasks, resumed: the same datasets as the uninterrupted
    sweep; the journal names the state point in every task identity."""
    import json
    _, text = sweep_run
    cfg = tmp_path / "resume.yaml"
    cfg.write_text(sweep_yaml(str(tmp_path / "resume.h5")))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    run = [sys.executable, "-m", "glasshpc.run", str(cfg)]
    p = subprocess.run(run, capture_output=True, text=True, timeout=600,
                       env=dict(env, GLASSHPC_KILL_AFTER="replicas:5"), cwd=tmp_path)
    assert p.returncode == -9, p.stderr[-2000:]
    partial = tmp_path / "resume.h5.partial"
    tasks = []
    for name in os.listdir(partial):
        if name.startswith("journal-"):
            tasks += [json.loads(line) for line in open(partial / name) if line.strip()]
    replica_tasks = [t["task"] for t in tasks if t["stage"] == "replicas"]
    assert len(replica_tasks) == 5 and all(len(t) == 3 for t in replica_tasks)
    assert {t["task"][0] for t in tasks if t["stage"] == "snapshots"} == {0, 1}
    p = subprocess.run(run + ["--resume"], capture_output=True, text=True, timeout=600, env=env,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "[replicas] resuming: 5 of 16 tasks already done" in p.stdout
    a, b = h5_datasets(sweep_run[0]), h5_datasets(tmp_path / "resume.h5")
    assert a.keys() == b.keys()
    for name in a:
        _same(a[name], b[name], name)


@pytest.mark.mpi(min_size=2)
def test_sweep_one_and_two_ranks_identical(tmp_path):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    two, one = os.path.join(folder, "two.h5"), os.path.join(folder, "one.h5")
    _execute(sweep_yaml(two), comm)
    if comm.rank == 0:
        _execute(sweep_yaml(one), MPI.COMM_SELF)
    comm.Barrier()
    if comm.rank == 0:
        a, b = h5_datasets(one), h5_datasets(two)
        assert a.keys() == b.keys() and any(n.startswith("state_points/1/") for n in a)
        for name in a:
            _same(a[name], b[name], name)
    comm.Barrier()
