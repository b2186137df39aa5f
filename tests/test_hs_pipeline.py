"""Hard spheres through the pipeline (EDMD engine adapter), model selection in the config, and
--dry-run of every input file. Units: σ_A, m = k_B T = 1."""
import glob
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc import config
from glasshpc.md import make_engine
from glasshpc.md.edmd import EdmdEngine, HardSphereSystem
from glasshpc.models import get_model
from glasshpc.parallel import Context, task_rng
from glasshpc.run import execute, main

HS = get_model("hard_spheres")
INPUTS = os.path.join(os.path.dirname(__file__), os.pardir, "inputs")

TINY_HS = """
output: {output}
seed: 3
model: {{name: hard_spheres, n_particles: 400, packing_fraction: 0.50, temperature: 1.0}}
md: {{timestep: 0.005, nve_time: 5}}
snapshots: {{count: 5}}
iso:
  replicas: 3
  times: {{start: 0.01, stop: 3.0, count: 8}}
descriptors:
  radial: [{{r_min: 0.8, r_max: 2.2, count: 8, delta: 0.12}}]
  angular: [{{r_min: 1.0, r_max: 2.0, count: 3, delta: 0.12}}]
  l: [2, 4, 6]
  generations: 1
  r_generation: 2.1
fits:
  cv_folds: 3
  feature_sets: {{g0: {{generations: 0}}, g1: {{generations: 1}}}}
"""


@pytest.fixture(scope="module")
def snapshot():
    eng = EdmdEngine(HS, 0.005)
    return eng, eng.prepare_snapshot(400, HS.density(400, 0.55), 1.0, task_rng(1, "snapshot", 0),
                                     nve_time=5.0)


def test_model_description():
    assert HS.species == ("A", "B") and HS.counts(2000).tolist() == [600, 1400]
    np.testing.assert_allclose(HS.sigma_self(), [1.0, 0.85])
    assert HS.packing_fraction(2000, HS.density(2000, 0.58)) == pytest.approx(0.58, rel=1e-14)
    for name in ("kob_andersen", "harmonic_spheres", "hard_spheres", "bead_spring"):
        m = get_model(name)
        assert len(m.sigma_self()) == len(m.species) == len(m.counts(1000))
        assert m.types(1000).shape == (1000,) and m.counts(1000).sum() == 1000


def test_prepared_snapshot(snapshot):
    eng, (pos, types, box) = snapshot
    assert types.tolist() == [0] * 120 + [1] * 280
    assert HS.packing_fraction(400, 400 / np.prod(box)) == pytest.approx(0.55, rel=1e-12)
    assert np.all((pos >= 0) & (pos < box))
    s = HardSphereSystem(pos, HS.particle_diameters(types), box, check=False)
    assert -1e-10 <= s.min_gap() < 0.05


def test_replicas_bitwise_and_physical(snapshot):
    eng, (pos, types, box) = snapshot
    steps = np.array([1, 10, 100, 400])            # 0.005 … 2 τ
    a = eng.run_replica(pos, types, box, 1.0, task_rng(1, "replica", 0, 0), steps)
    ke = eng.last_energies.copy()
    b = eng.run_replica(pos, types, box, 1.0, task_rng(1, "replica", 0, 0), steps)
    c = eng.run_replica(pos, types, box, 1.0, task_rng(1, "replica", 0, 1), steps)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # KE = 3/2 (N − 1) k_B T exactly at t = 0, conserved by the collisions
    np.testing.assert_allclose(ke, 1.5 * 399, rtol=1e-12)
    # ballistic at t ≪ mean free time: Δr = v t, Σ|v|²/N = 3T(N−1)/N exactly
    fine = EdmdEngine(HS, 1e-6)
    m = fine.run_replica(pos, types, box, 1.0, task_rng(1, "replica", 0, 0), np.array([1, 10]))
    msd = np.mean(np.sum(m ** 2, axis=2), axis=1)
    np.testing.assert_allclose(msd / (3.0 * 399 / 400 * np.array([1e-6, 1e-5]) ** 2), 1.0,
                               rtol=1e-3)
    # no overlap in any recorded frame
    d = HS.particle_diameters(types)
    for frame in pos + a:
        w = frame - box * np.floor(frame / box)
        assert HardSphereSystem(w, d, box, check=False).min_gap() >= -1e-10


def test_bad_imported_configuration_is_refused(snapshot):
    eng, (pos, types, box) = snapshot
    steps = np.array([1, 2])
    bad = pos.copy()
    bad[7] = bad[3] + [0.3, 0.0, 0.0]
    bad[7] -= box * np.floor(bad[7] / box)
    with pytest.raises(ValueError, match=r"particles 3 and 7 overlap|particles 7 and 3 overlap"):
        eng.run_replica(bad, types, box, 1.0, task_rng(0, "r"), steps)
    bad = pos.copy()
    bad[11, 2] = box[2] + 0.1
    with pytest.raises(ValueError, match=r"particle 11\b.*outside"):
        eng.run_replica(bad, types, box, 1.0, task_rng(0, "r"), steps)
    with pytest.raises(ValueError, match="species"):
        eng.run_replica(pos, np.full(400, 2), box, 1.0, task_rng(0, "r"), steps)


def test_effective_potential_inherent_state(snapshot):
    eng, (pos, types, box) = snapshot
    r_is, e_is, fmax = eng.inherent_state(pos, types, box, 1e-5, 100000)
    assert fmax < 1e-5 and np.abs(r_is - pos).max() < box[0] / 4     # same periodic images
    e0, _ = eng.static_properties(pos, types, box)
    assert e_is.sum() < e0.sum()


# ------------------------------------------------------------------ config and factory
def _cfg(model_yaml):
    return config.parse(TINY_HS.format(output="x.h5").replace(
        "{name: hard_spheres, n_particles: 400, packing_fraction: 0.50, temperature: 1.0}",
        model_yaml))


def test_model_keys_validated():
    cfg = _cfg("{name: hard_spheres, n_particles: 400, packing_fraction: 0.5, temperature: 1.0}")
    assert cfg.model.density == pytest.approx(HS.density(400, 0.5))
    assert isinstance(make_engine(cfg), EdmdEngine)
    bad = {
        "{name: kob_andersen, n_particles: 400, density: 1.2, temperature: 1, packing_fraction: 0.5}":
            "model.packing_fraction",
        "{name: hard_spheres, n_particles: 400, density: 1.4, packing_fraction: 0.5, temperature: 1}":
            "model.packing_fraction",
        "{name: hard_spheres, n_particles: 400, density: 1.9, temperature: 1}": "model.density",
        "{name: bead_spring, n_particles: 402, density: 1.02, temperature: 1}": "model.n_particles",
        "{name: bead_spring, n_particles: 400, density: 1.02, temperature: 1, chain_length: 1}":
            "model.chain_length",
        "{name: harmonic_spheres, n_particles: 400, temperature: 1}": "model.density",
        "{name: harmonic_spheres, n_particles: 400, density: 0.8, temperature: 1, chain_length: 5}":
            "model.chain_length",
        "{name: lennard_jones, n_particles: 400, density: 0.8, temperature: 1}": "model.name",
    }
    for text, key in bad.items():
        with pytest.raises(config.ConfigError) as err:
            _cfg(text)
        assert err.value.key == key, text


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(INPUTS, "*.yaml"))))
def test_inputs_dry_run(path, capsys):
    """Every shipped input validates and plans; the README's demo also calibrates (the others'
    calibrations run paper-size systems: minutes, and the same code)."""
    demo = os.path.basename(path) == "ka_demo.yaml"
    assert main(["--dry-run", path] + ([] if demo else ["--no-calibration"])) == 0
    out = capsys.readouterr().out
    assert "stage replicas" in out or "softness sweep" in out
    if demo:
        assert "predicted schedule on" in out and "calibration:" in out
    else:
        assert "predicted schedule" not in out and "no calibration: --no-calibration" in out


# ------------------------------------------------------------------ the whole job
def test_hs_pipeline_file(tmp_path):
    out = str(tmp_path / "hs.h5")
    text = TINY_HS.format(output=out)
    summary = execute(config.parse(text), text, Context(MPI.COMM_SELF))
    with h5py.File(out, "r") as f:
        S, R, T, N = 5, 3, 8, 400
        assert f["iso/displacements"].shape == (S, R, T, N, 3)
        d = f["iso/displacements"][()].astype(np.float64)
        np.testing.assert_allclose(f["propensity"][()], np.linalg.norm(d, axis=-1).mean(axis=1),
                                   rtol=1e-6)
        k = np.argmin(np.abs(f["iso/times"][()] - 1.0))
        np.testing.assert_allclose(f["dynamics/debye_waller"][()],
                                   np.mean(np.sum(d[:, :, k] ** 2, axis=-1), axis=1), rtol=1e-6)
        assert f["dynamics"].attrs["debye_waller_time"] == pytest.approx(f["iso/times"][k])
        assert np.isfinite(f["fits/g1/pearson"][()]).all()
        assert "EDMD snapshot" in f["provenance"].attrs["lammps_commands"]
    # η = 0.50 fluid: the small B spheres relax within the 3 τ of the run
    assert 0.1 < summary["tau_alpha"][1] < 3.0


@pytest.mark.mpi(min_size=2)
def test_hs_one_and_two_ranks_identical(tmp_path):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    two, one = os.path.join(folder, "two.h5"), os.path.join(folder, "one.h5")
    text = TINY_HS.format(output=two)
    execute(config.parse(text), text, Context(comm))
    if comm.rank == 0:
        text = TINY_HS.format(output=one)
        execute(config.parse(text), text, Context(MPI.COMM_SELF))
    comm.Barrier()
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in ("snapshots/positions", "iso/displacements", "propensity",
                     "dynamics/debye_waller"):
            assert np.array_equal(a[name][()], b[name][()]), name
