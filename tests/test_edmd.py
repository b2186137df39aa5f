"""Tests of the hard-sphere event-driven MD (glasshpc.md.edmd).  Whole file < 90 s on one core."""
import numpy as np
import pytest

from glasshpc.md.edmd import HardSphereSystem, bmcsl_Z, maxwell_boltzmann, prepare_snapshot

X_A, RATIO = 0.3, 0.85          # binary mixture of [CAGE]/[CMP]/[AVG]


@pytest.fixture(scope="module")
def mono50():
    # N = 2000: at N = 1000 the finite-size shift (~ +0.2 %) eats too much of the 0.5 % budget
    return prepare_snapshot(2000, 1.0, 1.0, 0.50, seed=11, equilibration_time=5.0)


@pytest.fixture(scope="module")
def binary50():
    return prepare_snapshot(1000, X_A, RATIO, 0.50, seed=12, equilibration_time=5.0)


@pytest.fixture(scope="module")
def binary58():
    return prepare_snapshot(500, X_A, RATIO, 0.58, seed=13, equilibration_time=2.0)


# ------------------------------------------------------------------ equation of state, velocities
def test_bmcsl_reduces_to_carnahan_starling():
    for eta in (0.1, 0.3, 0.5):
        cs = (1 + eta + eta ** 2 - eta ** 3) / (1 - eta) ** 3
        assert bmcsl_Z(eta) == pytest.approx(cs, rel=1e-13)
        assert bmcsl_Z(eta, [0.3, 0.7], [1.0, 1.0]) == pytest.approx(cs, rel=1e-13)
    # a mixture packs better: lower pressure at the same eta
    assert bmcsl_Z(0.5, [X_A, 1 - X_A], [1.0, RATIO]) < bmcsl_Z(0.5)


def test_maxwell_boltzmann_convention():
    v = maxwell_boltzmann(777, 1.7, 3)
    assert v.shape == (777, 3)
    assert np.abs(v.sum(axis=0)).max() < 1e-11
    assert 0.5 * np.sum(v * v) == pytest.approx(1.5 * 776 * 1.7, rel=1e-14)
    assert np.array_equal(v, maxwell_boltzmann(777, 1.7, np.random.default_rng(3)))


# ------------------------------------------------------------------ bad input
def test_refuses_overlap_naming_both_indices():
    pos = np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [3.0, 3.0, 3.0], [5.5, 5.2, 5.0]])
    with pytest.raises(ValueError, match=r"\b1\b.*\b3\b"):
        HardSphereSystem(pos, np.ones(4), [10.0, 10.0, 10.0])
    # across the periodic boundary
    pos = np.array([[0.1, 5.0, 5.0], [5.0, 5.0, 5.0], [9.6, 5.0, 5.0]])
    with pytest.raises(ValueError, match=r"\b0\b.*\b2\b"):
        HardSphereSystem(pos, np.ones(3), [10.0, 10.0, 10.0])
    # touching but not overlapping is fine
    HardSphereSystem(np.array([[1.0, 1, 1], [2.0, 1, 1], [5.0, 5, 5]]), np.ones(3), [10.0] * 3)


def test_refuses_out_of_box_and_nan_with_index():
    pos = np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [3.0, 3.0, 3.0]])
    bad = pos.copy()
    bad[2, 1] = 10.5
    with pytest.raises(ValueError, match=r"particle 2\b"):
        HardSphereSystem(bad, np.ones(3), [10.0] * 3)
    bad = pos.copy()
    bad[1, 0] = -0.1
    with pytest.raises(ValueError, match=r"particle 1\b"):
        HardSphereSystem(bad, np.ones(3), [10.0] * 3)
    bad = pos.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"particle 1\b"):
        HardSphereSystem(bad, np.ones(3), [10.0] * 3)
    with pytest.raises(ValueError, match="too small"):
        HardSphereSystem(pos[:2] * 0.3, np.ones(2), [1.9] * 3)  # box below 2 sigma
    with pytest.raises(ValueError, match="too small"):
        HardSphereSystem(pos, np.ones(3), [10.0] * 3, shell=2.5)
    with pytest.raises(ValueError):
        HardSphereSystem(pos, np.ones(3), [10.0] * 3, velocities=np.ones((2, 3)))


def test_two_body_head_on_collision():
    """Analytic check: head-on pair, contact at t = (d - sigma)/|v_rel|, velocities exchanged."""
    pos = np.array([[2.0, 5.0, 5.0], [5.0, 5.0, 5.0]])
    vel = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    s = HardSphereSystem(pos, np.ones(2), [20.0] * 3, vel)
    s.run(0.999)
    assert s.n_collisions == 0
    s.run(0.002)
    assert s.n_collisions == 1
    assert np.allclose(s.velocities, [[-1.0, 0, 0], [1.0, 0, 0]])
    assert np.allclose(s.positions[:, 0], [2.0 + 1.0 - 0.001, 5.0 - 1.0 + 0.001])


# ------------------------------------------------------------------ dynamics
@pytest.mark.parametrize("name", ["binary58", "mono50"])
def test_no_overlap_in_any_frame(name, request):
    s = request.getfixturevalue(name)
    frames = s.run_record(np.linspace(0.05, 3.0, 60))
    gaps = []
    for f in frames:
        t = HardSphereSystem(f - np.floor(f / s.box) * s.box, s.diameters, s.box, check=False)
        gaps.append(t.min_gap())
    assert min(gaps) >= -1e-10
    assert min(gaps) < 0.05   # dense: some pair is (nearly) in contact


def test_conservation_over_many_collisions(binary58):
    s = binary58
    v0 = s.velocities
    ke0, p0 = s.kinetic_energy, v0.sum(axis=0)
    c0 = s.n_collisions
    s.run(6.0)
    assert s.n_collisions - c0 >= 100_000
    assert abs(s.kinetic_energy - ke0) / ke0 < 1e-12
    assert np.abs(s.velocities.sum(axis=0) - p0).max() < 1e-11
    assert not np.array_equal(s.velocities, v0)


def test_pressure_monodisperse_carnahan_starling(mono50):
    s = mono50
    s.run(3.0)
    s.reset_pressure()
    s.run(40.0)
    assert s.pressure_Z == pytest.approx(bmcsl_Z(0.50), rel=0.005)


def test_pressure_binary_bmcsl(binary50):
    s = binary50
    s.run(5.0)
    s.reset_pressure()
    s.run(30.0)
    assert s.pressure_Z == pytest.approx(bmcsl_Z(0.50, [X_A, 1 - X_A], [1.0, RATIO]), rel=0.01)


def test_short_time_msd_is_ballistic(binary50):
    s = binary50
    T = s.temperature
    t = np.array([1e-5, 1e-4, 3e-4, 1.0])
    frames = s.run_record(np.concatenate([[0.0], t]))
    msd = np.mean(np.sum((frames[1:] - frames[0]) ** 2, axis=2), axis=1)
    ratio = msd / (3.0 * T * t ** 2)
    assert np.allclose(ratio[:3], 1.0, atol=0.01)
    assert ratio[3] < 0.5     # collisions: no longer ballistic at t = 1


def test_same_seed_bitwise_identical_different_seed_differs():
    a = prepare_snapshot(300, X_A, RATIO, 0.52, seed=5, equilibration_time=1.0)
    b = prepare_snapshot(300, X_A, RATIO, 0.52, seed=5, equilibration_time=1.0)
    c = prepare_snapshot(300, X_A, RATIO, 0.52, seed=6, equilibration_time=1.0)
    ta = a.run_record([0.5, 1.0, 2.0])
    tb = b.run_record([0.5, 1.0, 2.0])
    tc = c.run_record([0.5, 1.0, 2.0])
    assert np.array_equal(ta, tb)
    assert np.array_equal(a.velocities, b.velocities)
    assert a.n_collisions == b.n_collisions > 0
    assert not np.allclose(ta, tc)


def test_growth_reaches_target_packing_without_overlap(binary58):
    s = prepare_snapshot(400, X_A, RATIO, 0.58, seed=21, equilibration_time=0.0)
    assert s.packing_fraction == pytest.approx(0.58, rel=1e-12)
    assert s.min_gap() >= -1e-10
    assert s.min_gap() < 1e-3                      # jammed-ish contacts after growth
    assert (s.diameters == 1.0).sum() == round(0.3 * 400)
    assert np.all(s.diameters[:120] == 1.0) and np.all(s.diameters[120:] == RATIO)
    assert s.temperature == pytest.approx(1.0, rel=1e-12)
    assert binary58.packing_fraction == pytest.approx(0.58, rel=1e-12)


def test_split_runs_clock_rebase_and_list_overflow():
    """Lazy updates, kernel-clock rebasing (> 64 tau) and list-overflow recovery stay exact."""
    base = prepare_snapshot(300, X_A, RATIO, 0.50, seed=8, equilibration_time=0.5)
    pos, d, box, v = base.positions, base.diameters, base.box, base.velocities
    a = HardSphereSystem(pos, d, box, v)
    b = HardSphereSystem(pos, d, box, v)
    a.run(0.3)
    for _ in range(3):
        b.run(0.1)
    assert b.time == pytest.approx(0.3, abs=1e-14)
    assert np.allclose(a.unwrapped_positions, b.unwrapped_positions, atol=1e-9)
    # overflow: start with absurdly small neighbour lists -> capacities grow, dynamics unchanged
    c = HardSphereSystem(pos, d, box, v)
    c._cap = 2
    c._nbr = np.zeros((300, 2), np.int64)
    c.run(0.3)
    assert c._cap > 2
    assert np.allclose(a.unwrapped_positions, c.unwrapped_positions, atol=1e-9)
    # long run: several clock rebases, energy/momentum conserved, no overlap
    ke0 = a.kinetic_energy
    a.run(150.0)
    assert a.time == pytest.approx(150.3)
    assert abs(a.kinetic_energy - ke0) / ke0 < 1e-12
    assert np.abs(a.velocities.sum(axis=0)).max() < 1e-11
    assert a.min_gap() >= -1e-10
    assert np.all((a.positions >= 0) & (a.positions < box))
    assert np.allclose(a.positions, np.mod(a.unwrapped_positions, box))


def test_growth_beyond_jamming_is_refused():
    with pytest.raises(RuntimeError, match="jamming"):
        prepare_snapshot(150, 1.0, 1.0, 0.70, seed=2, equilibration_time=0.0, growth_rate=0.05)


def test_contact_within_tolerance_accepted_deeper_overlap_named():
    """Stored EDMD snapshots hold pairs at contact up to round-off: gaps ≥ −1e-10 σ are contacts,
    deeper overlaps are refused with the pair named."""
    box = [10.0] * 3
    touching = np.array([[1.0, 1, 1], [2.0 - 5e-11, 1, 1], [5.0, 5, 5]])
    HardSphereSystem(touching, np.ones(3), box)
    deeper = np.array([[1.0, 1, 1], [5.0, 5, 5], [2.0 - 1e-8, 1, 1]])
    with pytest.raises(ValueError, match=r"particles 0 and 2 overlap"):
        HardSphereSystem(deeper, np.ones(3), box)


def test_snapshot_reimport_and_replica_identity(binary58):
    """A prepared snapshot re-imported (as the replica stage does from the HDF5 file) runs
    bitwise identically for the same velocities; different velocities give different runs."""
    pos, d, box = binary58.positions, binary58.diameters, binary58.box
    v1 = maxwell_boltzmann(len(d), 1.0, 99)
    a = HardSphereSystem(pos, d, box, v1).run_record([0.1, 1.0])
    b = HardSphereSystem(pos.copy(), d, box, v1.copy()).run_record([0.1, 1.0])
    c = HardSphereSystem(pos, d, box, maxwell_boltzmann(len(d), 1.0, 100)).run_record([0.1, 1.0])
    assert np.array_equal(a, b) and not np.allclose(a, c)
