"""Barrier fits on synthetic binomial data with a known landscape; explained variance and JSD
on cases with known answers. Reduced LJ units."""
import numpy as np
import pytest

from glasshpc.learn import barriers as br

X = np.linspace(-2.0, 2.0, 9)                  # bin centres (softness or Z-score)
TEMPS = np.linspace(0.45, 0.85, 9)
E0, E1 = 4.0, -1.0                             # ΔE(x) = 4 − x  (softer → lower barrier)
S0, S1 = 4.0, -1.15                            # Σ(x) = 4 − 1.15 x → onset T = E1/S1 = 0.8696


def _sample(form, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    T = TEMPS[:, None]
    lnp = (S0 + S1 * X) - (E0 + E1 * X) / T
    if form == "kramers":
        lnp = lnp - np.log(T)
    p = np.exp(lnp)
    assert p.max() < 1
    nn = np.full(p.shape, n)
    return rng.binomial(nn, p), nn


@pytest.mark.parametrize("form", ["arrhenius", "kramers"])
def test_per_bin_fit_recovers_barriers_within_errors(form):
    k, n = _sample(form)
    fit = br.fit_barriers(TEMPS, k, n, form)
    pull_e = (fit.delta_e - (E0 + E1 * X)) / fit.delta_e_err
    pull_s = (fit.sigma - (S0 + S1 * X)) / fit.sigma_err
    assert np.all(np.abs(pull_e) < 3.5) and np.all(np.abs(pull_s) < 3.5)
    # the errors are neither too small nor absurdly large: pulls have unit-ish spread, and the
    # reported errors are a few percent of ΔE
    assert 0.4 < np.std(np.r_[pull_e, pull_s]) < 1.8
    assert np.all(fit.delta_e_err < 0.2)
    assert fit.chi2.sum() / fit.dof.sum() < 1.6            # pooled over bins
    # the wrong form is biased: ΔE off by ≈ mean T (ln T ≈ ln T̄ + (T − T̄)/T̄)
    other = "kramers" if form == "arrhenius" else "arrhenius"
    wrong = br.fit_barriers(TEMPS, k, n, other)
    assert np.all(np.abs(wrong.delta_e - (E0 + E1 * X)) / wrong.delta_e_err > 3)


@pytest.mark.parametrize("form", ["arrhenius", "kramers"])
def test_landscape_and_onset(form):
    k, n = _sample(form, seed=1)
    land = br.fit_landscape(X, TEMPS, k, n, form)
    truth = np.array([S0, S1, E0, E1])
    assert np.all(np.abs(land.params - truth) < 3.5 * land.errors)
    onset = E1 / S1
    assert abs(land.onset - onset) < 3.5 * land.onset_err and land.onset_err < 0.05
    fit = br.fit_barriers(TEMPS, k, n, form)
    assert abs(np.median(br.line_intersections(fit.sigma, fit.delta_e)) - onset) < 0.1
    np.testing.assert_allclose(land.delta_e(X), E0 + E1 * X, atol=4 * land.errors[2:].sum())


def test_counts_and_bad_input():
    x = np.array([-1.5, -0.5, -0.4, 0.5, 3.0])
    r = np.array([True, False, True, True, True])
    n, k = br.rearrangement_counts(x, r, [-2, -1, 0, 1])
    assert n.tolist() == [1, 2, 1] and k.tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        br.fit_barriers(TEMPS, np.ones((9, 2)), np.ones((8, 2)))
    with pytest.raises(ValueError, match="form"):
        br.fit_barriers(TEMPS, np.ones((9, 2)), np.ones((9, 2)) * 2, "eyring")


def test_explained_variance_fraction():
    rng = np.random.default_rng(4)
    y = rng.standard_normal(20000)
    assert br.explained_variance_fraction(y, y, n_bins=200) > 0.99
    levels = rng.integers(0, 8, 20000).astype(float)       # discrete Y: exact once no bin mixes levels
    assert br.explained_variance_fraction(levels, 3 * levels + 1, n_bins=64) == pytest.approx(1.0)
    assert br.explained_variance_fraction(y, rng.standard_normal(20000), n_bins=20) < 0.005
    # Y = X + noise of equal variance: half the variance is explained
    xx = rng.standard_normal(200000)
    f = br.explained_variance_fraction(xx + rng.standard_normal(200000), xx, n_bins=100)
    assert abs(f - 0.5) < 0.02


def test_jensen_shannon():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(5000)
    assert br.jensen_shannon(a, a.copy()) == 0.0
    assert br.jensen_shannon(a, a + 100.0, bins=200) == pytest.approx(np.log(2))
    same = br.jensen_shannon(a, rng.standard_normal(5000), bins=30)
    shifted = br.jensen_shannon(a, rng.standard_normal(5000) + 1.0, bins=30)
    assert same < 0.01 < shifted < np.log(2)
