"""Transferability across state points ([SOFT], [DW]): the ridge models of every feature set trained
at one state point (``fits.train_state_point: k``) applied to the structure of every state point.

Reduced LJ units. For state point j the model of species s and read-out index t (coefficients in
original feature units, learn/fits.py) predicts the propensity of j's particles of species s at j's
read-out t; the quality is the Pearson ρ pooled over the particles of j's snapshots that the model
never saw (all of them for j ≠ k, the held-out ones for j = k, which gives /fits/<set>/pearson of k
again). Sums are exact over snapshots and ranks (learn.ridge.pearson_r2 with groups): bitwise on any
rank count. The read-out index pairs the times, so every state point needs as many read-outs
(config check); choosing each state point's iso.times as the same multiples of its τ_α pairs
equivalent times.
"""
import numpy as np

from .fits import feature_layout, feature_rows, predict_rows, read_snapshot
from .ridge import pearson_r2


def transfer_pearson(ctx, points, views, fits, descriptor_names, n_species, train_point, tests):
    """Collective. {feature set: (P, n_species, T) float64} held-out Pearson ρ(t) at every state
    point of the models trained at ``train_point`` (``fits``: {set: FitResult} of that state point;
    ``views``: each point's store view; ``tests``: each point's held-out snapshot ids)."""
    cfg = points[train_point].cfg
    T = cfg.replica_steps().size
    sets = list(cfg.fits.feature_sets.items())
    needed = {b for _, fs in sets for b in fs.blocks}
    out = {name: np.full((len(points), n_species, T), np.nan) for name, _ in sets}
    for j, (p, view) in enumerate(zip(points, views)):
        ids = (list(tests[j]) if j == train_point else list(range(p.cfg.snapshots.count)))
        mine = ctx.mine([int(s) for s in ids])
        data = {s: read_snapshot(view, s, needed) for s in mine}
        for name, fset in sets:
            parts, _ = feature_layout(fset, descriptor_names)
            res = fits[name]
            for sp in range(n_species):
                X, Y, G = feature_rows(parts, data, mine, sp, T)
                pred = predict_rows(X, G, res.coef[sp], res.intercept[sp])
                out[name][j, sp] = pearson_r2(Y, pred, comm=ctx.comm, groups=G)[0]
    return out
