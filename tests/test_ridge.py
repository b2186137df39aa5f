"""Tests of glasshpc.learn.ridge (serial against scikit-learn / scipy; MPI against serial)."""

import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score as sk_r2
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from glasshpc.learn.ridge import (GroupedRidgeCV, assign_folds, pearson, r2_score, ridge_path,
                                  split_snapshots)


def make_problem(seed=0, n_snap=20, per_snap=60, F=25, T=3, noise=2.0, offset=3.0):
    """Correlated, shifted, heterogeneously scaled features; T targets with different signal/noise."""
    rng = np.random.default_rng(seed)
    n = n_snap * per_snap
    groups = np.repeat(np.arange(100, 100 + n_snap), per_snap)
    mix = rng.normal(size=(F, F)) / np.sqrt(F) + np.eye(F)
    X = rng.normal(size=(n, F)) @ mix
    X = X * rng.uniform(0.1, 10.0, size=F) + offset * rng.normal(size=F)
    W = rng.normal(size=(F, T)) * (rng.uniform(size=(F, 1)) < 0.4)
    Y = X @ W / np.sqrt(F) + noise * rng.normal(size=(n, T)) * np.arange(1, T + 1)
    return X, Y, groups


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def brute_force_cv(X, Y, groups, folds, alphas):
    """Mean over folds of validation MSE with sklearn StandardScaler + Ridge, (A, T)."""
    out = np.zeros((len(alphas), Y.shape[1]))
    with threadpool_limits(1):  # tiny problems: BLAS threads only add overhead
        _brute_force_loop(X, Y, groups, folds, alphas, out)
    return out


def _brute_force_loop(X, Y, groups, folds, alphas, out):
    for fold_ids in folds:
        va = np.isin(groups, fold_ids)
        sc = StandardScaler().fit(X[~va])
        ztr, zva = sc.transform(X[~va]), sc.transform(X[va])
        for a, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(ztr, Y[~va]).predict(zva)
            out[a] += ((Y[va] - pred) ** 2).mean(axis=0) / len(folds)


# ---------------------------------------------------------------------------------------------------- serial

@pytest.mark.parametrize("alpha", [1e-3, 1.0, 300.0])
def test_fixed_alpha_equals_sklearn_ridge(alpha):
    X, Y, g = make_problem(seed=1)
    m = GroupedRidgeCV(alphas=[alpha]).fit(X, Y, g)
    assert not m.grid_extended_
    np.testing.assert_allclose(m.alpha_, alpha)
    Z = (X - m.mean_) / m.scale_
    np.testing.assert_allclose(m.mean_, X.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.scale_, X.std(0), rtol=1e-12)
    sk = Ridge(alpha=alpha).fit(Z, Y)
    assert rel(m.coef_ * m.scale_[None, :], sk.coef_) < 1e-8
    # mapped back to original feature units
    coef_orig = sk.coef_ / m.scale_[None, :]
    assert rel(m.coef_, coef_orig) < 1e-8
    assert rel(m.intercept_, sk.intercept_ - coef_orig @ m.mean_) < 1e-8
    # original units: predictions of raw X equal sklearn's on the standardised X
    assert rel(m.predict(X), sk.predict(Z)) < 1e-8


def test_one_target_squeezed():
    X, Y, g = make_problem(seed=2, T=1)
    y = Y[:, 0]
    m = GroupedRidgeCV(alphas=[2.0]).fit(X, y, g)
    assert m.coef_.shape == (X.shape[1],) and np.ndim(m.intercept_) == 0 and np.ndim(m.alpha_) == 0
    assert m.predict(X).shape == (X.shape[0],)
    sk = Ridge(alpha=2.0).fit((X - m.mean_) / m.scale_, y)
    assert rel(m.coef_ * m.scale_, sk.coef_) < 1e-8


def test_ridge_path_equals_direct_solve():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(200, 15)) @ rng.normal(size=(15, 15))
    G, b = A.T @ A, A.T @ rng.normal(size=(200, 4))
    alphas = np.array([1e-4, 1e-1, 1.0, 37.0, 1e5])
    path = ridge_path(G, b, alphas)
    assert path.shape == (5, 15, 4)
    for a, alpha in enumerate(alphas):
        direct = np.linalg.solve(G + alpha * np.eye(15), b)
        assert rel(path[a], direct) < 1e-8
    # 1-D right-hand side
    assert rel(ridge_path(G, b[:, 0], [2.0])[0, :, 0], np.linalg.solve(G + 2 * np.eye(15), b[:, 0])) < 1e-10


def test_multi_target_equals_separate_fits():
    X, Y, g = make_problem(seed=4, T=4)
    alphas = np.logspace(-3, 5, 33)
    m = GroupedRidgeCV(alphas=alphas).fit(X, Y, g)
    for t in range(Y.shape[1]):
        s = GroupedRidgeCV(alphas=alphas).fit(X, Y[:, t], g)
        assert s.alpha_ == m.alpha_[t]
        assert rel(s.coef_, m.coef_[t]) < 1e-10
        assert rel(s.intercept_, m.intercept_[t]) < 1e-10
        assert rel(s.cv_mse_, m.cv_mse_[:, t]) < 1e-10


@pytest.fixture(scope="module")
def brute_force_case():
    X, Y, g = make_problem(seed=5, F=40, T=3, noise=3.0)
    alphas = np.logspace(-2, 4, 13)
    folds = [np.unique(g)[assign_folds(np.unique(g), 5, 7) == k] for k in range(5)]
    return X, Y, g, alphas, folds, brute_force_cv(X, Y, g, folds, alphas)


@pytest.mark.parametrize("cv_method", ["gram", "direct"])
def test_cv_equals_brute_force_sklearn(cv_method, brute_force_case):
    X, Y, g, alphas, folds, ref = brute_force_case
    m = GroupedRidgeCV(alphas=alphas, n_splits=5, seed=7, cv_method=cv_method).fit(X, Y, g)
    assert not m.grid_extended_
    np.testing.assert_array_equal(m.alphas_, alphas)
    for a, b in zip(m.folds_, folds):
        np.testing.assert_array_equal(a, b)
    assert rel(m.cv_mse_, ref) < 1e-8
    best = np.argmin(ref, axis=0)
    np.testing.assert_array_equal(m.alpha_, alphas[best])
    # final refit = sklearn Ridge on all rows at each chosen α
    Z = (X - m.mean_) / m.scale_
    for t in range(Y.shape[1]):
        sk = Ridge(alpha=m.alpha_[t]).fit(Z, Y[:, t])
        assert rel(m.coef_[t] * m.scale_, sk.coef_) < 1e-8


def test_folds_by_snapshot_deterministic_and_order_free():
    X, Y, g = make_problem(seed=6)
    m1 = GroupedRidgeCV(alphas=np.logspace(-2, 4, 7), seed=3).fit(X, Y, g)
    perm = np.random.default_rng(0).permutation(len(g))
    m2 = GroupedRidgeCV(alphas=np.logspace(-2, 4, 7), seed=3).fit(X[perm], Y[perm], g[perm])
    for a, b in zip(m1.folds_, m2.folds_):
        np.testing.assert_array_equal(a, b)
    assert rel(m2.cv_mse_, m1.cv_mse_) < 1e-10 and rel(m2.coef_, m1.coef_) < 1e-10
    # every snapshot in exactly one fold, folds balanced
    allids = np.concatenate(m1.folds_)
    np.testing.assert_array_equal(np.sort(allids), np.unique(g))
    assert {len(f) for f in m1.folds_} == {4}
    # another seed gives another assignment
    fa = assign_folds(np.unique(g), 5, 3)
    fb = assign_folds(np.unique(g), 5, 4)
    assert not np.array_equal(fa, fb)
    with pytest.raises(ValueError):
        GroupedRidgeCV(n_splits=30).fit(X, Y, g)
    Xn = X.copy()
    Xn[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GroupedRidgeCV().fit(Xn, Y, g)


def test_constant_feature_gets_zero_coefficient():
    X, Y, g = make_problem(seed=8)
    Xc = np.column_stack([X[:, :3], np.full(len(X), 4.2), X[:, 3:]])
    m = GroupedRidgeCV(alphas=[1.0]).fit(Xc, Y, g)
    assert m.scale_[3] == 1.0
    assert np.all(m.coef_[:, 3] == 0.0)
    ref = GroupedRidgeCV(alphas=[1.0]).fit(X, Y, g)
    assert rel(np.delete(m.coef_, 3, axis=1), ref.coef_) < 1e-10
    assert rel(m.cv_mse_, ref.cv_mse_) < 1e-10


def test_grid_extended_high_side():
    # weak signal, few rows per feature: the optimum α is far above a grid ending at 1
    X, Y, g = make_problem(seed=9, n_snap=10, per_snap=12, F=60, T=2, noise=20.0)
    with pytest.warns(RuntimeWarning, match="extended"):
        m = GroupedRidgeCV(alphas=np.logspace(-3, 0, 13), max_extensions=8).fit(X, Y, g)
    assert m.grid_extended_
    assert m.alphas_[-1] > 1.0 and np.all(np.diff(m.alphas_) > 0)
    assert np.all(m.alpha_ > 1.0)
    assert m.cv_mse_.shape == (m.alphas_.size, 2)
    # same result as a grid wide enough from the start (common grid points agree)
    wide = GroupedRidgeCV(alphas=m.alphas_).fit(X, Y, g)
    assert not wide.grid_extended_
    np.testing.assert_array_equal(wide.alpha_, m.alpha_)
    assert rel(wide.cv_mse_, m.cv_mse_) < 1e-12


def test_grid_extended_low_side_and_bounded():
    X, Y, g = make_problem(seed=10, noise=0.05, T=1)
    with pytest.warns(RuntimeWarning) as rec:
        m = GroupedRidgeCV(alphas=np.logspace(6, 8, 9), max_extensions=3).fit(X, Y[:, 0], g)
    msgs = [str(w.message) for w in rec]
    assert any("extended" in s for s in msgs) and any("still on the grid edge" in s for s in msgs)
    assert m.grid_extended_ and m.alphas_[0] == pytest.approx(1e3)
    # pure noise: CV error decreases towards var(y) as α → ∞; extensions stop (bounded / flat)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m2 = GroupedRidgeCV(alphas=np.logspace(-2, 1, 7), max_extensions=2).fit(X, rng.normal(size=len(X)), g)
    assert m2.alphas_[-1] <= 1e3 * (1 + 1e-12)


def test_pearson_r2_match_scipy_sklearn():
    rng = np.random.default_rng(11)
    yt = rng.normal(size=(500, 3)) * [1, 10, 0.1] + [0, 5, -2]
    yp = yt + rng.normal(size=(500, 3)) * [0.5, 20, 0.01]
    r = pearson(yt, yp)
    for t in range(3):
        assert r[t] == pytest.approx(scipy.stats.pearsonr(yt[:, t], yp[:, t])[0], rel=1e-12)
    np.testing.assert_allclose(r2_score(yt, yp), sk_r2(yt, yp, multioutput="raw_values"), rtol=1e-12)
    np.testing.assert_allclose(pearson(yt[:, 0], yp[:, 0]), r[:1], rtol=1e-14)
    np.testing.assert_allclose(r2_score(yt[:, 1], yp[:, 1]), sk_r2(yt[:, 1], yp[:, 1]), rtol=1e-12)


def test_split_snapshots():
    ids = np.repeat(np.arange(3, 23), 5)
    tr, te = split_snapshots(ids, 0.25, seed=1)
    assert len(te) == 5 and len(tr) == 15
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(3, 23))
    tr2, te2 = split_snapshots(ids[::-1], 0.25, seed=1)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, split_snapshots(ids, 0.25, seed=2)[1])
    assert len(split_snapshots([1, 2], 0.01, 0)[1]) == 1


# ---------------------------------------------------------------------------------------------------- MPI

@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("cv_method", ["gram", "direct"])
def test_mpi_equals_serial(cv_method):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, Y, g = make_problem(seed=12, n_snap=23, per_snap=50, F=30, T=4, noise=2.0)
    kw = dict(alphas=np.logspace(-3, 4, 29), n_splits=5, seed=5, cv_method=cv_method)
    serial = GroupedRidgeCV(**kw).fit(X, Y, g)
    # each rank gets a different subset of the snapshots (uneven on purpose)
    snaps = np.unique(g)
    mine = snaps[np.random.default_rng(99).permutation(snaps.size) % size == rank]
    if rank == 0:
        mine = mine[:-1]  # rank 0 gives its last snapshot to rank 1
    if rank == 1:
        mine = np.append(mine, snaps[np.random.default_rng(99).permutation(snaps.size) % size == 0][-1])
    sel = np.isin(g, mine)
    par = GroupedRidgeCV(comm=comm, **kw).fit(X[sel], Y[sel], g[sel])
    # per-snapshot sums combined exactly: bitwise the serial fit, whatever the split over ranks
    for key in ("alpha_", "coef_", "intercept_", "cv_mse_", "mean_", "scale_", "alphas_"):
        assert np.array_equal(getattr(par, key), getattr(serial, key)), key
    for a, b in zip(par.folds_, serial.folds_):
        np.testing.assert_array_equal(a, b)
    # identical model on every rank
    allcoef = comm.allgather(par.coef_)
    assert all(np.array_equal(c, allcoef[0]) for c in allcoef)
    # distributed metrics with snapshot ids equal serial ones bitwise
    pred = par.predict(X[sel])
    assert np.array_equal(pearson(Y[sel], pred, comm=comm, groups=g[sel]), pearson(Y, serial.predict(X), groups=g))
    assert np.array_equal(r2_score(Y[sel], pred, comm=comm, groups=g[sel]), r2_score(Y, serial.predict(X), groups=g))


@pytest.mark.mpi(min_size=2)
def test_mpi_rank_without_rows():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    X, Y, g = make_problem(seed=13, T=2)
    serial = GroupedRidgeCV(alphas=np.logspace(-2, 3, 11)).fit(X, Y, g)
    sel = slice(None) if comm.Get_rank() == 0 else slice(0, 0)
    par = GroupedRidgeCV(alphas=np.logspace(-2, 3, 11), comm=comm).fit(X[sel], Y[sel], g[sel])
    np.testing.assert_array_equal(par.alpha_, serial.alpha_)
    assert np.array_equal(par.coef_, serial.coef_)


def test_row_order_and_grouping_do_not_matter():
    """Snapshots given in another order, interleaved rows (same order within each snapshot) and a direct
    vs gram CV give bitwise the same statistics-based model; float32 input is accumulated in float64."""
    X, Y, g = make_problem(seed=14, T=2)
    kw = dict(alphas=np.logspace(-2, 4, 13), seed=1)
    ref = GroupedRidgeCV(**kw).fit(X, Y, g)
    snaps = np.unique(g)[::-1]                                   # snapshots in reverse order
    perm = np.concatenate([np.flatnonzero(g == s) for s in snaps])
    inter = np.argsort(np.arange(len(g)) % 60 * 1000 + g, kind="stable")  # rows of snapshots interleaved
    for order in (perm, inter):
        m = GroupedRidgeCV(**kw).fit(X[order], Y[order], g[order])
        for key in ("alpha_", "coef_", "intercept_", "cv_mse_", "mean_", "scale_"):
            assert np.array_equal(getattr(m, key), getattr(ref, key)), key
    d = GroupedRidgeCV(cv_method="direct", **kw).fit(X, Y, g)
    np.testing.assert_array_equal(d.alpha_, ref.alpha_)
    assert rel(d.cv_mse_, ref.cv_mse_) < 1e-10 and rel(d.coef_, ref.coef_) < 1e-10
    m32 = GroupedRidgeCV(**kw).fit(X.astype(np.float32), Y, g)
    ref32 = GroupedRidgeCV(**kw).fit(X.astype(np.float32).astype(np.float64), Y, g)
    assert np.array_equal(m32.coef_, ref32.coef_)


@pytest.mark.mpi(min_size=2)
def test_mpi_grid_extension_reported_once():
    """The edge-extension warning comes from rank 0 only; every rank extends the grid identically."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    X, Y, g = make_problem(seed=9, n_snap=10, per_snap=12, F=60, T=2, noise=20.0)
    sel = (g % comm.Get_size()) == comm.Get_rank()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m = GroupedRidgeCV(alphas=np.logspace(-3, 0, 13), max_extensions=8, comm=comm).fit(X[sel], Y[sel], g[sel])
    n_warn = sum("extended" in str(w.message) for w in rec)
    assert m.grid_extended_
    assert n_warn == (1 if comm.Get_rank() == 0 else 0)
    assert comm.allreduce(n_warn) == 1
    grids = comm.allgather(m.alphas_)
    assert all(np.array_equal(a, grids[0]) for a in grids)
