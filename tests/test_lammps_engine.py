"""The LAMMPS engine against physics: NVE energy conservation, unwrapping across the periodic
boundary, replica velocities and bitwise reproducibility (real LAMMPS, reduced LJ units)."""
import numpy as np
import pytest

from glasshpc.md.lammps import LammpsEngine, maxwell_boltzmann
from glasshpc.models import get_model
from glasshpc.parallel import task_rng

KA = get_model("kob_andersen")


@pytest.fixture(scope="module")
def engine():
    eng = LammpsEngine(KA, timestep=0.005)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def liquid(engine):
    """A KA liquid at the demo state point (ρ = 1.2, T = 0.55), N = 500, briefly equilibrated."""
    return engine.prepare_snapshot(500, 1.2, 0.55, task_rng(3, "snapshot", 0), melt_temperature=2.0,
                                   melt_time=5.0, nvt_time=20.0, nve_time=5.0, tdamp=0.5)


def test_nve_replica_conserves_energy(engine, liquid):
    pos, types, box = liquid
    steps = np.arange(1, 11) * 1000
    engine.run_replica(pos, types, box, 0.55, task_rng(3, "replica", 0, 0), steps)
    e = engine.last_energies
    drift = np.abs(e - e[0]).max() / abs(e[0])
    assert drift < 1e-4, f"relative energy drift {drift:.2e} over 10^4 steps"


def test_unwrapped_displacements_across_boundary(engine, liquid):
    """Unwrapped r(t) − r(0) equals the sum of minimum-image steps between frequent read-outs."""
    pos, types, box = liquid
    steps = np.arange(1, 301) * 10          # 3000 steps at T = 2: many boundary crossings
    disp = engine.run_replica(pos, types, box, 2.0, task_rng(3, "replica", 0, 1), steps)
    wrapped = (pos + disp) % box
    frames = np.concatenate([pos[None] % box, wrapped])
    hop = np.diff(frames, axis=0)
    crossed = (np.abs(hop) > box / 2).any(axis=(0, 2))
    hop -= box * np.rint(hop / box)
    assert np.abs(hop).max() < 0.5, "read-outs too sparse for the minimum-image reference"
    reference = np.cumsum(hop, axis=0)
    assert crossed.sum() > 50, "the test needs particles that cross the boundary"
    np.testing.assert_allclose(disp, reference, atol=1e-9)


def test_replica_velocities(engine, liquid):
    pos, types, box = liquid
    n, T = len(types), 0.55
    v = maxwell_boltzmann(n, T, task_rng(11, "replica", 2, 5))
    np.testing.assert_allclose(v.sum(axis=0), 0.0, atol=1e-12)
    assert 0.5 * np.sum(v * v) == pytest.approx(1.5 * (n - 1) * T, rel=1e-14)
    same = maxwell_boltzmann(n, T, task_rng(11, "replica", 2, 5))
    other = maxwell_boltzmann(n, T, task_rng(11, "replica", 2, 6))
    assert np.array_equal(v, same) and not np.allclose(v, other)
    # LAMMPS sees the same kinetic temperature (3N − 3 degrees of freedom)
    engine.load(pos, types, box)
    engine.set_velocities(v)
    engine.command("run 0")
    assert engine.thermo("temp") == pytest.approx(T, rel=1e-12)
    np.testing.assert_array_equal(engine.velocities(), v)


def test_replicas_bitwise_reproducible_and_distinct(engine, liquid):
    pos, types, box = liquid
    steps = np.array([10, 100, 1000])
    a = engine.run_replica(pos, types, box, 0.55, task_rng(5, "replica", 1, 2), steps)
    b = engine.run_replica(pos, types, box, 0.55, task_rng(5, "replica", 1, 3), steps)
    c = engine.run_replica(pos, types, box, 0.55, task_rng(5, "replica", 1, 2), steps)
    assert np.array_equal(a, c)
    assert not np.allclose(a, b)


def test_ka_pair_energy_matches_formula(engine):
    """LAMMPS energy of a few KA pairs equals the truncated-and-shifted LJ formula."""
    box = np.full(3, 12.0)
    types = np.array([0, 0, 1, 1])
    pos = np.array([[1.0, 1.0, 1.0], [2.1, 1.0, 1.0], [1.0, 2.0, 1.3], [5.0, 5.0, 5.0]])
    engine.load(pos, types, box)
    engine.command("run 0")
    e = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            a, b = types[i], types[j]
            r = np.linalg.norm(pos[i] - pos[j])
            s, eps, rc = KA.sigma[a, b], KA.epsilon[a, b], KA.cutoff[a, b]
            lj = lambda x: 4 * eps * ((s / x) ** 12 - (s / x) ** 6)  # noqa: E731
            if r < rc:
                e += lj(r) - lj(rc)
    assert engine.thermo("pe") * 4 == pytest.approx(e, rel=1e-12)


def _ka_brute_force(pos, types, box):
    """Per-particle energies (half of each pair) and forces of truncated-and-shifted KA LJ by
    plain numpy over all pairs with the minimum image (independent of LAMMPS)."""
    d = pos[None, :, :] - pos[:, None, :]                  # r_j − r_i
    d -= box * np.rint(d / box)
    r2 = (d ** 2).sum(-1)
    np.fill_diagonal(r2, np.inf)
    eps = KA.epsilon[types[:, None], types[None, :]]
    sig = KA.sigma[types[:, None], types[None, :]]
    rc = KA.cutoff[types[:, None], types[None, :]]
    inside = r2 < rc ** 2
    s6 = (sig ** 2 / r2) ** 3
    shift = 4 * eps * ((sig / rc) ** 12 - (sig / rc) ** 6)
    v = np.where(inside, 4 * eps * (s6 ** 2 - s6) - shift, 0.0)
    dvdr_over_r = np.where(inside, -24 * eps * (2 * s6 ** 2 - s6) / r2, 0.0)
    force = (dvdr_over_r[:, :, None] * d).sum(axis=1)      # F_i = Σ_j V'(r)/r (r_j − r_i)
    return 0.5 * v.sum(axis=1), force


def test_static_properties_match_brute_force(engine, liquid):
    """Per-particle potential energy and net force ([CAGE] |F^net|) equal an independent
    all-pairs evaluation of the KA potential."""
    pos, types, box = liquid
    energy, force = engine.static_properties(pos, types, box)
    e_ref, f_ref = _ka_brute_force(pos, types, box)
    np.testing.assert_allclose(energy, e_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(force, f_ref, rtol=1e-9, atol=1e-9)
    assert np.abs(force.sum(axis=0)).max() < 1e-9          # Newton's third law


def test_fire_inherent_state(engine, liquid):
    """FIRE converges below the force tolerance, lowers the energy, and returns r^IS in the image
    of r^init (no displacement of a box length) with energies and forces of r^IS itself."""
    pos, types, box = liquid
    e0, _ = engine.static_properties(pos, types, box)
    r_is, e_is, fmax = engine.inherent_state(pos, types, box, 1e-6, 100000)
    assert fmax < 1e-6
    assert e_is.sum() < e0.sum() - 0.5 * len(types)         # ~ 1 ε per particle below the liquid
    assert np.linalg.norm(r_is - pos, axis=1).max() < 1.5   # same image, no jump by L
    e_ref, f_ref = _ka_brute_force(r_is, types, box)
    np.testing.assert_allclose(e_is, e_ref, rtol=1e-9, atol=1e-9)
    assert np.linalg.norm(f_ref, axis=1).max() < 1.1e-6
    with pytest.raises(RuntimeError, match="max_iterations"):
        engine.inherent_state(pos, types, box, 1e-6, 20)
