"""Stored per-particle predictions, per-snapshot scores, cv_score: pearson, explicit splits and
dynamical blocks (issue 13, items 1–3), checked against independent numpy/scipy/sklearn
computations on the real tiny run (tests/conftest.py ``tiny_run``)."""
import warnings

import h5py
import numpy as np
import pytest
import yaml
from scipy.stats import pearsonr

from conftest import mutate_yaml
from glasshpc import config
from glasshpc.learn.fits import SCALAR_SOURCES, prediction_inputs


def _inputs(h5, names, s):
    """The feature matrix of snapshot s rebuilt from the documented naming rule only."""
    desc = [n.decode() if isinstance(n, bytes) else n for n in h5["descriptors/feature_names"][()]]
    cols = []
    for n in names:
        n = n.decode() if isinstance(n, bytes) else n
        if ":" in n:
            block, col = n.split(":", 1)
            cols.append(h5[f"descriptors/{block}"][s][:, desc.index(col)])
        else:
            cols.append(h5[SCALAR_SOURCES[n]][s])
    return np.column_stack(cols)


def test_prediction_recomputed_from_feature_names_coef_intercept(tiny_run):
    with h5py.File(tiny_run, "r") as h5:
        S, T, N = h5["propensity"].shape
        g = h5["fits"]
        is_test = g["is_test"][()]
        assert is_test.dtype == bool and is_test.shape == (S,)
        assert np.array_equal(np.flatnonzero(is_test), g.attrs["test_snapshots"])
        assert np.array_equal(np.flatnonzero(~is_test), g.attrs["train_snapshots"])
        for name in ("g0", "g1", "cs", "all"):
            f = g[name]
            pred = f["prediction"][()]
            assert pred.shape == (S, T, N) and pred.dtype == np.float64
            coef, icpt = f["coef"][()], f["intercept"][()]
            for s in range(S):          # train and test snapshots alike
                types = h5["snapshots/types"][s]
                X = _inputs(h5, f["feature_names"][()], s)
                assert np.array_equal(X, prediction_inputs(h5, f["feature_names"][()], s))
                for sp in (0, 1):
                    want = X[types == sp] @ coef[sp].T + icpt[sp]
                    np.testing.assert_allclose(pred[s][:, types == sp], want.T, rtol=1e-11,
                                               atol=1e-12)
            # the stored pooled held-out ρ is the ρ of these stored predictions
            prop = h5["propensity"][()]
            types = h5["snapshots/types"][()]
            for sp in (0, 1):
                for t in range(T):
                    m = (types == sp) & is_test[:, None]
                    r = np.corrcoef(prop[:, t][m], pred[:, t][m])[0, 1]
                    assert abs(r - f["pearson"][sp, t]) < 1e-10


def test_per_snapshot_pearson_equals_scipy(tiny_run):
    with h5py.File(tiny_run, "r") as h5:
        test = h5["fits"].attrs["test_snapshots"]
        prop, types = h5["propensity"][()], h5["snapshots/types"][()]
        T = prop.shape[1]
        for name in ("g1", "all"):
            f = h5["fits"][name]
            per = f["pearson_per_snapshot"][()]
            assert per.shape == (2, T, test.size)
            pred = f["prediction"][()]
            want = np.array([[[pearsonr(prop[s, t, types[s] == sp], pred[s, t, types[s] == sp])[0]
                               for s in test] for t in range(T)] for sp in (0, 1)])
            np.testing.assert_allclose(per, want, rtol=0, atol=1e-12)
            np.testing.assert_allclose(f["pearson_snapshot_mean"][()], want.mean(-1), atol=1e-12)
            np.testing.assert_allclose(f["pearson_snapshot_std"][()], want.std(-1), atol=1e-12)


def test_pearson_table_prints_pooled_and_mean_std():
    from glasshpc.learn.fits import FitResult, snapshot_mean_std
    from glasshpc.run import pearson_table, single_table

    rho = np.array([[[0.1, 0.3, np.nan]], [[0.5, 0.7, 0.9]]])      # (2 species, 1 time, 3 snaps)
    mean, std = snapshot_mean_std(rho)
    assert np.allclose(mean[:, 0], [0.2, 0.7]) and np.allclose(std[:, 0], [0.1, np.std([.5, .7, .9])])
    z = np.zeros((2, 1))
    res = FitResult(z + 0.25, z, z, np.zeros((2, 1, 1)), z, np.zeros(2, bool), ["dw"],
                    pearson_per_snapshot=rho, pearson_snapshot_mean=mean, pearson_snapshot_std=std)
    sets = {"x": config.FeatureSet("init+dw", 0, allow_dynamical=True)}
    text = pearson_table(np.array([1.0]), {"x": res}, ("A", "B"), sets)
    assert "x [dyn] pooled" in text and "0.200 ± 0.100" in text and "0.700 ± 0.163" in text
    assert "[dyn] = dynamical" in text
    single = single_table(np.array([1.0]), {"fnet": z, "dw": z}, ("A", "B"))
    assert "dw [dyn]" in single and "fnet [dyn]" not in single


def test_single_variable_dw_marked_dynamical_in_file(tiny_run):
    with h5py.File(tiny_run, "r") as h5:
        assert h5["fits/single/dw"].attrs["dynamical"]
        assert not h5["fits/single/fnet"].attrs["dynamical"]
        assert not h5["fits/all"].attrs["dynamical"]


# -- cv_score: pearson against a brute-force sklearn loop on the same folds ---------------------

def _copy_into_store(tiny_run, cfg, tmp_path):
    """A real Store (shards) holding the tiny run's data that the fits read."""
    from mpi4py import MPI

    from glasshpc import stages
    from glasshpc.parallel import Context
    from glasshpc.store import Store

    ctx = Context(MPI.COMM_SELF)
    with h5py.File(tiny_run, "r") as h5:
        F = h5["descriptors/init"].shape[2]
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["descriptors/feature_names"]]
        store = Store(cfg.output, ctx, stages.layout(cfg, F), mode="shards")
        for ds in ["snapshots/types", "propensity", "descriptors/init", "descriptors/cs",
                   *SCALAR_SOURCES.values()]:
            for s in range(cfg.snapshots.count):
                store.write(ds, (s,), h5[ds][s])
    store.sync()
    return ctx, store, names


def _brute_force_scores(X, Y, G, folds, ids, alphas):
    """(A, T) mean over folds of the mean per-snapshot Pearson of sklearn Ridge on standardised
    features (training-fold mean, population std) — the papers' criterion, written plainly."""
    from sklearn.linear_model import Ridge

    out = np.zeros((len(alphas), Y.shape[1]))
    for k in range(folds.max() + 1):
        va_ids = ids[folds == k]
        tr = ~np.isin(G, va_ids)
        mu, sd = X[tr].mean(0), X[tr].std(0)
        sd[sd == 0] = 1.0
        for a, alpha in enumerate(alphas):
            m = Ridge(alpha=alpha).fit((X[tr] - mu) / sd, Y[tr])
            rs = []
            for s in va_ids:
                p = m.predict((X[G == s] - mu) / sd)
                rs.append([pearsonr(Y[G == s, t], p[:, t])[0] for t in range(Y.shape[1])])
            out[a] += np.mean(rs, axis=0) / (folds.max() + 1)
    return out


def test_cv_score_pearson_chooses_the_brute_force_alpha(tiny_run, tiny_yaml, tmp_path):
    from glasshpc.learn.fits import feature_rows, feature_layout, fit_propensity
    from glasshpc.learn.ridge import assign_folds

    text = mutate_yaml(tiny_yaml(str(tmp_path / "p.h5")), ("fits",),
                       {"cv_folds": 3, "cv_score": "pearson", "test_snapshots": [1, 3],
                        "alphas": {"min": 1e-2, "max": 1e6, "count": 17},
                        "feature_sets": {"g0": {"generations": 0},
                                         "cs": {"features": "init+cs+drcs", "generations": 0}}})
    cfg = config.parse(text)
    ctx, store, names = _copy_into_store(tiny_run, cfg, tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fits, train, test = fit_propensity(ctx, cfg, store, names, 2)
            mse_cfg = config.parse(mutate_yaml(text, ("fits", "cv_score"), "mse"))
            mse_fits, _, _ = fit_propensity(ctx, mse_cfg, store, names, 2)
        assert list(train) == [0, 2, 4] and list(test) == [1, 3]
        grid = np.logspace(-2, 6, 17)
        T = cfg.replica_steps().size
        differs = 0
        for name, fset in cfg.fits.feature_sets.items():
            layout, _ = feature_layout(fset, names)
            for sp in (0, 1):
                X, Y, G = feature_rows(layout, {}, train, sp, T, store)
                folds = assign_folds(train, 3, cfg.seed)
                chosen = fits[name].alpha[sp]
                score = _brute_force_scores(X, Y, G, folds, train, np.r_[grid, np.unique(chosen)])
                on_grid, at_chosen = score[:grid.size], score[grid.size:]
                for t in range(T):
                    got = at_chosen[np.searchsorted(np.unique(chosen), chosen[t]), t]
                    # the chosen α is at least as good as every α of the configured grid ...
                    assert got >= on_grid[:, t].max() - 1e-9, (name, sp, t)
                    # ... and it is the brute-force argmax whenever it lies inside the grid
                    if grid[0] <= chosen[t] <= grid[-1]:
                        assert np.isclose(chosen[t], grid[np.argmax(on_grid[:, t])], rtol=1e-9)
                differs += int(np.sum(chosen != mse_fits[name].alpha[sp]))
        assert differs > 0    # the criterion changes the choice somewhere on these data
    finally:
        store.close()


# -- config: the new keys are refused clearly ------------------------------------------------------

@pytest.mark.parametrize("fits, key, words", [
    ({"cv_score": "r2"}, "fits.cv_score", ["mse", "pearson"]),
    ({"test_snapshots": [7]}, "fits.test_snapshots[0]", ["0..4"]),
    ({"test_snapshots": [1, 1]}, "fits.test_snapshots[1]", ["twice"]),
    ({"test_snapshots": [1], "train_snapshots": [0, 2, 3, 4]}, "fits.train_snapshots", ["not both"]),
    ({"test_snapshots": [1], "test_fraction": 0.25}, "fits.test_fraction", ["not both"]),
    ({"test_snapshots": ["snap_1.data"]}, "fits.test_snapshots[0]", ["simulated"]),
    ({"train_snapshots": [0, 1, 2, 3, 4]}, "fits.train_snapshots", ["no held-out"]),
    ({"train_snapshots": [0, 1]}, "fits.cv_folds", ["fits.train_snapshots"]),
    ({"test_snapshots": [True]}, "fits.test_snapshots[0]", ["index"]),
])
def test_split_and_score_keys_refused(tiny_yaml, fits, key, words):
    data = yaml.safe_load(tiny_yaml("x.h5"))
    data["fits"].pop("test_fraction")
    data["fits"].update(fits)
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == key
    assert all(w in err.value.message for w in words), err.value.message


def test_split_by_file_names_in_natural_order(tiny_yaml, tmp_path):
    folder = tmp_path / "snaps"
    folder.mkdir()
    for i in range(1, 11):                     # listing only: parse does not read the files
        (folder / f"snap_{i}.data").write_text("")
    data = yaml.safe_load(tiny_yaml("x.h5"))
    data["snapshots"] = {"source": "files", "path": str(folder), "type_map": {1: "A", 2: "B"}}
    data["fits"].pop("test_fraction")
    data["fits"]["test_snapshots"] = ["snap_10.data", str(folder / "snap_2.data"), 0]
    train, test = config.parse(yaml.safe_dump(data)).fit_split()
    assert list(test) == [0, 1, 9] and list(train) == [2, 3, 4, 5, 6, 7, 8]
    data["fits"]["test_snapshots"] = ["snap_11.data"]
    with pytest.raises(config.ConfigError) as err:
        config.parse(yaml.safe_dump(data))
    assert err.value.key == "fits.test_snapshots[0]" and "snap_11.data" in err.value.message


def test_default_split_unchanged(tiny_yaml):
    from glasshpc.learn.ridge import split_snapshots

    cfg = config.parse(tiny_yaml("x.h5"))
    tr, te = cfg.fit_split()
    tr0, te0 = split_snapshots(np.arange(5), 1 / 5, cfg.seed)
    assert np.array_equal(tr, tr0) and np.array_equal(te, te0)
    assert cfg.fits.cv_score == "mse"


def test_dynamical_block_needs_opt_in_and_a_near_time(tiny_yaml):
    text = tiny_yaml("x.h5")
    bad = mutate_yaml(text, ("fits", "feature_sets"), {"mix": {"features": "init+dw", "generations": 1}})
    with pytest.raises(config.ConfigError) as err:
        config.parse(bad)
    assert err.value.key == "fits.feature_sets.mix.features"
    assert all(w in err.value.message for w in ("'dw'", "'mix'", "allow_dynamical: true"))
    ok = mutate_yaml(text, ("fits", "feature_sets"),
                     {"mix": {"features": "init+dw", "generations": 1, "allow_dynamical": True}})
    config.parse(ok)
    far = mutate_yaml(ok, ("iso", "times"), {"start": 0.01, "stop": 0.3, "count": 5})
    with pytest.raises(config.ConfigError) as err:
        config.parse(far)
    assert err.value.key == "fits.feature_sets.mix.features"
    assert "near 1 τ" in err.value.message and "0.3 τ" in err.value.message


def test_grid_warning_names_set_species_times_and_the_far_end():
    """Pure-noise CV curve falling towards large α: the rule extends the grid, and the final
    choice is the far end of the extended grid (an intercept-only model) — said with names."""
    from glasshpc.learn.ridge import AlphaPath, _warn_grid

    path = AlphaPath(np.logspace(-2, 2, 9), max_extensions=2)
    times = np.array([0.5, 2.0])

    def cv(a):          # t = 0.5: interior optimum at α = 1; t = 2: decreasing for ever
        return np.stack([(np.log10(a)) ** 2, 1.0 / (1.0 + a)], axis=1)
    alphas, _, best, extended, edge = path.choose(cv)
    assert extended and edge == "high" and best[1] == alphas.size - 1
    with pytest.warns(RuntimeWarning) as rec:
        _warn_grid(extended, edge, alphas, path.max_extensions, where="feature set 'g1', species B",
                   best=best, times=times, grid=path.alphas)
    text = " | ".join(str(w.message) for w in rec)
    assert "feature set 'g1', species B" in text and "t = 2 τ" in text
    assert "far end of the extended grid" in text and "intercept-only" in text
    assert f"{alphas[-1]:.3g}" in text and "after 2 extension(s)" in text
    assert "t = 0.5" not in text
