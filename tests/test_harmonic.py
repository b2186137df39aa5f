"""Binary harmonic spheres through LAMMPS ([CAGE]; SCIENCE.md §1): the pair style reproduces
V = ε(1 − r/σ_ij)² and its force exactly, NVE conserves energy at the chosen timestep, FIRE reaches
an inherent state. Reduced units of species A (σ_A = ε = m = k_B = 1)."""
import numpy as np
import pytest

from glasshpc.md.lammps import LammpsEngine
from glasshpc.models import get_model
from glasshpc.parallel import task_rng

HS = get_model("harmonic_spheres")
DT = 0.02            # inputs/harmonic*.yaml


def brute_force(pos, types, box):
    """Total energy, per-particle energies (half of each pair) and forces from the formula."""
    n = len(pos)
    e = np.zeros(n)
    f = np.zeros((n, 3))
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[j] - pos[i]
            d -= box * np.rint(d / box)
            r = np.linalg.norm(d)
            a, b = types[i], types[j]
            v = HS.epsilon[a, b] * (1 - r / HS.sigma[a, b]) ** 2 if r < HS.sigma[a, b] else 0.0
            fr = 2 * HS.epsilon[a, b] / HS.sigma[a, b] * (1 - r / HS.sigma[a, b]) \
                if r < HS.sigma[a, b] else 0.0
            e[i] += v / 2
            e[j] += v / 2
            f[i] -= fr * d / r
            f[j] += fr * d / r
    return e.sum(), e, f


@pytest.fixture(scope="module")
def engine():
    eng = LammpsEngine(HS, timestep=DT)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def liquid(engine):
    """N = 300 harmonic spheres at ρ = 0.82, T = 0.006, briefly equilibrated."""
    return engine.prepare_snapshot(300, 0.82, 0.006, task_rng(4, "snapshot", 0),
                                   melt_temperature=0.02, melt_time=10.0, nvt_time=100.0,
                                   nve_time=20.0, tdamp=1.0)


def test_model_parameters():
    np.testing.assert_allclose(HS.sigma, [[1.0, 1.2], [1.2, 1.4]])   # additive σ_ij
    assert HS.fractions == (0.5, 0.5)
    np.testing.assert_allclose(HS.sigma_self(), [1.0, 1.4])
    assert HS.counts(1000).tolist() == [500, 500]


def test_pair_energy_and_forces_match_formula(engine):
    """A small cluster with A–A, A–B, B–B pairs inside and outside contact, across the boundary."""
    box = np.full(3, 8.0)
    types = np.array([0, 0, 1, 1, 0, 1])
    pos = np.array([[1.0, 1.0, 1.0], [1.9, 1.1, 1.0], [1.2, 2.0, 1.3], [7.6, 1.5, 1.2],
                    [4.0, 4.0, 4.0], [5.15, 4.1, 4.0]])
    e_ref, eper_ref, f_ref = brute_force(pos, types, box)
    assert e_ref > 0 and np.count_nonzero(eper_ref) >= 5
    eper, f = engine.static_properties(pos, types, box)
    assert engine.thermo("pe") * len(pos) == pytest.approx(e_ref, rel=1e-13)
    np.testing.assert_allclose(eper, eper_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(f, f_ref, rtol=1e-12, atol=1e-14)
    # continuity at contact: a pair just beyond σ_AB has no energy and no force
    eper, f = engine.static_properties(np.array([[1.0, 1, 1], [2.2 + 1e-9, 1, 1]]),
                                       np.array([0, 1]), box)
    assert np.all(eper == 0) and np.all(f == 0)


def test_liquid_forces_match_formula(engine, liquid):
    pos, types, box = liquid
    e_ref, eper_ref, f_ref = brute_force(pos, types, box)
    eper, f = engine.static_properties(pos, types, box)
    np.testing.assert_allclose(eper, eper_ref, rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-13)


def test_nve_conserves_energy_at_chosen_timestep(engine, liquid):
    pos, types, box = liquid
    steps = np.arange(1, 11) * 1000                  # 10⁴ steps = 200 τ
    engine.run_replica(pos, types, box, 0.006, task_rng(4, "replica", 0, 0), steps)
    e = engine.last_energies
    ke = 1.5 * 0.006
    # fluctuation + drift of E/N stays below 1 % of the kinetic energy per particle
    assert np.abs(e - e[0]).max() < 0.01 * ke, np.abs(e - e[0]).max() / ke


def test_fire_inherent_state_converges(engine, liquid):
    pos, types, box = liquid
    e0 = brute_force(pos, types, box)[0]
    r_is, eper, fmax = engine.inherent_state(pos, types, box, 1e-8, 200000)
    assert fmax < 1e-8
    e_is, _, f_is = brute_force(r_is, types, box)
    # the formula agrees that it is a minimum below the liquid's energy
    assert np.sqrt((f_is ** 2).sum(axis=1)).max() < 1e-7
    assert e_is == pytest.approx(eper.sum(), rel=1e-10) and e_is < e0
    # same periodic images: r^IS − r^init is a small true displacement
    assert np.abs(r_is - pos).max() < 1.0
