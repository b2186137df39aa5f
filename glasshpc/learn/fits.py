"""The fit stage: ridge regression of propensity on descriptors, per feature set, species and time.

Reduced LJ units. SCIENCE.md §5: α by cross-validation grouped by snapshot, quality = Pearson ρ(t)
between predicted and measured propensity on held-out snapshots. Rows are distributed over ranks
by snapshot; :class:`GroupedRidgeCV` sums Gram matrices with Allreduce, so the result is that of a
fit on all rows whatever the rank count. All T times of one species share one Gram matrix.
"""
from dataclasses import dataclass

import numpy as np

from .ridge import GroupedRidgeCV, pearson, r2_score, split_snapshots


@dataclass
class FitResult:
    """Per feature set. Arrays: pearson, r2, alpha (n_species, T); coef (n_species, T, F);
    intercept (n_species, T); grid_extended (n_species,) bool; columns (F,) int feature indices."""
    pearson: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    grid_extended: np.ndarray
    columns: np.ndarray


def feature_columns(fset, n_base):
    """Column indices of a feature set: generations 0..fset.generations of ``n_base`` features."""
    return np.arange((fset.generations + 1) * n_base)


def fit_propensity(ctx, cfg, store, n_base):
    """Collective. Returns ({feature set name: FitResult}, train ids, test ids)."""
    S = cfg.snapshots.count
    train, test = split_snapshots(np.arange(S), cfg.test_snapshots() / S, cfg.seed)
    mine = ctx.mine(list(range(S)))
    data = {s: (store.read("descriptors/init", (s,)), store.read("propensity", (s,)),
                store.read("snapshots/types", (s,))) for s in mine}
    g = cfg.fits.alphas
    alphas = np.logspace(np.log10(g.min), np.log10(g.max), g.count)
    n_species = int(max(int(d[2].max()) for d in data.values()) + 1) if data else 0
    n_species = ctx.comm.allreduce(n_species, op=_max())
    results = {}
    for name, fset in cfg.fits.feature_sets.items():
        cols = feature_columns(fset, n_base)
        T = cfg.replica_steps().size
        res = FitResult(*(np.full((n_species, T), np.nan) for _ in range(3)),
                        np.zeros((n_species, T, cols.size)), np.zeros((n_species, T)),
                        np.zeros(n_species, bool), cols)
        for sp in range(n_species):
            def rows(ids):
                xs, ys, gs = [], [], []
                for s in ids:
                    if s in data:
                        x, p, t = data[s]
                        m = t == sp
                        xs.append(x[m][:, cols])
                        ys.append(p[:, m].T)
                        gs.append(np.full(m.sum(), s))
                if not xs:
                    return (np.empty((0, cols.size)), np.empty((0, T)), np.empty(0, np.int64))
                return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)

            Xtr, Ytr, Gtr = rows(train)
            model = GroupedRidgeCV(alphas=alphas, n_splits=cfg.fits.cv_folds, seed=cfg.seed,
                                   comm=ctx.comm).fit(Xtr, Ytr, Gtr)
            Xte, Yte, _ = rows(test)
            pred = model.predict(Xte) if len(Xte) else np.empty((0, T))
            res.pearson[sp] = pearson(Yte, pred, comm=ctx.comm)
            res.r2[sp] = r2_score(Yte, pred, comm=ctx.comm)
            res.alpha[sp] = model.alpha_
            res.coef[sp] = model.coef_
            res.intercept[sp] = model.intercept_
            res.grid_extended[sp] = model.grid_extended_
        results[name] = res
    return results, train, test


def _max():
    from mpi4py import MPI
    return MPI.MAX
