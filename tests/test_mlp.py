"""MLP baseline (glasshpc.learn.mlp, PyTorch): learns a non-linear target that ridge cannot; dropout and L2 reach
the optimiser; one network per time does not depend on the other times; deterministic, leaves the global torch RNG
alone; same result on 1 and 2 ranks. Without PyTorch a config asking for it is refused naming the extra.

Tests needing PyTorch take the ``torch`` fixture: they skip (with the install line) when the extra 'nn' is missing.
"""
import sys

import numpy as np
import pytest

from glasshpc import config
from glasshpc.config import ConfigError
from glasshpc.learn.mlp import mlp_baseline
from glasshpc.learn.ridge import GroupedRidgeCV, pearson


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch missing: pip install '.[nn]' (the network baselines)")


def make_problem(seed=0, n_snap=30, per_snap=100, F=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_snap * per_snap, F)) * [1.0, 2.0, 0.5, 1.0] + 3.0
    Y = np.stack([(X[:, 0] - 3.0) ** 2, np.abs(X[:, 1] - 3.0) + 0.5 * X[:, 2]], axis=1)
    Y += 0.1 * rng.normal(size=Y.shape)
    g = np.repeat(np.arange(n_snap), per_snap)
    test = g >= 24
    return X[~test], Y[~test], g[~test], X[test], Y[test]


KW = dict(layers=2, width=16, dropout=0.1, l2=1e-3, max_iter=40, learning_rate=3e-3, seed=3)


def test_mlp_beats_ridge_on_a_nonlinear_target(torch):
    Xtr, Ytr, gtr, Xte, Yte = make_problem()
    res = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **KW)
    lin = GroupedRidgeCV(alphas=np.logspace(-3, 8, 12), n_splits=3).fit(Xtr, Ytr, gtr)
    rho_lin = pearson(Yte, lin.predict(Xte))
    assert res.pearson.shape == (2,) and res.hidden == (16, 16) and res.n_train == len(Xtr)
    assert abs(rho_lin[0]) < 0.2           # (x0 − 3)² is even in x0: no linear signal
    assert np.all(res.pearson > 0.9) and np.all(res.r2 > 0.8)


def test_per_time_networks_are_independent_of_the_other_times(torch):
    """outputs='per_time': network t has its own stream (seed, t) and its own standardisation, so its ρ is
    bitwise the same whether it is trained alone or beside the others; 'all' differs (one shared network)."""
    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=5)
    both = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, outputs="per_time", **KW)
    first = mlp_baseline(Xtr, Ytr[:, :1], gtr, Xte, Yte[:, :1], outputs="per_time", **KW)
    shared = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, outputs="all", **KW)
    assert both.outputs == "per_time"
    # the same network and predictions; ρ itself may differ in the last bit (sums over an (n, 2) vs (n, 1) array)
    np.testing.assert_allclose(both.pearson[:1], first.pearson, rtol=0, atol=1e-14)
    assert not np.array_equal(both.pearson, shared.pearson)
    assert np.all(both.pearson > 0.9)


def test_l2_and_dropout_reach_the_optimiser(torch):
    """A huge L2 penalty drives the weights to zero: a (near-)constant prediction, R² ≈ 0; dropout changes the
    result (its masks are drawn), and the run is reproducible with it."""
    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=6)
    kw = dict(KW, dropout=0.0)
    plain = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **kw)
    shrunk = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **dict(kw, l2=1e3))
    assert np.all(plain.r2 > 0.8) and np.all(np.abs(shrunk.r2) < 0.05)
    a = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **dict(kw, dropout=0.5))
    b = mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **dict(kw, dropout=0.5))
    assert np.array_equal(a.pearson, b.pearson) and not np.array_equal(a.pearson, plain.pearson)


def test_deterministic_and_global_rng_untouched(torch):
    Xtr, Ytr, gtr, Xte, Yte = make_problem(seed=2)
    torch.manual_seed(99)
    before = torch.rand(3)
    torch.manual_seed(99)
    a = mlp_baseline(Xtr, Ytr[:, 0], gtr, Xte, Yte[:, 0], max_rows=1000, **KW)
    after = torch.rand(3)
    b = mlp_baseline(Xtr, Ytr[:, 0], gtr, Xte, Yte[:, 0], max_rows=1000, **KW)
    c = mlp_baseline(Xtr, Ytr[:, 0], gtr, Xte, Yte[:, 0], max_rows=1000, **dict(KW, seed=4))
    assert torch.equal(before, after)      # the training ran in a forked, restored RNG
    assert 800 < a.n_train < 1200 and a.n_train == b.n_train
    np.testing.assert_array_equal(a.pearson, b.pearson)
    assert not np.array_equal(a.pearson, c.pearson)
    for bad, match in ((dict(layers=4), "layers"), (dict(dropout=1.0), "dropout"), (dict(outputs="each"), "outputs")):
        with pytest.raises(ValueError, match=match):
            mlp_baseline(Xtr, Ytr, gtr, Xte, Yte, **dict(KW, **bad))


def test_network_config_refused_without_torch(tiny_yaml, tmp_path, monkeypatch):
    """Runs with or without PyTorch: ``sys.modules['torch'] = None`` makes ``import torch`` fail as on a machine
    without the extra; the config is refused at parse time (before any work), naming the key and the extra."""
    import yaml
    monkeypatch.setitem(sys.modules, "torch", None)
    for key, value in (("mlp", {"layers": 2}), ("gnn", {"enabled": True})):
        data = yaml.safe_load(tiny_yaml(str(tmp_path / "x.h5")))
        data["fits"][key] = value
        with pytest.raises(ConfigError) as err:
            config.parse(yaml.safe_dump(data))
        assert err.value.key == ("fits.mlp.layers" if key == "mlp" else "fits.gnn.enabled")
        assert "pip install 'glasshpc[nn]'" in err.value.message
    config.parse(tiny_yaml(str(tmp_path / "x.h5")))        # no network asked for: accepted


@pytest.mark.mpi(min_size=2)
def test_mpi_equals_serial():
    pytest.importorskip("torch", reason="PyTorch missing: pip install '.[nn]' (the network baselines)")
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
