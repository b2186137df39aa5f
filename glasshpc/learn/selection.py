"""Feature selection on the Gram matrices: greedy forward selection ([AVG]) and recursive feature elimination
([SOFT]), rows distributed over MPI ranks.

Reduced LJ units are irrelevant here (features are standardised); the target is e.g. the propensity (σ_AA).

Everything follows from sufficient statistics (per-snapshot sums combined exactly, as in
:mod:`glasshpc.learn.ridge`: with snapshot ids the result is bitwise independent of the split over ranks), so no
model is ever refitted on the rows:

* training rows: mean, population std (standardisation, SCIENCE.md §4), standardised Gram ``G = ZᵀZ`` and
  ``b = Zᵀ(y − ȳ)`` (F × F and F × T);
* held-out rows: the same sums re-centred at the *training* means, so the held-out Pearson ρ and R² of a ridge
  model on any feature subset S with coefficients ``w_S`` follow from ``w_Sᵀ C_SS w_S`` etc. (SCIENCE.md §5: held out
  by snapshot).

Greedy forward selection ([AVG], following the scheme of its Ref. 29): at each step add the feature that most
increases the training-set fit of the ridge model, i.e. the explained sum of squares ``b_Sᵀ (G_SS + αI)⁻¹ b_S``
(for α → 0 this is R² = the squared linear correlation of the fit with the target). With the Cholesky factor of
``G_SS + αI`` grown one row at a time, the gain of every candidate j is ``t_j² / d_j`` with
``d_j = G_jj + α − ‖Q_{:,j}‖²`` and ``t_j = b_j − Q_{:,j}·c`` (``Q = L⁻¹ G_{S,:}``, ``c = L⁻¹ b_S``): O(F) per
candidate and step, O(K² F) for K steps, instead of K·F refits.

Recursive feature elimination ([SOFT] §3.4, as ``sklearn.feature_selection.RFE(Ridge(α), step=1)``): fit on the
surviving set, drop the feature with the smallest |coefficient| (standardised units), repeat. The inverse
``M = (G_SS + αI)⁻¹`` is downdated exactly after each removal, ``M' = M_{−j,−j} − M_{−j,j} M_{j,−j} / M_jj`` and
``w' = w_{−j} − M_{−j,j} w_j / M_jj``: O(k²) per step, O(F³/3) in all.

Penalty convention as in :mod:`glasshpc.learn.ridge` (sklearn's): ``(G_SS + αI) w = b_S`` on standardised features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ridge import _allreduce, _Rows, binned_stats, frame, frame_for

__all__ = ["SelectionResult", "select_features", "write_selection", "Problem", "select_one"]


@dataclass
class SelectionResult:
    """Result of :func:`select_features` for T targets.

    order : (T, K) int64 — feature (column) indices, most important first: the forward selection order, or for
        RFE the reverse elimination order (order[t, 0] survived longest). K = min(max_features, usable features)
        for forward; all usable (non-constant) features for RFE.
    rho : (T, K) float64 — held-out Pearson ρ of the ridge fit on the first k+1 features order[t, :k+1].
    r2 : (T, K) float64 — held-out R² of the same fits.
    train_rho : (T, K) float64 — training-set correlation of the same fits (what forward selection maximises).
    names : list of T lists of K str (when feature names were given) else None.
    method : 'forward' or 'rfe'; alpha : (T,) penalties used.
    """
    order: np.ndarray
    rho: np.ndarray
    r2: np.ndarray
    train_rho: np.ndarray
    names: list
    method: str
    alpha: np.ndarray


# ------------------------------------------------------------------------------------------------ statistics

class Problem:
    """Standardised training statistics and held-out statistics (re-centred at the training means), from the
    sufficient statistics ``tr`` (training rows) and ``te`` (held-out rows), both :class:`ridge._Stats` in the
    shifted coordinates of ``fr`` (:class:`ridge.Frame`).  Raises ValueError for fewer than two rows on
    either side."""

    def __init__(self, tr, te, fr):
        n = tr.n
        if n < 2:
            raise ValueError("need at least two training rows")
        F, T = tr.x.size, tr.y.size
        d, dy = tr.x / n, tr.y / n                       # training mean − shift
        mx, my = fr.sx + d, fr.sy + dy
        gc = tr.xx - np.outer(tr.x, tr.x) / n
        gc = 0.5 * (gc + gc.T)
        var = np.clip(np.diag(gc) / n, 0.0, None)
        scale = np.sqrt(var)
        self.usable = scale > 1e-12 * np.maximum(1.0, np.abs(mx))
        scale[~self.usable] = 1.0
        self.mean, self.scale, self.ymean = mx, scale, my
        self.G = gc / np.outer(scale, scale)
        self.b = (tr.xy - np.outer(tr.x, tr.y) / n) / scale[:, None]
        self.yy = tr.yy - tr.y * tr.y / n
        self.n = n
        # held-out sums with z = (x − m)/s and u = y − ȳ_train: re-centre from the shift to the training mean
        nt = te.n
        if nt < 2:
            raise ValueError("need at least two held-out rows")
        self.nt = nt
        t_x, t_y = te.x - nt * d, te.y - nt * dy
        t_xx = te.xx - np.outer(te.x, d) - np.outer(d, te.x) + nt * np.outer(d, d)
        t_xy = te.xy - np.outer(te.x, dy) - np.outer(d, te.y) + nt * np.outer(d, dy)
        t_yy = te.yy - 2.0 * dy * te.y + nt * dy * dy
        A = t_xx / np.outer(scale, scale)
        self.A, self.a, self.zs, self.us, self.uu = 0.5 * (A + A.T), t_xy / scale[:, None], t_x / scale, t_y, t_yy
        self.T = T
        self.F = F

    def n_steps(self, method, max_features):
        """K, the number of ranked features: all usable for rfe (or no cap), else min(max_features, usable)."""
        n_use = int(self.usable.sum())
        return n_use if (method == "rfe" or max_features is None) else min(int(max_features), n_use)

    def scores(self, w, t):
        """Held-out (ρ, R²) and training correlation of the full-length coefficient vector w (zeros outside the
        subset), target t. Two dense mat-vecs, no sub-matrix copies."""
        Aw = self.A @ w
        nt = self.nt
        zw = self.zs @ w
        wAw = w @ Aw
        wa = w @ self.a[:, t]
        Cww = wAw - zw * zw / nt
        Cwy = wa - zw * self.us[t] / nt
        Cyy = self.uu[t] - self.us[t] ** 2 / nt
        rho = Cwy / np.sqrt(Cww * Cyy) if Cww > 0 and Cyy > 0 else np.nan
        sse = self.uu[t] - 2.0 * wa + wAw
        r2 = 1.0 - sse / Cyy if Cyy > 0 else np.nan
        pp = w @ (self.G @ w)
        tr = (w @ self.b[:, t]) / np.sqrt(pp * self.yy[t]) if pp > 0 and self.yy[t] > 0 else np.nan
        return rho, r2, tr


def _problem(X_train, Y_train, X_test, Y_test, comm, groups_train=None, groups_test=None):
    Xtr, Xte = np.asarray(X_train), np.asarray(X_test)
    Ytr = _as2d(Y_train)
    Yte = _as2d(Y_test)
    F = Xtr.shape[1]
    dims = _allreduce(comm, np.array([F, Ytr.shape[1], Xte.shape[1], Yte.shape[1]], np.int64), op="max")
    mins = _allreduce(comm, np.array([F, Ytr.shape[1], Xte.shape[1], Yte.shape[1]], np.int64), op="min")
    if not (np.all(dims == mins) and dims[0] == dims[2] and dims[1] == dims[3]):
        raise ValueError("X_train/X_test (features) or Y_train/Y_test (targets) disagree in width, or ranks "
                         "disagree")
    if Xtr.shape[0] != Ytr.shape[0] or Xte.shape[0] != Yte.shape[0]:
        raise ValueError("X and Y must have the same number of rows")
    rows_tr, rows_te = _Rows(Xtr, Ytr, groups_train), _Rows(Xte, Yte, groups_test)
    try:
        fr = frame(comm, rows_tr)
        fr_te = frame_for(comm, fr, rows_te)
    except ValueError as err:
        raise ValueError(f"X_train/Y_train or X_test/Y_test: {err}") from None
    tr = binned_stats(comm, rows_tr, lambda g: 0, 1, fr)[0]
    te = binned_stats(comm, rows_te, lambda g: 0, 1, fr_te)[0]
    return Problem(tr, te, fr)


def _as2d(Y):
    Y = np.asarray(Y, dtype=np.float64)
    return Y[:, None] if Y.ndim == 1 else Y


# ------------------------------------------------------------------------------------------------ the two methods

def _forward(G, b, alpha, usable, K):
    """Greedy forward selection order (K,) maximising the training fit (incremental Cholesky of G_SS + αI)."""
    F = G.shape[0]
    Q = np.zeros((K, F))
    c = np.zeros(K)
    d = np.diag(G) + alpha  # d_j = G_jj + α − ‖Q[:k, j]‖²
    t = b.copy()            # t_j = b_j − Q[:k, j]·c[:k]
    free = usable.copy()
    order = np.empty(K, np.int64)
    tiny = 1e-12 * max(1.0, float(np.max(np.diag(G))) + alpha)
    for k in range(K):
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(free & (d > tiny), t * t / d, -np.inf)
        j = int(np.argmax(gain))
        if not np.isfinite(gain[j]):
            return order[:k]
        order[k] = j
        free[j] = False
        sd = np.sqrt(d[j])
        row = G[j].copy()
        row[j] += alpha
        row -= Q[:k, j] @ Q[:k]
        Q[k] = row / sd
        c[k] = t[j] / sd
        d -= Q[k] * Q[k]
        t -= Q[k] * c[k]
    return order


def _rfe(G, b, alpha, usable, prob, t):
    """RFE with ridge by exact inverse downdates. Returns the elimination order (first eliminated first) and the
    scores (ρ, R², training ρ) at every size k (index k − 1).

    M = (G_SS + αI)⁻¹ is kept full-size (F × F, Fortran order) with zero rows/columns for removed features; the
    downdate is one in-place BLAS rank-1 update (dger), which also zeroes row and column p.
    """
    from scipy.linalg.blas import dger

    F = G.shape[0]
    act = np.flatnonzero(usable)
    M = np.zeros((F, F), order="F")
    M[np.ix_(act, act)] = np.linalg.inv(G[np.ix_(act, act)] + alpha * np.eye(act.size))
    M = np.asfortranarray(0.5 * (M + M.T))
    w = M @ b
    alive = usable.copy()
    out = []
    sc = np.full((act.size, 3), np.nan)
    for k in range(act.size, 0, -1):
        sc[k - 1] = prob.scores(w, t)
        p = int(np.argmin(np.where(alive, np.abs(w), np.inf)))
        out.append(p)
        mj = M[:, p].copy()
        mpp = mj[p]
        w -= mj * (w[p] / mpp)
        M = dger(-1.0 / mpp, mj, mj, a=M, overwrite_a=True)
        M[p, :] = 0.0
        M[:, p] = 0.0
        w[p] = 0.0
        alive[p] = False
    return np.asarray(out, np.int64), sc


def select_features(X_train, Y_train, X_test, Y_test, *, method="forward", alpha=1e-3, max_features=None,
                    names=None, comm=None, groups_train=None, groups_test=None):
    """Rank features by greedy forward selection ([AVG]) or recursive feature elimination ([SOFT]) and report the
    held-out ρ vs the number of features, all from Gram sub-matrices (collective over ``comm``).

    Parameters
    ----------
    X_train : (n_tr, F) array, this rank's training rows; Y_train : (n_tr,) or (n_tr, T) targets.
    X_test : (n_te, F), Y_test : (n_te,) or (n_te, T): this rank's held-out rows (other snapshots).
    method : 'forward' | 'rfe'.
    alpha : float or (T,) array, ridge penalty on the standardised features (sklearn convention; e.g. the
        ``alpha_`` chosen by :class:`~glasshpc.learn.ridge.GroupedRidgeCV`).
    max_features : int or None — forward: stop after this many; rfe: ignored (the full ranking costs O(F³)).
    names : sequence of F str or None.
    comm : mpi4py communicator or None (serial).
    groups_train, groups_test : (n,) snapshot ids of the rows, or None.  With ids the result is bitwise
        independent of how whole snapshots are split over ranks.

    Returns
    -------
    :class:`SelectionResult` (identical on every rank).

    Raises
    ------
    ValueError for an unknown method, mismatched shapes, non-finite data, fewer than two rows on either side,
    negative alpha or max_features < 1.
    """
    if method not in ("forward", "rfe"):
        raise ValueError(f"method must be 'forward' or 'rfe', got {method!r}")
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    if X_train.ndim != 2 or X_test.ndim != 2:
        raise ValueError("X_train and X_test must be 2-D")
    prob = _problem(X_train, Y_train, X_test, Y_test, comm, groups_train, groups_test)
    T, F = prob.T, prob.F
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (T,)).copy()
    if np.any(alphas < 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    if names is not None and len(names) != F:
        raise ValueError(f"names has {len(names)} entries for {F} features")
    if max_features is not None and max_features < 1:
        raise ValueError(f"max_features must be >= 1, got {max_features}")
    K = prob.n_steps(method, max_features)
    rows = [select_one(prob, method, alphas[t], K, t) for t in range(T)]
    order, rho, r2, trr = (np.stack([r[i] for r in rows]) if rows else np.empty((0, K)) for i in range(4))
    nm = None if names is None else [[str(names[j]) for j in row if j >= 0] for row in order]
    return SelectionResult(order.astype(np.int64), rho, r2, trr, nm, method, alphas)


def select_one(prob, method, alpha, K, t):
    """One target ``t`` of :func:`select_features` on a :class:`Problem` (serial; the fit stage deals these
    over ranks).  Returns (order (K,) int64, rho, r2, train_rho (K,) float64), padded with −1 / NaN."""
    from scipy.linalg import solve_triangular
    # the loops below are matrix-vector work: BLAS threads only add synchronisation (30x slower measured on
    # a loaded 2-core node), so they run single-threaded
    from threadpoolctl import threadpool_limits

    order = np.full(K, -1, np.int64)
    rho, r2, trr = (np.full(K, np.nan) for _ in range(3))
    F = prob.F
    with threadpool_limits(limits=1, user_api="blas"):
        if method == "forward":
            o = _forward(prob.G, prob.b[:, t], alpha, prob.usable, K)
            L = np.linalg.cholesky(prob.G[np.ix_(o, o)] + alpha * np.eye(o.size)) if o.size else None
            c = solve_triangular(L, prob.b[o, t], lower=True) if o.size else None
            for k in range(o.size):
                # w_S = L_k⁻ᵀ c_k with the leading k×k block of the Cholesky factor (c = L⁻¹ b_S is nested)
                w = np.zeros(F)
                w[o[:k + 1]] = solve_triangular(L[:k + 1, :k + 1], c[:k + 1], lower=True, trans="T")
                rho[k], r2[k], trr[k] = prob.scores(w, t)
            order[:o.size] = o
        else:
            elim, sc = _rfe(prob.G, prob.b[:, t], alpha, prob.usable, prob, t)
            order[:elim.size] = elim[::-1]
            rho[:elim.size], r2[:elim.size], trr[:elim.size] = sc.T
    return order, rho, r2, trr


def write_selection(group, results, method):
    """Store per-species selection results in an h5py group (the layout read by tools/plot_selection.py).

    ``group`` is ``/fits/<set>/selection``; ``results`` a list (one per species) of :class:`SelectionResult`.
    Datasets: ``order`` [n_species, T, K] i8 (column indices into the set's columns, −1 = none), ``names``
    [n_species, T, K] str, ``rho``, ``r2``, ``train_rho`` [n_species, T, K] f8 (held-out ρ, R² and training
    correlation with the first k+1 features), ``alpha`` [n_species, T]; attr ``method``.
    Species whose rankings are shorter are padded with −1 / '' / NaN.
    """
    import h5py

    K = max(r.order.shape[1] for r in results)
    T = results[0].order.shape[0]

    def pad(a, fill):
        out = np.full((len(results), T, K), fill, dtype=a[0].dtype)
        for s, x in enumerate(a):
            out[s, :, :x.shape[1]] = x
        return out

    group.attrs["method"] = method
    group["order"] = pad([r.order for r in results], -1)
    for key in ("rho", "r2", "train_rho"):
        group[key] = pad([getattr(r, key) for r in results], np.nan)
    group["alpha"] = np.stack([r.alpha for r in results])
    names = np.full((len(results), T, K), "", dtype=object)
    for s, r in enumerate(results):
        if r.names is not None:
            for t, row in enumerate(r.names):
                names[s, t, :len(row)] = row
    group.create_dataset("names", data=names.astype(str).astype(object), dtype=h5py.string_dtype())
