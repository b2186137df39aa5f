"""Convergence diagnostics of the cage-state MC (states.chains.half_diagnostics, split_rhat,
convergence_summary; cage_state's half-measurement sums). Reduced LJ units (σ_AA)."""
import numpy as np
import pytest

from glasshpc.states.cage import PairPotential, cage_state
from glasshpc.states.chains import (DRIFT_Z, RHAT_LIMIT, convergence_summary, half_diagnostics,
                                    split_rhat)
from test_cage import lattice_config

KEYS = dict(equilibration_sweeps=0, measurement_sweeps=100, chains=2)


@pytest.fixture(scope="module")
def ka300():
    """KA-like configuration at T = 0.6: a lattice relaxed by MC in wide spherical cages."""
    pos, t, box = lattice_config(300, 1.2, 0.2, seed=4)
    r = cage_state(pos, t, box, PairPotential.kob_andersen(), 0.6, 60, 1, seed=11,
                   cage="sphere", cage_radius=0.7)
    return r["final"], t, box


def test_half_sums_and_split_rhat_match_the_recorded_samples(ka300):
    """The kernel's half-way sums equal averages of the recorded configurations (one per pass of
    4 sweeps), and split_rhat equals R̂ computed directly from those samples (49 sweeps: 13
    passes, odd: halves of 6 and 7 samples)."""
    pos, t, box = ka300
    pot = PairPotential.kob_andersen()
    runs = [cage_state(pos, t, box, pot, 0.6, 20, 49, seed=s, record_every=4) for s in (1, 2)]
    subs = []
    for r in runs:
        smp = r["samples"]                                     # (13, N, 3)
        assert r["half_samples"] == (6, 7) and r["half_sweeps"] == (24, 28)
        assert r["sweeps"] == (20, 52) and len(smp) == 13
        np.testing.assert_allclose(r["half_positions"][0], smp[:6].mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["half_positions"][1], smp[6:].mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["half_variance"][1], smp[6:].var(0, ddof=1).mean(1),
                                   rtol=1e-8, atol=1e-15)
        subs += [smp[:6], smp[6:]]
    W = np.mean([s.var(0, ddof=1).mean(1) for s in subs], axis=0)
    B_n = np.var([s.mean(0) for s in subs], axis=0, ddof=1).mean(1)
    n = 6.5
    direct = np.sqrt(((n - 1) / n * W + B_n) / W)
    got = split_rhat(np.stack([r["half_positions"] for r in runs]),
                     np.stack([r["half_variance"] for r in runs]), n)
    np.testing.assert_allclose(got, direct, rtol=1e-9)
    with pytest.raises(ValueError):
        split_rhat(np.zeros((2, 2, 5, 3)), np.zeros((2, 2, 4)), 10)
    assert np.isnan(split_rhat(np.zeros((1, 2, 5, 3)), np.ones((1, 2, 5)), 1)).all()


def _chains(ka300, n_equil, n_measure):
    pos, t, box = ka300
    runs = [cage_state(pos, t, box, PairPotential.kob_andersen(), 0.6, n_equil, n_measure,
                       seed=s, cage="sphere", cage_radius=0.15) for s in (1, 2)]
    d = [half_diagnostics(r["half_positions"], pos, t, 2) for r in runs]
    rhat = split_rhat(np.stack([r["half_positions"] for r in runs]),
                      np.stack([r["half_variance"] for r in runs]),
                      np.mean(runs[0]["half_samples"]))
    return convergence_summary(
        np.stack([x["displacement"] for x in d])[None], np.stack([x["pearson"] for x in d])[None],
        np.stack([x["shift"] for x in d])[None], np.stack([x["shift_se"] for x in d])[None],
        rhat[None], t[None], ("A", "B"), dict(KEYS, equilibration_sweeps=n_equil))


def test_chain_started_off_equilibrium_is_flagged(ka300):
    """No equilibration: every chain starts at r^init, so Δr^CS grows from the first half of the
    measurement to the second (the relaxation into the cage), and the halves disagree."""
    attrs, lines, warning = _chains(ka300, 0, 100)
    assert np.all(attrs["convergence_shift_z"] > DRIFT_Z)
    assert np.all(attrs["convergence_displacement_second_half"]
                  > attrs["convergence_displacement_first_half"])
    assert attrs["convergence_drifting_chains"].sum() >= 3
    assert np.all(attrs["convergence_rhat_median"] > RHAT_LIMIT)
    assert warning and "cage.equilibration_sweeps (now 0)" in warning and "cage.chains" in warning
    assert "shift z" in lines[0] and "split-R̂" in lines[1]


def test_equilibrated_chains_pass(ka300):
    """Same system and cages after 300 equilibration sweeps: no drift, R̂ close to 1."""
    attrs, lines, warning = _chains(ka300, 300, 1000)
    assert warning is None, warning
    assert np.all(np.abs(attrs["convergence_shift_z"]) < DRIFT_Z)
    assert np.all(attrs["convergence_rhat_median"] < RHAT_LIMIT)
    assert np.all(attrs["convergence_half_pearson"] > 0.6)


def test_half_diagnostics_of_a_known_shift():
    rng = np.random.default_rng(0)
    init = rng.uniform(0, 10, (2000, 3))
    types = np.repeat([0, 1], 1000)
    u = rng.normal(size=(2000, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    r = rng.uniform(0.05, 0.15, 2000)[:, None]
    halves = np.stack([init + r * u, init + (r + 0.03) * u])
    d = half_diagnostics(halves, init, types, 3)
    for sp in (0, 1):
        np.testing.assert_allclose(d["displacement"][:, sp],
                                   [r[types == sp].mean(), r[types == sp].mean() + 0.03])
    np.testing.assert_allclose(d["shift"][:2], 0.03)
    np.testing.assert_allclose(d["shift_se"][:2], 0, atol=1e-12)   # the same shift everywhere
    np.testing.assert_allclose(d["pearson"][:2], 1.0)
    assert np.isnan(d["displacement"][:, 2]).all() and np.isnan(d["shift"][2])  # empty species
