"""Non-linear baseline: a small multilayer perceptron on the same train/held-out snapshots as the ridge fits.

[CMP] Sec. II.D and [DW] §2.3 (SCIENCE.md §5): 2–3 hidden layers of 16 ReLU units with an L2 penalty; like [DW]
one network predicts all T times at once. scikit-learn's ``MLPRegressor`` (Adam) is used; it has no dropout, so
regularisation is the L2 term only. Propensity in σ_AA (reduced LJ units); features and targets are standardised
with the training rows' mean and population std (SCIENCE.md §4) before training.

Parallel layout: the network is small and training is sequential, so the training rows (at most ``max_rows``, a
deterministic subsample drawn per snapshot from ``seed`` and the snapshot id) are gathered in snapshot order,
rank 0 trains, and the fitted network is broadcast; every rank then predicts its own held-out rows and ρ, R² are
summed over ranks.  In the fit stage (:mod:`glasshpc.learn.fits`) one (feature set, species) is one task: its
rank reads every row from the store and calls :func:`mlp_baseline` with ``comm=None``, so the result is bitwise
the same on any rank count.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .ridge import _allreduce, pearson, r2_score

__all__ = ["MLPResult", "mlp_baseline"]


@dataclass
class MLPResult:
    """pearson, r2 : (T,) held-out Pearson ρ and R² per time; n_train : rows used for training;
    n_iter : Adam epochs run; hidden : hidden layer sizes."""
    pearson: np.ndarray
    r2: np.ndarray
    n_train: int
    n_iter: int
    hidden: tuple


def _subsample(groups, n_total, max_rows, seed):
    """Boolean mask of the rows kept: within snapshot g, rows whose uniform draw (stream (seed, g)) < max_rows/n."""
    frac = min(1.0, max_rows / max(n_total, 1))
    keep = np.ones(groups.size, bool)
    if frac >= 1.0:
        return keep
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        u = np.random.default_rng([int(seed), int(g)]).random(rows.size)
        keep[rows] = u < frac
    return keep


def mlp_baseline(X_train, Y_train, groups_train, X_test, Y_test, *, layers=2, width=16, l2=1e-3, max_iter=300,
                 max_rows=100_000, seed=0, comm=None):
    """Train an MLP on the training snapshots and score it on the held-out ones (collective over ``comm``).

    Parameters
    ----------
    X_train : (n_tr, F) this rank's training rows; Y_train : (n_tr,) or (n_tr, T) propensities (σ_AA);
    groups_train : (n_tr,) int snapshot id of each training row (rows of one snapshot must sit on one rank, in a
        fixed order — as the pipeline distributes them);
    X_test, Y_test : this rank's held-out rows;
    layers : 1..3 hidden layers of ``width`` ReLU units; l2 : L2 penalty (MLPRegressor ``alpha``);
    max_iter : Adam epochs; max_rows : cap on the gathered training rows; seed : weights, shuffling, subsample.

    Returns
    -------
    :class:`MLPResult`, identical on every rank.

    Raises ValueError for mismatched shapes, non-finite data, layers outside 1..3, or no training rows.
    """
    if not 1 <= int(layers) <= 3:
        raise ValueError(f"layers must be 1, 2 or 3, got {layers}")
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    Ytr = np.asarray(Y_train, dtype=np.float64)
    Yte = np.asarray(Y_test, dtype=np.float64)
    squeeze = Ytr.ndim == 1
    Ytr = Ytr[:, None] if squeeze else Ytr
    Yte = Yte[:, None] if Yte.ndim == 1 else Yte
    groups_train = np.asarray(groups_train).ravel()
    if X_train.shape[0] != Ytr.shape[0] or groups_train.size != X_train.shape[0]:
        raise ValueError("X_train, Y_train and groups_train disagree on the number of rows")
    if X_test.shape[0] != Yte.shape[0]:
        raise ValueError("X_test and Y_test disagree on the number of rows")
    F, T = X_train.shape[1], Ytr.shape[1]
    if X_test.shape[1] != F or Yte.shape[1] != T:
        raise ValueError(f"test data must have {F} features and {T} targets")
    tot = _allreduce(comm, np.concatenate([[X_train.shape[0]], X_train.sum(0), Ytr.sum(0)]))
    if not np.all(np.isfinite(tot)):
        raise ValueError("X_train or Y_train contains NaN or inf")
    n = int(tot[0])
    if n < 2:
        raise ValueError("need at least two training rows")
    mx, my = tot[1:F + 1] / n, tot[F + 1:] / n
    sq = _allreduce(comm, np.concatenate([((X_train - mx) ** 2).sum(0), ((Ytr - my) ** 2).sum(0)]))
    sx, sy = np.sqrt(sq[:F] / n), np.sqrt(sq[F:] / n)
    sx[sx == 0] = 1.0
    sy[sy == 0] = 1.0

    keep = _subsample(groups_train, n, max_rows, seed)
    part = (groups_train[keep], (X_train[keep] - mx) / sx, (Ytr[keep] - my) / sy)
    parts = [part] if comm is None else comm.gather(part, root=0)
    model = None
    n_used = 0
    if comm is None or comm.Get_rank() == 0:
        g = np.concatenate([p[0] for p in parts])
        order = np.argsort(g, kind="stable")  # snapshot order, whatever the rank layout
        Z = np.concatenate([p[1] for p in parts])[order]
        U = np.concatenate([p[2] for p in parts])[order]
        n_used = Z.shape[0]
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        model = MLPRegressor(hidden_layer_sizes=(int(width),) * int(layers), activation="relu", alpha=float(l2),
                             solver="adam", max_iter=int(max_iter), random_state=int(seed) % 2**32,
                             early_stopping=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Z, U[:, 0] if T == 1 else U)
    if comm is not None:
        model, n_used = comm.bcast((model, n_used), root=0)
    pred = model.predict((X_test - mx) / sx).reshape(X_test.shape[0], T) * sy + my if X_test.shape[0] \
        else np.empty((0, T))
    return MLPResult(pearson(Yte, pred, comm=comm), r2_score(Yte, pred, comm=comm), int(n_used),
                     int(model.n_iter_), tuple(model.hidden_layer_sizes))
