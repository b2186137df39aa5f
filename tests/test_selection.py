"""Feature selection from Gram sub-matrices (glasshpc.learn.selection) against scikit-learn refits / RFE and a
brute-force greedy search; MPI against serial."""
import os

import h5py
import numpy as np
import pytest
from sklearn.feature_selection import RFE
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from glasshpc.learn.ridge import GroupedRidgeCV, pearson, r2_score
from glasshpc.learn.selection import select_features, write_selection


def make_problem(seed=0, n=1500, F=20, T=2, n_test=500):
    """Correlated, shifted and scaled features; T targets; the first n − n_test rows train, the rest are held out."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(F, F)) / np.sqrt(F) + np.eye(F)
    X = rng.normal(size=(n, F)) @ mix * rng.uniform(0.5, 3.0, F) + rng.normal(size=F)
    W = rng.normal(size=(F, T)) * (rng.uniform(size=(F, 1)) < 0.3)
    Y = X @ W + 2.0 * rng.normal(size=(n, T))
    tr = np.arange(n) < n - n_test
    return X[tr], Y[tr], X[~tr], Y[~tr]


def _refit(Xtr, ytr, Xte, yte, S, alpha):
    sc = StandardScaler().fit(Xtr)
    m = Ridge(alpha=alpha).fit(sc.transform(Xtr)[:, S], ytr)
    p_te, p_tr = m.predict(sc.transform(Xte)[:, S]), m.predict(sc.transform(Xtr)[:, S])
    r2 = 1 - ((yte - p_te) ** 2).sum() / ((yte - yte.mean()) ** 2).sum()
    return np.corrcoef(p_te, yte)[0, 1], r2, np.corrcoef(p_tr, ytr)[0, 1]


def test_rfe_equals_sklearn_rfe_and_refits():
    Xtr, Ytr, Xte, Yte = make_problem(seed=1)
    alpha = np.array([0.7, 30.0])
    res = select_features(Xtr, Ytr, Xte, Yte, method="rfe", alpha=alpha, names=[f"f{j}" for j in range(20)])
    assert res.order.shape == (2, 20)
    Z = StandardScaler().fit_transform(Xtr)
    for t in range(2):
        sk = RFE(Ridge(alpha=alpha[t]), n_features_to_select=1, step=1).fit(Z, Ytr[:, t])
        np.testing.assert_array_equal(res.order[t], np.argsort(sk.ranking_))
        assert res.names[t][0] == f"f{res.order[t, 0]}"
        for k in (1, 2, 5, 13, 20):
            rho, r2, trr = _refit(Xtr, Ytr[:, t], Xte, Yte[:, t], res.order[t, :k], alpha[t])
            assert abs(res.rho[t, k - 1] - rho) < 1e-8 and abs(res.r2[t, k - 1] - r2) < 1e-8
            assert abs(res.train_rho[t, k - 1] - trr) < 1e-8


def test_forward_equals_brute_force_greedy():
    Xtr, Ytr, Xte, Yte = make_problem(seed=2, F=15, T=1)
    y, alpha, K = Ytr[:, 0], 0.5, 7
    res = select_features(Xtr, y, Xte, Yte[:, 0], method="forward", alpha=alpha, max_features=K)
    Z = StandardScaler().fit_transform(Xtr)
    yc = y - y.mean()
    chosen = []
    for _ in range(K):  # refit every candidate; criterion = explained sum of squares b_Sᵀ w_S
        crit = {j: Ridge(alpha=alpha).fit(Z[:, chosen + [j]], y).coef_ @ (Z[:, chosen + [j]].T @ yc)
                for j in range(15) if j not in chosen}
        chosen.append(max(crit, key=crit.get))
    np.testing.assert_array_equal(res.order[0], chosen)
    for k in range(1, K + 1):
        rho, r2, trr = _refit(Xtr, y, Xte, Yte[:, 0], chosen[:k], alpha)
        assert abs(res.rho[0, k - 1] - rho) < 1e-8 and abs(res.r2[0, k - 1] - r2) < 1e-8
    # the training fit never gets worse by adding a feature (α → 0 limit: R² is monotone)
    r0 = select_features(Xtr, y, Xte, Yte[:, 0], method="forward", alpha=0.0, max_features=15)
    assert np.all(np.diff(r0.train_rho[0]) > -1e-12)


def test_full_set_equals_grouped_ridge_cv_model():
    """With all features and GroupedRidgeCV's α, the selection's held-out ρ is that model's held-out ρ."""
    Xtr, Ytr, Xte, Yte = make_problem(seed=3)
    g = np.repeat(np.arange(20), len(Xtr) // 20)
    model = GroupedRidgeCV(alphas=np.logspace(-3, 4, 15), n_splits=4).fit(Xtr, Ytr, g)
    res = select_features(Xtr, Ytr, Xte, Yte, method="rfe", alpha=model.alpha_)
    pred = model.predict(Xte)
    np.testing.assert_allclose(res.rho[:, -1], pearson(Yte, pred), rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.r2[:, -1], r2_score(Yte, pred), rtol=0, atol=1e-9)


def test_constant_feature_is_never_selected_and_h5_layout(tmp_path):
    Xtr, Ytr, Xte, Yte = make_problem(seed=4, F=8, T=2)
    Xtr[:, 3] = 2.5
    Xte[:, 3] = 2.5
    names = [f"x{j}" for j in range(8)]
    fw = select_features(Xtr, Ytr, Xte, Yte, method="forward", max_features=20, names=names)
    rf = select_features(Xtr, Ytr, Xte, Yte, method="rfe", names=names)
    for r in (fw, rf):
        assert r.order.shape == (2, 7) and not np.any(r.order == 3)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_selection(f.create_group("fits/g1/selection"), [fw, rf], "forward")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        grp = f["fits/g1/selection"]
        assert grp["rho"].shape == (2, 2, 7) and grp.attrs["method"] == "forward"
        assert grp["names"][0, 1, 0].decode() == fw.names[1][0]
        np.testing.assert_array_equal(grp["order"][1], rf.order)


def test_errors():
    Xtr, Ytr, Xte, Yte = make_problem(seed=5, F=5, T=1)
    with pytest.raises(ValueError, match="method"):
        select_features(Xtr, Ytr, Xte, Yte, method="lasso")
    with pytest.raises(ValueError, match="width"):
        select_features(Xtr, Ytr, Xte[:, :4], Yte)
    bad = Xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_features(bad, Ytr, Xte, Yte)
    with pytest.raises(ValueError, match="alpha"):
        select_features(Xtr, Ytr, Xte, Yte, alpha=-1.0)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", ["forward", "rfe"])
def test_mpi_equals_serial(method):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    Xtr, Ytr, Xte, Yte = make_problem(seed=6, F=25, T=3)
    kw = dict(method=method, alpha=[0.1, 1.0, 10.0], max_features=12)
    serial = select_features(Xtr, Ytr, Xte, Yte, **kw)
    r, size = comm.Get_rank(), comm.Get_size()
    tr = np.arange(len(Xtr)) % size == r
    te = np.arange(len(Xte)) < (len(Xte) if r == 0 else 0)   # all held-out rows on rank 0
    par = select_features(Xtr[tr], Ytr[tr], Xte[te], Yte[te], comm=comm, **kw)
    np.testing.assert_array_equal(par.order, serial.order)
    np.testing.assert_allclose(par.rho, serial.rho, rtol=0, atol=1e-10)
    np.testing.assert_allclose(par.r2, serial.r2, rtol=0, atol=1e-10)


def test_plot_selection_tool(tmp_path):
    """tools/plot_selection.py draws ρ vs n_features from the HDF5 layout written by write_selection."""
    import importlib.util
    import pathlib

    pytest.importorskip("matplotlib")
    Xtr, Ytr, Xte, Yte = make_problem(seed=7, F=12, T=3)
    names = [f"G_A(r={1 + j / 10:.2f},δ=0.10)" for j in range(12)]
    res = [select_features(Xtr, Ytr, Xte, Yte, method="forward", names=names, max_features=8) for _ in range(2)]
    h5 = tmp_path / "run.h5"
    with h5py.File(h5, "w") as f:
        f["iso/times"] = np.array([0.1, 1.0, 10.0])
        f.attrs["species"] = np.array(["A", "B"], dtype="S")
        f["fits/g2/pearson"] = np.stack([r.rho[:, -1] for r in res])
        write_selection(f.create_group("fits/g2/selection"), res, "forward")
    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "plot_selection.py"
    spec = importlib.util.spec_from_file_location("plot_selection", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main([str(h5), "-o", str(tmp_path / "sel.png"), "--times", "0,2"])
    assert os.path.getsize(out) > 10_000
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
