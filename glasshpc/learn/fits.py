"""The fit stage: ridge regression of propensity on named feature sets, per species and time.

Reduced LJ units. SCIENCE.md §5: α by cross-validation grouped by snapshot, quality = Pearson ρ(t)
between predicted and measured propensity on held-out snapshots. A feature set joins blocks with
'+' ([CAGE] Figs. 3 and 5): descriptor blocks ``init``, ``is``, ``cs`` (X^init, X^IS, X^CS,
generations 0..n each) and per-particle scalars ``drcs`` (Δr^CS), ``dris`` (Δr^IS), ``fnet``
(|F^net| at t = 0), ``energy`` (potential energy at t = 0), ``dw`` (local Debye–Waller factor,
[DW]).

Rows are distributed over ranks by snapshot; :class:`GroupedRidgeCV` sums Gram matrices with
Allreduce, so the result is that of a fit on all rows whatever the rank count. All T times of one
species share one Gram matrix.
"""
from dataclasses import dataclass, field

import numpy as np

from ..config import DESCRIPTOR_BLOCKS
from ..parallel import task_rng
from .mlp import mlp_for_fit
from .ridge import GroupedRidgeCV, pearson, r2_score, split_snapshots
from .selection import selection_for_fit

# the per-particle scalar features and the datasets holding them
SCALAR_SOURCES = {"drcs": "states/cage/displacement", "dris": "states/inherent/displacement",
                  "fnet": "snapshots/net_force", "energy": "snapshots/energy",
                  "dw": "dynamics/debye_waller"}


@dataclass
class FitResult:
    """Per feature set. Arrays: pearson, r2, alpha (n_species, T); coef (n_species, T, F) in the
    order of ``feature_names`` (F,); intercept (n_species, T); grid_extended (n_species,) bool.
    With ``fits.selection``: ``selection`` [SelectionResult per species]; with ``fits.mlp``:
    ``mlp_pearson``, ``mlp_r2`` (n_species, T) of the MLP baseline on the same split."""
    pearson: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    grid_extended: np.ndarray
    feature_names: list
    selection: list = field(default_factory=list)
    mlp_pearson: np.ndarray = None
    mlp_r2: np.ndarray = None


def feature_layout(fset, descriptor_names):
    """[(block, columns or None)] and the feature names of a set; descriptor blocks take the
    columns of generations 0..fset.generations (``descriptor_names`` lists all columns, generation
    by generation, as :meth:`DescriptorSpec.feature_names`)."""
    n_base = sum(1 for n in descriptor_names if not n.startswith("gen"))
    cols = np.arange((fset.generations + 1) * n_base)
    parts, names = [], []
    for block in fset.blocks:
        if block in DESCRIPTOR_BLOCKS:
            parts.append((block, cols))
            names += [f"{block}:{descriptor_names[c]}" for c in cols]
        else:
            parts.append((block, None))
            names.append(block)
    return parts, names


def _rows(parts, data, ids, species, T):
    xs, ys, gs = [], [], []
    for s in ids:
        if s not in data:
            continue
        d = data[s]
        m = d["types"] == species
        blocks = [d[b][m][:, c] if c is not None else d[b][m][:, None] for b, c in parts]
        xs.append(np.concatenate(blocks, axis=1))
        ys.append(d["propensity"][:, m].T)
        gs.append(np.full(m.sum(), s))
    if not xs:
        n_cols = sum(c.size if c is not None else 1 for _, c in parts)
        return np.empty((0, n_cols)), np.empty((0, T)), np.empty(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit_propensity(ctx, cfg, store, descriptor_names, n_species):
    """Collective. Ridge fit of every feature set in ``cfg.fits.feature_sets``.

    Returns ({feature set name: FitResult}, train snapshot ids, test snapshot ids)."""
    S = cfg.snapshots.count
    T = cfg.replica_steps().size
    train, test = split_snapshots(np.arange(S), cfg.test_snapshots() / S, cfg.seed)
    needed = {b for fs in cfg.fits.feature_sets.values() for b in fs.blocks}
    data = {}
    for s in ctx.mine(list(range(S))):
        d = {"types": store.read("snapshots/types", (s,)), "propensity": store.read("propensity", (s,))}
        for b in needed:
            d[b] = store.read(f"descriptors/{b}" if b in DESCRIPTOR_BLOCKS else SCALAR_SOURCES[b], (s,))
        data[s] = d
    g = cfg.fits.alphas
    alphas = np.logspace(np.log10(g.min), np.log10(g.max), g.count)
    results = {}
    for k_set, (name, fset) in enumerate(cfg.fits.feature_sets.items()):
        parts, names = feature_layout(fset, descriptor_names)
        F = len(names)
        res = FitResult(*(np.full((n_species, T), np.nan) for _ in range(3)),
                        np.zeros((n_species, T, F)), np.zeros((n_species, T)),
                        np.zeros(n_species, bool), names)
        for sp in range(n_species):
            Xtr, Ytr, Gtr = _rows(parts, data, train, sp, T)
            model = GroupedRidgeCV(alphas=alphas, n_splits=cfg.fits.cv_folds, seed=cfg.seed,
                                   comm=ctx.comm).fit(Xtr, Ytr, Gtr)
            Xte, Yte, _ = _rows(parts, data, test, sp, T)
            pred = model.predict(Xte) if len(Xte) else np.empty((0, T))
            res.pearson[sp] = pearson(Yte, pred, comm=ctx.comm)
            res.r2[sp] = r2_score(Yte, pred, comm=ctx.comm)
            res.alpha[sp] = model.alpha_
            res.coef[sp] = model.coef_
            res.intercept[sp] = model.intercept_
            res.grid_extended[sp] = model.grid_extended_
            if cfg.fits.selection.method != "none":   # [AVG] forward / [SOFT] RFE, collective
                res.selection.append(selection_for_fit(
                    ctx, Xtr, Ytr, Gtr, Xte, Yte, names, cfg.fits.selection.method,
                    cfg.fits.selection.max_features, model.alpha_))
            seed = int(task_rng(cfg.seed, "mlp", k_set, sp).integers(2 ** 31))
            mlp = mlp_for_fit(ctx, Xtr, Ytr, Gtr, Xte, Yte, cfg.fits.mlp, seed)
            if mlp is not None:
                if res.mlp_pearson is None:
                    res.mlp_pearson = np.full((n_species, T), np.nan)
                    res.mlp_r2 = np.full((n_species, T), np.nan)
                res.mlp_pearson[sp], res.mlp_r2[sp] = mlp.pearson, mlp.r2
        results[name] = res
    return results, train, test


def single_variable_pearson(ctx, cfg, store, n_species):
    """Collective. Pearson ρ(t) of each available per-particle scalar (Δr^CS, Δr^IS, |F^net|,
    energy, Debye–Waller factor) with the propensity, per species, over all snapshots — no fit
    ([CAGE] Figs. 2, 5; [DW]).

    Returns {scalar name: (n_species, T) float64}."""
    available = ["fnet", "energy", "dw"]
    if cfg.inherent.enabled:
        available.insert(0, "dris")
    if cfg.cage.enabled:
        available.insert(0, "drcs")
    T = cfg.replica_steps().size
    mine = ctx.mine(list(range(cfg.snapshots.count)))
    types = {s: store.read("snapshots/types", (s,)) for s in mine}
    prop = {s: store.read("propensity", (s,)) for s in mine}
    out = {}
    for name in available:
        value = {s: store.read(SCALAR_SOURCES[name], (s,)) for s in mine}
        rho = np.full((n_species, T), np.nan)
        for sp in range(n_species):
            ys = [prop[s][:, types[s] == sp].T for s in mine] or [np.empty((0, T))]
            xs = [value[s][types[s] == sp] for s in mine] or [np.empty(0)]
            y = np.concatenate(ys)
            x = np.repeat(np.concatenate(xs)[:, None], T, axis=1)
            rho[sp] = pearson(y, x, comm=ctx.comm)
        out[name] = rho
    return out
