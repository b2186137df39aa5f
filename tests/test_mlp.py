"""MLP baseline (glasshpc.learn.mlp): learns a non-linear target that ridge cannot; equals a hand-made scikit-learn
pipeline; same result on 1 and 2 ranks."""
import warnings

import numpy as np
import pytest

from glasshpc.learn.mlp import mlp_baseline
from glasshpc.learn.ridge import GroupedRidgeCV, pearson


def make_problem(seed=0, n_snap=30, per_snap=100, F=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_snap * per_snap, F)) * [1.0, 2.0, 0.5, 1.0] + 3.0
    Y = np.stack([(X[:, 0] - 3.0) ** 2, np.abs(X[:, 1] - 3.0) + 0.5 * X[:, 2]], axis=1)
    Y += 0.1 * rng.normal(size=Y.shape)
    g = np.repeat(np.arange(n_snap), per_snap)
    test = g >= 24
    return X[~test], Y[~test], g[~test], X[test], Y[test]


KW = dict(layers=2, width=16, l2=1e-3, max_iter=150, seed=3)


def test_mlp_beats_ridge_on_a_nonlinear_target():
    Xtr, Ytr, gtr, Xte, Yte = make_problem()
    res = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **KW)
    lin = GroupedRidgeCV(alphas=np.logspace(-3, 8, 12), n_splits=3).fit(Xtr, Ytr, gtr)
    rho_lin = pearson(Yte, lin.predict(Xte))
    assert res.pearson.shape == (2,) and res.hidden == (16, 16) and res.n_train == len(Xtr)
    assert abs(rho_lin[0]) < 0.2           # (x0 − 3)² is even in x0: no linear signal
    assert np.all(res.pearson > 0.9) and np.all(res.r2 > 0.8)


def test_equals_scikit_learn_pipeline():
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=1)
    res = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **KW)
    sx, sy = StandardScaler().fit(Xtr), StandardScaler().fit(Ytr)
    m = MLPRegressor(hidden_layer_sizes=(16, 16), alpha=1e-3, max_iter=150, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning (mlp_baseline silences it too)
        m.fit(sx.transform(Xtr), sy.transform(Ytr))
    pred = sy.inverse_transform(m.predict(sx.transform(Xte)))
    np.testing.assert_allclose(res.pearson, pearson(Yte, pred), rtol=0, atol=1e-8)


def test_subsample_is_deterministic_and_bounded():
    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=2)
    a = mlp_baseline(Xtr, Ytr[:, 0], gtr, Xte, Yte[:, 0], max_rows=1000, **KW)
    b = mlp_baseline(Xtr, Ytr[:, 0], gtr, Xte, Yte[:, 0], max_rows=1000, **KW)
    assert 800 < a.n_train < 1200 and a.n_train == b.n_train
    np.testing.assert_array_equal(a.pearson, b.pearson)
    with pytest.raises(ValueError, match="layers"):
        mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, layers=4)


@pytest.mark.mpi(min_size=2)
def test_mpi_equals_serial():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=4)
    serial = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, max_rows=1500, **KW)
    r, size = comm.Get_rank(), comm.Get_size()
    mine = gtr % size == (size - 1 - r)     # snapshots dealt in reverse: order must not matter
    te = np.arange(len(Xte)) % size == r
    par = mlp_baseline(Xtr[mine], Ytr[mine], gtr[mine], Xte[te], Yte[te], max_rows=1500, comm=comm, **KW)
    assert par.n_train == serial.n_train
    np.testing.assert_allclose(par.pearson, serial.pearson, rtol=0, atol=1e-12)
    np.testing.assert_allclose(par.r2, serial.r2, rtol=0, atol=1e-12)
