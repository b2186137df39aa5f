"""Ridge regression for many targets at once, with grouped cross-validation over MPI ranks.

The model predicts, for one species, the propensity at ``T`` times (``Y`` of shape ``(n, T)``) from ``F``
structural descriptors (``X`` of shape ``(n, F)``).  Rows are particles; ``groups`` gives each row's snapshot
id.  Cross-validation folds are made of whole snapshots, so a particle is never validated by a model trained
on other particles of its own snapshot (SCIENCE.md §5).

Everything is computed from sufficient statistics, and the result is bitwise the same however the snapshots are
split over MPI ranks (and whatever the rank count):

* a first pass gives the global shift (the mean of the training rows) and per-feature bounds; per-snapshot sums
  are combined with the reproducible summation of :mod:`glasshpc.learn.exact`, MIN/MAX reductions are exact;
* one pass over the rows accumulates, per snapshot, the row count, ``Σx``, ``Σy``, ``Σy²``, the Gram ``Σxxᵀ``
  and ``Σxyᵀ`` (float64, shifted), plus per-feature min/max; the snapshot terms of each fold are summed
  exactly (order- and grouping-independent), then once over ranks;
* the training statistics of fold ``k`` are the sums over the other folds (in fold order); standardisation
  (mean, population std; zero-variance features get std 1 and coefficient 0) uses the training rows only;
* one ``numpy.linalg.eigh`` of the standardised training Gram ``G = V Λ Vᵀ`` per fold gives the whole α-path
  ``W(α) = V diag(1/(λ+α)) Vᵀ b`` (negative eigenvalues, i.e. rounding, are clipped to 0);
* the validation squared error of every (α, target) follows from the validation fold's own statistics
  (``cv_method="gram"``, default, no second pass over the data; computed one α at a time, so a value does not
  depend on which other α are evaluated with it) or from explicit predictions on the held-out rows
  (``cv_method="direct"``, per-snapshot sums combined exactly).

The pieces (:func:`frame`, :func:`binned_stats`, :func:`fold_sse`, :class:`AlphaPath`, :func:`refit`) are also
used one task at a time by the fit stage (:mod:`glasshpc.learn.fits`), which deals the per-fold solves over
ranks; it gets the same numbers as :class:`GroupedRidgeCV` on all rows.  Bitwise equality assumes the same BLAS
(and BLAS thread count) on every rank.

Penalty convention: as in :class:`sklearn.linear_model.Ridge`, α multiplies ‖w‖² next to the *unnormalised*
residual sum of squares, with ``w`` the coefficients of the standardised features.  Hence ``coef_`` mapped to
standardised units (``coef_ * scale_``) equals ``Ridge(alpha).fit((X - mean_) / scale_, Y).coef_``.

CV score: ``cv_mse_`` is the unweighted mean over folds of the per-fold validation MSE, the quantity that
``GridSearchCV(scoring="neg_mean_squared_error")`` / ``RidgeCV(cv=...)`` maximise, so the chosen α coincides
with scikit-learn's for the same folds.

``comm=None`` is the serial path and never imports mpi4py.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from .exact import ExactSum, allreduce_exact, exact_sum

__all__ = [
    "GroupedRidgeCV",
    "ridge_path",
    "pearson",
    "r2_score",
    "split_snapshots",
    "assign_folds",
]

DEFAULT_ALPHAS = np.logspace(-5, 7, 49)



# --------------------------------------------------------------------------------------------------------------
# MPI helpers (mpi4py imported lazily, only when a communicator is given)
# --------------------------------------------------------------------------------------------------------------

def _allreduce(comm, arr, op="sum"):
    """Element-wise reduction of a float64/int64 array over ``comm`` (identity when comm is None)."""
    arr = np.ascontiguousarray(arr)
    if comm is None:
        return arr
    from mpi4py import MPI

    mpi_op = {"sum": MPI.SUM, "min": MPI.MIN, "max": MPI.MAX}[op]
    out = np.empty_like(arr)
    comm.Allreduce(arr, out, op=mpi_op)
    return out


def _bcast(comm, arr, root=0):
    """Make ``arr`` bit-identical on every rank (root's copy wins)."""
    arr = np.ascontiguousarray(arr)
    if comm is None or comm.Get_size() == 1:
        return arr
    comm.Bcast(arr, root=root)
    return arr


# --------------------------------------------------------------------------------------------------------------
# Folds and train/test splits by snapshot
# --------------------------------------------------------------------------------------------------------------

def assign_folds(unique_ids, n_splits, seed):
    """Fold index of each snapshot id: ``ids[perm[i]]`` goes to fold ``i % n_splits``.

    Parameters
    ----------
    unique_ids : (G,) int array, sorted unique snapshot ids (the union over all ranks).
    n_splits : int, number of folds, ``2 <= n_splits <= G``.
    seed : int, seed of ``numpy.random.default_rng``.

    Returns
    -------
    (G,) int array, the fold of ``unique_ids[g]``.
    """
    unique_ids = np.asarray(unique_ids)
    n = unique_ids.size
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    if n < n_splits:
        raise ValueError(f"cannot make {n_splits} folds from {n} snapshot(s)")
    perm = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[perm] = np.arange(n) % n_splits
    return fold


def split_snapshots(snapshot_ids, test_fraction, seed):
    """Deterministic train/test split of snapshots (never of particles within a snapshot).

    Parameters
    ----------
    snapshot_ids : array-like of int, snapshot ids (repeats allowed, e.g. one per particle).
    test_fraction : float in (0, 1), fraction of the snapshots held out (at least one, at most all but one).
    seed : int, seed of ``numpy.random.default_rng``.

    Returns
    -------
    (train_ids, test_ids) : sorted int arrays of unique snapshot ids, disjoint, union = all ids.
    """
    ids = np.unique(np.asarray(snapshot_ids))
    if ids.size < 2:
        raise ValueError("need at least two snapshots to split")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * ids.size))
    n_test = min(max(n_test, 1), ids.size - 1)
    perm = np.random.default_rng(seed).permutation(ids.size)
    test = np.sort(ids[perm[:n_test]])
    train = np.sort(ids[perm[n_test:]])
    return train, test


# --------------------------------------------------------------------------------------------------------------
# The α-path
# --------------------------------------------------------------------------------------------------------------

def _eigh_clipped(gram):
    lam, vec = np.linalg.eigh(gram)
    return np.clip(lam, 0.0, None), vec


def ridge_path(gram, xty, alphas):
    """Ridge coefficients ``(G + αI)⁻¹ b`` for every α from one eigendecomposition of ``G``.

    Parameters
    ----------
    gram : (F, F) symmetric positive semi-definite array, ``XᵀX`` (centred/standardised as desired).
    xty : (F,) or (F, T) array, ``XᵀY``.
    alphas : (A,) array of penalties (> 0 unless ``gram`` is non-singular).

    Returns
    -------
    (A, F, T) array of coefficients (``T = 1`` when ``xty`` is 1-D).
    """
    gram = np.asarray(gram, dtype=np.float64)
    xty = np.asarray(xty, dtype=np.float64)
    if xty.ndim == 1:
        xty = xty[:, None]
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    lam, vec = _eigh_clipped(0.5 * (gram + gram.T))
    c = vec.T @ xty  # (F, T)
    u = c[None, :, :] / (lam[None, :, None] + alphas[:, None, None])  # (A, F, T)
    return np.einsum("ij,ajt->ait", vec, u, optimize=True)


# --------------------------------------------------------------------------------------------------------------
# Rows grouped by snapshot
# --------------------------------------------------------------------------------------------------------------

def _as_2d(y):
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _segments(groups, n):
    """(order, [(group, start, stop)]): rows of each group contiguous in ``order`` (None = identity; stable).

    ``groups=None`` makes all ``n`` rows one term (the split over ranks then matters in the last bits)."""
    if groups is None:
        return None, ([(0, 0, n)] if n else [])
    groups = np.asarray(groups).ravel()
    if groups.size == 0:
        return None, []
    order = None
    if np.any(groups[1:] < groups[:-1]):
        order = np.argsort(groups, kind="stable")
        groups = groups[order]
    cut = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    starts, stops = np.r_[0, cut], np.r_[cut, groups.size]
    return order, [(groups[i], i, j) for i, j in zip(starts, stops)]


class _Rows:
    """One rank's rows (X (n, F), Y (n, T)) with their snapshot ids, visited one snapshot at a time."""

    def __init__(self, X, Y, groups):
        self.X = np.asarray(X)
        self.Y = _as_2d(Y)[0]
        self.order, self.segs = _segments(groups, self.X.shape[0])
        self.extents = None   # per snapshot (min, max) of x, cached by the first pass (_extent)

    def blocks(self):
        """(snapshot id, X rows float64, Y rows) per snapshot, rows in their given order."""
        for g, i, j in self.segs:
            sel = slice(i, j) if self.order is None else self.order[i:j]
            yield g, np.asarray(self.X[sel], dtype=np.float64), self.Y[sel]


# --------------------------------------------------------------------------------------------------------------
# Distributed metrics
# --------------------------------------------------------------------------------------------------------------

def _centred_sums(y_true, y_pred, comm, groups):
    yt, squeeze = _as_2d(y_true)
    yp, _ = _as_2d(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: {yt.shape} vs {yp.shape}")
    T = yt.shape[1]
    order, segs = _segments(groups, yt.shape[0])
    if order is not None:
        yt, yp = yt[order], yp[order]
    n = yt.shape[0] if comm is None else comm.allreduce(yt.shape[0])
    if n == 0:
        raise ValueError("no rows")
    sums = exact_sum(comm, [np.stack([yt[i:j].sum(0), yp[i:j].sum(0)]) for _, i, j in segs], (2, T))
    mt, mp = sums[0] / n, sums[1] / n
    terms = []
    for _, i, j in segs:
        dt, dp = yt[i:j] - mt, yp[i:j] - mp
        terms.append(np.stack([(dt * dt).sum(0), (dp * dp).sum(0), (dt * dp).sum(0),
                               ((yt[i:j] - yp[i:j]) ** 2).sum(0)]))
    return exact_sum(comm, terms, (4, T)), squeeze


def _pearson_from(c):
    stt, spp, stp, _ = c
    with np.errstate(invalid="ignore", divide="ignore"):
        r = stp / np.sqrt(stt * spp)
    return np.clip(r, -1.0, 1.0)


def _r2_from(c):
    stt, _, _, sse = c
    out = np.empty_like(stt)
    nz = stt > 0
    out[nz] = 1.0 - sse[nz] / stt[nz]
    out[~nz] = np.where(sse[~nz] == 0, 1.0, 0.0)
    return out


def pearson(y_true, y_pred, comm=None, groups=None):
    """Pearson correlation per column, with rows distributed over ``comm`` (two passes).

    Parameters
    ----------
    y_true, y_pred : (n,) or (n, T) arrays (this rank's rows).
    comm : mpi4py communicator or None (serial).
    groups : (n,) int snapshot id of each row, or None.  With groups the per-snapshot sums are combined
        exactly (:mod:`glasshpc.learn.exact`): the result is bitwise independent of how whole snapshots are
        split over ranks.  Without, each rank's rows form one term.

    Returns
    -------
    (T,) array (shape (1,) for 1-D input); NaN for a constant column.
    """
    return _pearson_from(_centred_sums(y_true, y_pred, comm, groups)[0])


def r2_score(y_true, y_pred, comm=None, groups=None):
    """Coefficient of determination per column (``sklearn.metrics.r2_score(..., multioutput="raw_values")``).

    A constant ``y_true`` column gives 1 for a perfect prediction and 0 otherwise (sklearn's convention).
    ``comm``, ``groups`` as in :func:`pearson`.

    Returns
    -------
    (T,) array (shape (1,) for 1-D input).
    """
    return _r2_from(_centred_sums(y_true, y_pred, comm, groups)[0])


def pearson_r2(y_true, y_pred, comm=None, groups=None):
    """(:func:`pearson`, :func:`r2_score`) from one set of sums (collective over ``comm``)."""
    c = _centred_sums(y_true, y_pred, comm, groups)[0]
    return _pearson_from(c), _r2_from(c)


# --------------------------------------------------------------------------------------------------------------
# Sufficient statistics (exact over snapshots and ranks)
# --------------------------------------------------------------------------------------------------------------

class Frame:
    """Coordinates shared by every rank for the partial sums of one problem: shift ``sx`` (F,), ``sy`` (T,)
    (the exact mean of the training rows), bounds ``ax`` ≥ max|x − sx|, ``ay`` ≥ max|y − sy| over every row
    set, ``nmax`` the largest snapshot (rows), ``n_terms`` the number of snapshots, ``n`` training rows."""

    def __init__(self, n, sx, sy, ax, ay, nmax, n_terms):
        self.n, self.sx, self.sy, self.ax, self.ay = n, sx, sy, ax, ay
        self.nmax, self.n_terms = nmax, n_terms


def _extent(comm, rows, F, T):
    """Global per-column min/max of (x, y), largest snapshot, number of snapshots, rows, and this rank's
    per-snapshot (Σx, Σy) terms. Raises ValueError (on every rank) for NaN/inf."""
    lo = np.full(F + T, np.inf)
    hi = np.full(F + T, -np.inf)
    nmax, n_loc, bad, terms = 0, 0, False, []
    rows.extents = []
    for _, xb, yb in rows.blocks():
        ext = (xb.min(0), xb.max(0))
        rows.extents.append(ext)
        v = np.concatenate([xb.sum(0), yb.sum(0)])
        if not np.all(np.isfinite(v)):
            bad = True
            continue
        terms.append(v)
        n_loc += xb.shape[0]
        nmax = max(nmax, xb.shape[0])
        np.minimum(lo, np.concatenate([ext[0], yb.min(0)]), out=lo)
        np.maximum(hi, np.concatenate([ext[1], yb.max(0)]), out=hi)
    head = np.concatenate([-lo, hi, [nmax, float(bad)]])
    n_groups = len(terms)
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI

        out = np.empty_like(head)
        comm.Allreduce(head, out, op=MPI.MAX)
        head = out
        n_loc, n_groups = comm.allreduce(n_loc), comm.allreduce(n_groups)
    if head[-1] > 0:
        raise ValueError("X or Y contains NaN or inf")
    return -head[:F + T], head[F + T:2 * (F + T)], int(head[-2]), max(n_groups, 1), n_loc, terms


def frame(comm, train):
    """Collective. :class:`Frame` of the training rows ``train`` (:class:`_Rows`): the shift is their mean
    (exact sum of the per-snapshot sums).  Raises ValueError (on every rank) for NaN/inf data or no rows."""
    F, T = train.X.shape[1], train.Y.shape[1]
    lo, hi, nmax, n_groups, n, terms = _extent(comm, train, F, T)
    if n == 0:
        raise ValueError("no training rows")
    acc = ExactSum(2.0 * nmax * np.maximum(np.abs(lo), np.abs(hi)), n_groups)
    for v in terms:
        acc.add(v)
    s = allreduce_exact(comm, [acc])[0] / n
    a = np.maximum(hi - s, s - lo) * 1.001   # margin for the rounding of x - s
    return Frame(n, s[:F], s[F:], a[:F], a[F:], nmax, n_groups)


def frame_for(comm, fr, rows):
    """Collective. A :class:`Frame` with the shift of ``fr`` and the bounds of ``rows`` (e.g. held-out rows)."""
    F, T = rows.X.shape[1], rows.Y.shape[1]
    s = np.concatenate([fr.sx, fr.sy])
    lo, hi, nmax, n_groups, n, _ = _extent(comm, rows, F, T)
    a = np.maximum(hi - s, s - lo) * 1.001 if n else np.zeros(F + T)
    return Frame(fr.n, fr.sx, fr.sy, a[:F], a[F:], nmax, n_groups)


def binned_stats(comm, rows, bin_of, n_bins, fr, root=None):
    """Collective. Sufficient statistics (:class:`_Stats`, in the shifted coordinates of ``fr``) of the rows of
    each bin (e.g. fold); ``bin_of(snapshot id) -> int``.  Per-snapshot sums are combined exactly, so the result
    is bitwise independent of how snapshots are split over ranks.  ``root=None``: on every rank; else on
    ``root`` only (others get None).

    Memory: 2 × n_bins × (F(F+1)/2 + F·T + F + 2T) float64 for the accumulators, twice that while reducing."""
    F, T = rows.X.shape[1], rows.Y.shape[1]
    iu = np.triu_indices(F)
    bound = 2.0 * fr.nmax * np.concatenate([fr.ax, fr.ay, fr.ay * fr.ay, np.outer(fr.ax, fr.ax)[iu],
                                            np.outer(fr.ax, fr.ay).ravel()])
    accs = [ExactSum(bound, fr.n_terms) for _ in range(n_bins)]
    cnt = np.zeros(n_bins)
    xmin = np.full((n_bins, F), np.inf)
    xmax = np.full((n_bins, F), -np.inf)
    for j, (g, xb, yb) in enumerate(rows.blocks()):
        k = bin_of(g)
        # min/max of the shifted x from the first pass: x ↦ fl(x − s) is monotonic, so this is exact
        lo, hi = rows.extents[j] if rows.extents is not None else (xb.min(0), xb.max(0))
        xb = xb - fr.sx
        yb = yb - fr.sy
        xx = xb.T @ xb  # numpy dispatches A.T @ A to syrk
        accs[k].add(np.concatenate([xb.sum(0), yb.sum(0), np.einsum("ij,ij->j", yb, yb), xx[iu],
                                    (xb.T @ yb).ravel()]))
        cnt[k] += xb.shape[0]
        np.minimum(xmin[k], lo - fr.sx, out=xmin[k])
        np.maximum(xmax[k], hi - fr.sx, out=xmax[k])
    cnt = _allreduce(comm, cnt)
    xmin = _allreduce(comm, xmin, op="min")
    xmax = _allreduce(comm, xmax, op="max")
    tot = allreduce_exact(comm, accs, root=root)
    if tot is None:
        return None
    parts = []
    for k, v in enumerate(tot):
        a = np.cumsum([0, F, T, T, iu[0].size, F * T])
        xx = np.empty((F, F))
        xx[iu] = v[a[3]:a[4]]
        xx.T[iu] = v[a[3]:a[4]]
        parts.append(_Stats(cnt[k], v[:a[1]].copy(), v[a[1]:a[2]].copy(), v[a[2]:a[3]].copy(), xx,
                            v[a[4]:a[5]].reshape(F, T).copy(), xmin[k], xmax[k]))
    return parts


class _Stats:
    """Sufficient statistics of a set of rows, in coordinates shifted by (sx, sy)."""

    __slots__ = ("n", "x", "y", "yy", "xx", "xy", "xmin", "xmax")

    def __init__(self, n, x, y, yy, xx, xy, xmin, xmax):
        self.n, self.x, self.y, self.yy, self.xx, self.xy = n, x, y, yy, xx, xy
        self.xmin, self.xmax = xmin, xmax

    @classmethod
    def total(cls, parts):
        p0 = parts[0]
        out = cls(p0.n, p0.x.copy(), p0.y.copy(), p0.yy.copy(), p0.xx.copy(), p0.xy.copy(),
                  p0.xmin.copy(), p0.xmax.copy())
        for p in parts[1:]:
            out.n += p.n
            out.x += p.x
            out.y += p.y
            out.yy += p.yy
            out.xx += p.xx
            out.xy += p.xy
            np.minimum(out.xmin, p.xmin, out=out.xmin)
            np.maximum(out.xmax, p.xmax, out=out.xmax)
        return out


class _Standardised:
    """Standardised training problem of one fold (or of the final refit)."""

    def __init__(self, tr, standardize):
        n = tr.n
        self.n = n
        self.mean = tr.x / n  # shifted coordinates
        self.ymean = tr.y / n
        gc = tr.xx - np.outer(tr.x, self.mean)
        gc = 0.5 * (gc + gc.T)
        bc = tr.xy - np.outer(tr.x, self.ymean)
        const = ~(tr.xmax > tr.xmin)
        if standardize:
            var = np.clip(np.diag(gc) / n, 0.0, None)
            scale = np.sqrt(var)
            scale[const | (scale == 0)] = 1.0
        else:
            scale = np.ones_like(self.mean)
        self.scale = scale
        self.const = const if standardize else np.zeros_like(const)
        g = gc / np.outer(scale, scale)
        b = bc / scale[:, None]
        if standardize:
            # exactly zero column -> zero coefficient (sklearn's Ridge on a zero column gives 0)
            g[const, :] = 0.0
            g[:, const] = 0.0
            b[const, :] = 0.0
        self.lam, self.vec = _eigh_clipped(g)
        self.c = self.vec.T @ b  # (F, T)

    def u(self, alphas):
        """Eigenbasis coefficients (A, F, T)."""
        return self.c[None, :, :] / (self.lam[None, :, None] + np.asarray(alphas)[:, None, None])

    def w(self, alphas):
        """Standardised-unit coefficients (A, F, T)."""
        w = np.einsum("ij,ajt->ait", self.vec, self.u(alphas), optimize=True)
        w[:, self.const, :] = 0.0  # exact zero (eigenvector mixing leaves ~1e-16 relative otherwise)
        return w


def fold_sse(fd, va, alphas):
    """(A, T) validation sum of squared errors of the fold whose training problem is ``fd``
    (:class:`_Standardised`) on the validation statistics ``va`` (:class:`_Stats`, same frame), for each α.

    One α at a time: the value for an α is the same whichever other α are computed with it."""
    return fold_sse_scorer(fd, va)(alphas)


def fold_sse_scorer(fd, va, blocks=None):
    """``alphas -> (A, T)`` as :func:`fold_sse`, with the α-independent part (the validation Gram in the fold's
    eigenbasis, 2F³ flops) computed once: for lazy use by :meth:`AlphaPath.choose`, which asks for the grid
    first and for its extensions only when an optimum sits on an edge.

    ``blocks``: optional list of disjoint α arrays (:attr:`AlphaPath.blocks`). Each block is then scored in one
    matrix product (F × F times F × (A_block·T): compute-bound, where one α at a time re-reads the F × F matrix
    per α) and cached, and every requested α must belong to a block: its value then depends only on its block,
    so a table computed ahead for all candidates and a lazy replay of the extension rule agree bitwise."""
    m, ym, sc = fd.mean, fd.ymean, fd.scale
    # validation statistics re-centred at the training means, in standardised units
    ztz = (va.xx - np.outer(va.x, m) - np.outer(m, va.x) + va.n * np.outer(m, m)) / np.outer(sc, sc)
    ztr = (va.xy - np.outer(va.x, ym) - np.outer(m, va.y) + va.n * np.outer(m, ym)) / sc[:, None]
    r0 = va.yy - 2.0 * ym * va.y + va.n * ym * ym  # (T,)
    p = fd.vec.T @ ztz @ fd.vec
    q = fd.vec.T @ ztr  # (F, T)
    del ztz, ztr
    F, T = fd.c.shape

    def one_at_a_time(alphas):
        out = np.empty((alphas.size, T))
        for a, alpha in enumerate(alphas):
            u = fd.c / (fd.lam[:, None] + alpha)  # (F, T)
            out[a] = r0 - 2.0 * np.einsum("ft,ft->t", u, q) + np.einsum("ft,ft->t", u, p @ u)
        return out

    def batched(alphas):
        u = fd.c[:, None, :] / (fd.lam[:, None, None] + alphas[None, :, None])   # (F, A, T)
        pu = (p @ u.reshape(F, -1)).reshape(F, alphas.size, T)
        return r0[None, :] - 2.0 * np.einsum("fat,ft->at", u, q) + np.einsum("fat,fat->at", u, pu)

    return _blockwise(one_at_a_time, batched, blocks, T)


def _blockwise(one_at_a_time, batched, blocks, T):
    """``alphas -> (A, T)``: ``one_at_a_time`` when ``blocks`` is None, else each block of α scored by one
    ``batched`` call and cached (every requested α must lie in a block: KeyError otherwise), so the value of an
    α depends only on its block, never on which other α were asked for with it."""
    if blocks is None:
        return lambda alphas: one_at_a_time(np.atleast_1d(np.asarray(alphas, dtype=np.float64)))
    blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
    where = {float(a): (k, i) for k, b in enumerate(blocks) for i, a in enumerate(b)}
    done = {}

    def score(alphas):
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        out = np.empty((alphas.size, T))
        for j, a in enumerate(alphas):
            k, i = where[float(a)]
            if k not in done:
                done[k] = batched(blocks[k])
            out[j] = done[k][i]
        return out
    return score


def fold_pearson(fd, rows, alphas):
    """(A, T) mean over the validation snapshots in ``rows`` (:class:`_Rows`) of the per-snapshot Pearson ρ
    between the prediction of the fold model ``fd`` (:class:`_Standardised`) at each α and the target.

    ρ needs no intercept: each snapshot's rows are centred on their own mean. One α at a time, snapshots in
    id order (a value does not depend on the other α or on the rank that computes it). A snapshot whose
    prediction or target is constant counts as ρ = 0 (no usable correlation)."""
    return fold_pearson_scorer(fd, rows)(alphas)


def fold_pearson_scorer(fd, rows, blocks=None):
    """``alphas -> (A, T)`` as :func:`fold_pearson`, with the centred validation rows prepared once; with
    ``blocks`` (:attr:`AlphaPath.blocks`) each block of α is scored with one product per snapshot
    (n × F times F × (A_block·T)) and cached, as in :func:`fold_sse_scorer`."""
    blocks_rows = []
    for _, xb, yb in rows.blocks():
        yc = yb - yb.mean(0)
        blocks_rows.append((xb - xb.mean(0), yc, np.einsum("it,it->t", yc, yc)))
    F, T = fd.c.shape

    def rho(p, yc, syy):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.einsum("i...,i...->...", p, yc) / np.sqrt(np.einsum("i...,i...->...", p, p) * syy)
        return np.where(np.isfinite(r), np.clip(r, -1.0, 1.0), 0.0)

    def one_at_a_time(alphas):
        out = np.empty((alphas.size, T))
        for a, alpha in enumerate(alphas):
            coef = fd.w(alpha[None])[0] / fd.scale[:, None]   # (F, T) original units
            acc = np.zeros(T)
            for xc, yc, syy in blocks_rows:
                acc += rho(xc @ coef, yc, syy)
            out[a] = acc / max(len(blocks_rows), 1)
        return out

    def batched(alphas):
        A = alphas.size
        coef = (fd.w(alphas) / fd.scale[None, :, None]).transpose(1, 0, 2).reshape(F, A * T)
        acc = np.zeros((A, T))
        for xc, yc, syy in blocks_rows:
            p = (xc @ coef).reshape(-1, A, T)
            acc += rho(p, yc[:, None, :], syy[None, :])
        return acc / max(len(blocks_rows), 1)

    return _blockwise(one_at_a_time, batched, blocks, T)


def mean_mse(sse, counts):
    """Unweighted mean over folds of the per-fold MSE: sse list of (A, T), counts the fold row counts."""
    acc = sse[0] / counts[0]
    for s, n in zip(sse[1:], counts[1:]):
        acc = acc + s / n
    return acc / len(sse)


class AlphaPath:
    """The α grid with its possible edge extensions, and the rule that extends it.

    ``alphas`` sorted unique (A,); when the CV optimum of some target sits on an edge (beating its neighbour by
    more than ``edge_rtol`` relative) the grid grows by one decade at that side (same density as the grid's
    last step; 4 per decade for a zero or single step), at most ``max_extensions`` times per side.
    :attr:`candidates` lists every α the rule can ever ask for (so CV errors can be computed ahead, e.g. by
    another rank); :meth:`choose` replays the rule on any ``cv_mse(alphas) -> (A, T)``."""

    def __init__(self, alphas, max_extensions=6, edge_rtol=1e-6):
        self.alphas = alphas
        self.max_extensions = int(max_extensions)
        self.edge_rtol = edge_rtol
        self.lo, self.hi = [], []
        if alphas.size > 1:
            step = np.log10(alphas[-1] / alphas[-2]) if alphas[-2] > 0 else 0.25
            pd_hi = max(1, int(round(1.0 / step))) if step > 0 else 4
            step_lo = np.log10(alphas[1] / alphas[0]) if alphas[0] > 0 else np.inf
            pd_lo = max(1, int(round(1.0 / step_lo))) if np.isfinite(step_lo) and step_lo > 0 else 4
            cur_lo, cur_hi = alphas[0], alphas[-1]
            for _ in range(self.max_extensions):
                if alphas[0] > 0:
                    self.lo.append(cur_lo * 10.0 ** (-np.arange(1, pd_lo + 1) / pd_lo))
                    cur_lo = self.lo[-1].min()
                self.hi.append(cur_hi * 10.0 ** (np.arange(1, pd_hi + 1) / pd_hi))
                cur_hi = self.hi[-1].max()
        self.candidates = np.unique(np.concatenate([alphas] + self.lo + self.hi))
        # the units in which :meth:`choose` asks for α (grid, then one decade per side and step)
        self.blocks = [alphas] + self.lo + self.hi

    def _edge_optimum(self, cv_mse):
        """(low, high): is the optimum of some target on that edge, beating its neighbour by > edge_rtol?"""
        if cv_mse.shape[0] < 2:
            return False, False
        best = np.argmin(cv_mse, axis=0)
        tol = self.edge_rtol * np.abs(cv_mse).max(axis=0)
        lo = np.any((best == 0) & (cv_mse[1] - cv_mse[0] > tol))
        hi = np.any((best == cv_mse.shape[0] - 1) & (cv_mse[-2] - cv_mse[-1] > tol))
        return bool(lo), bool(hi)

    def choose(self, cv_mse_of):
        """Replay the extension rule. Returns (alphas_ (A',), cv_mse_ (A', T), best (T,) indices into alphas_,
        extended: bool, still_on_edge: None | 'low' | 'high')."""
        alphas = self.alphas
        cv_mse = cv_mse_of(alphas)
        extended = False
        edge = None
        if alphas.size > 1:
            n_lo = n_hi = 0
            while True:
                lo, hi = self._edge_optimum(cv_mse)
                lo = lo and n_lo < len(self.lo)
                hi = hi and n_hi < len(self.hi)
                if not (lo or hi):
                    break
                new = []
                if lo:
                    new.append(self.lo[n_lo])
                    n_lo += 1
                if hi:
                    new.append(self.hi[n_hi])
                    n_hi += 1
                new = np.concatenate(new)
                alphas = np.concatenate([alphas, new])
                cv_mse = np.concatenate([cv_mse, cv_mse_of(new)])
                order = np.argsort(alphas)
                alphas, cv_mse = alphas[order], cv_mse[order]
                extended = True
            lo, hi = self._edge_optimum(cv_mse)
            edge = "low" if lo else ("high" if hi else None)
        return alphas, cv_mse, np.argmin(cv_mse, axis=0).astype(np.int64), extended, edge

    def lookup(self, table):
        """``cv_mse_of`` reading a precomputed (len(candidates), T) table."""
        def cv_mse_of(alphas):
            idx = np.searchsorted(self.candidates, alphas)
            assert np.array_equal(self.candidates[idx], alphas)
            return table[idx]
        return cv_mse_of


def refit(parts, standardize, fr, alphas, best):
    """Final model on all rows (``parts`` = the per-fold :class:`_Stats`) at ``alphas[best[t]]`` per target.
    Returns (coef (T, F) original units, intercept (T,), mean (F,), scale (F,))."""
    full = _Standardised(_Stats.total(parts), standardize)
    T = best.size
    uniq, inv = np.unique(best, return_inverse=True)
    w_all = full.w(alphas[uniq])  # (U, F, T)
    w = w_all[inv, :, np.arange(T)]  # (T, F)  standardised units
    coef = w / full.scale[None, :]
    intercept = (full.ymean + fr.sy) - coef @ (full.mean + fr.sx)
    return coef, intercept, full.mean + fr.sx, full.scale.copy()


def fold_problems(parts, standardize):
    """Per fold k: the standardised training problem (all folds but k, summed in fold order)."""
    K = len(parts)
    return [_Standardised(_Stats.total([parts[j] for j in range(K) if j != k]), standardize) for k in range(K)]


class GroupedRidgeCV(RegressorMixin, BaseEstimator):
    """Multi-target ridge regression with grouped (by snapshot) K-fold CV, rows distributed over MPI ranks.

    A scikit-learn estimator (``get_params``/``set_params``, ``fit`` → self, ``predict``, ``score`` = R² of
    :class:`sklearn.base.RegressorMixin`; passes ``sklearn.utils.estimator_checks``), so it works in a
    ``Pipeline``: pass the snapshot ids as ``pipe.fit(X, y, <step>__groups=ids)``; without ``groups`` every row is
    its own group (plain K-fold over rows). Serial input (``comm=None``) is validated like any sklearn estimator
    (finite float64 2-D X); with a communicator each rank's rows are taken as given (a rank may hold none).

    Parameters
    ----------
    alphas : array-like, optional
        Penalty grid (default ``np.logspace(-5, 7, 49)``), sklearn convention (penalty on the unnormalised
        residual sum of squares of the standardised problem).  A single α skips the grid search logic
        (CV errors are still computed) and is never extended.
    n_splits : int
        Number of folds; folds are sets of snapshots, assigned from ``seed`` (never from the rank).
    seed : int
        Seed of the fold assignment (:func:`assign_folds`).
    standardize : bool
        Standardise features with the training rows' mean and population std (zero variance → std 1).
        If False, features are only centred (an intercept is always fitted).
    comm : mpi4py communicator or None
        None = serial.  Otherwise ``fit`` is collective: every rank passes its own rows.
    cv_method : {"gram", "direct"}
        "gram": validation errors from the validation folds' sufficient statistics (one pass over the data).
        "direct": explicit predictions on the held-out rows for every (α, target) (a second pass).
    max_extensions : int
        How many decades the grid may be extended at each side when the optimum sits on an edge.
    edge_rtol : float
        The edge counts as the optimum only if it beats its neighbour by more than ``edge_rtol`` relative
        (a flat plateau — e.g. α → 0 with many more rows than features — does not trigger an extension).

    Attributes (after ``fit``; with 1-D ``Y`` the target axis is dropped, as in sklearn)
    ----------
    coef_ : (T, F) array, coefficients in the ORIGINAL feature units.
    intercept_ : (T,) array.
    alpha_ : (T,) array, chosen α per target.
    alphas_ : (A,) array, the grid actually used (sorted, including extensions).
    cv_mse_ : (A, T) array, mean over folds of the validation MSE.
    mean_, scale_ : (F,) arrays, standardisation of the final refit (all rows).
    grid_extended_ : bool, whether the grid was extended.
    folds_ : list of n_splits int arrays, the snapshot ids of each fold.
    n_rows_ : int, total number of rows over all ranks.
    """

    def __init__(self, alphas=None, n_splits=5, seed=0, standardize=True, comm=None, cv_method="gram",
                 max_extensions=6, edge_rtol=1e-6):
        self.alphas = alphas
        self.n_splits = n_splits
        self.seed = seed
        self.standardize = standardize
        self.comm = comm
        self.cv_method = cv_method
        self.max_extensions = max_extensions
        self.edge_rtol = edge_rtol

    # ---------------------------------------------------------------------------------------------- fitting
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, Y, groups=None):
        """Fit on this rank's rows (collective over ``comm``); returns self.

        Parameters
        ----------
        X : (n, F) array (cast to float64).
        Y : (n,) or (n, T) array.
        groups : (n,) int array, snapshot id of each row; None (serial only) = each row its own group.

        Raises ValueError for bad shapes, non-finite values, fewer groups than ``n_splits``, or ``groups=None``
        with a communicator.
        """
        comm = self.comm
        if self.cv_method not in ("gram", "direct"):
            raise ValueError(f"cv_method must be 'gram' or 'direct', got {self.cv_method!r}")
        if comm is None:
            from sklearn.utils.validation import validate_data
            X, Y = validate_data(self, X, Y, multi_output=True, y_numeric=True, dtype=np.float64)
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        Y2, squeeze = _as_2d(Y)
        if groups is None:
            if comm is not None:
                raise ValueError("groups (snapshot ids) are required with a communicator")
            groups = np.arange(X.shape[0])
        groups = np.asarray(groups).ravel()
        n, F = X.shape
        if Y2.shape[0] != n or groups.shape[0] != n:
            raise ValueError(f"X, Y, groups disagree on the number of rows: {n}, {Y2.shape[0]}, {groups.shape[0]}")
        T = Y2.shape[1]
        # every rank must agree on F and T
        dims = _allreduce(comm, np.array([F, T, -F, -T], dtype=np.int64), op="max")
        if dims[0] != -dims[2] or dims[1] != -dims[3]:
            raise ValueError("ranks disagree on the number of features / targets")

        alphas = DEFAULT_ALPHAS if self.alphas is None else self.alphas
        alphas = np.unique(np.atleast_1d(np.asarray(alphas, dtype=np.float64)))
        if alphas.size == 0 or np.any(alphas < 0) or not np.all(np.isfinite(alphas)):
            raise ValueError("alphas must be finite and >= 0")

        # ---- folds from the union of snapshot ids (independent of the rank layout)
        local_ids = np.unique(groups)
        if comm is None:
            unique_ids = local_ids
        else:
            unique_ids = np.unique(np.concatenate([np.asarray(a) for a in comm.allgather(local_ids)]))
        if unique_ids.size < self.n_splits:
            raise ValueError(f"{unique_ids.size} groups for n_splits = {self.n_splits} folds (n_samples = {n}): "
                             "need at least one group per fold")
        fold_of_id = assign_folds(unique_ids, self.n_splits, self.seed)
        K = self.n_splits
        self.folds_ = [unique_ids[fold_of_id == k] for k in range(K)]

        def bin_of(g):
            return int(fold_of_id[np.searchsorted(unique_ids, g)])

        # ---- global shift, then one pass: per-fold sufficient statistics (exact over snapshots and ranks)
        rows = _Rows(X, Y2, groups)
        fr = frame(comm, rows)
        self.n_rows_ = int(fr.n)
        parts = binned_stats(comm, rows, bin_of, K, fr)
        for k, p in enumerate(parts):
            if p.n == 0:
                raise ValueError(f"fold {k} has no rows")
        folds = fold_problems(parts, self.standardize)
        counts = [p.n for p in parts]

        path = AlphaPath(alphas, self.max_extensions, self.edge_rtol)
        if self.cv_method == "gram":
            scorers = [fold_sse_scorer(fd, va, path.blocks) for fd, va in zip(folds, parts)]

            def cv_mse_of(a):
                return mean_mse([sc(a) for sc in scorers], counts)
        else:
            def cv_mse_of(a):
                return self._direct_mse(folds, rows, bin_of, a, fr, counts, comm)

        alphas, cv_mse, best, extended, edge = path.choose(cv_mse_of)
        # every rank holds the same cv_mse (exact sums), hence the same decision; only rank 0 says it
        if comm is None or comm.Get_rank() == 0:
            _warn_grid(extended, edge, alphas, self.max_extensions, stacklevel=3)
        best = _bcast(comm, best)
        alpha_ = alphas[best]

        # ---- final refit on all rows at the chosen α per target
        coef, intercept, mean, scale = refit(parts, self.standardize, fr, alphas, best)
        coef = _bcast(comm, np.ascontiguousarray(coef))
        intercept = _bcast(comm, np.ascontiguousarray(intercept))

        self.alphas_ = alphas
        self.grid_extended_ = bool(extended)
        self.mean_ = mean
        self.scale_ = scale
        self.n_features_in_ = F
        self._squeeze = squeeze
        if squeeze:
            self.coef_, self.intercept_ = coef[0], float(intercept[0])
            self.alpha_, self.cv_mse_ = float(alpha_[0]), cv_mse[:, 0]
        else:
            self.coef_, self.intercept_, self.alpha_, self.cv_mse_ = coef, intercept, alpha_, cv_mse
        return self

    def predict(self, X):
        """Predictions for this rank's rows: (n, T), or (n,) if fitted with 1-D ``Y``. Local, no communication.
        Raises sklearn's NotFittedError before ``fit``, ValueError for a wrong feature count."""
        from sklearn.utils.validation import check_is_fitted, validate_data
        check_is_fitted(self, "coef_")
        if self.comm is None:
            X = validate_data(self, X, reset=False, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if self._squeeze:
            return X @ self.coef_ + self.intercept_
        return X @ self.coef_.T + self.intercept_[None, :]

    # ---------------------------------------------------------------------------------------------- internals
    @staticmethod
    def _direct_mse(folds, rows, bin_of, alphas, fr, counts, comm):
        """Mean over folds of the validation MSE from explicit predictions, (A, T); per-snapshot SSE terms are
        summed exactly."""
        alphas = np.asarray(alphas, dtype=np.float64)
        A, K = alphas.size, len(folds)
        F, T = rows.X.shape[1], rows.Y.shape[1]
        wz, off, yoff = [], [], []
        for fd in folds:
            w = fd.w(alphas)  # (A, F, T)
            wz.append((w / fd.scale[None, :, None]).transpose(1, 0, 2).reshape(F, A * T))
            off.append(fd.mean + fr.sx)   # training mean, original units
            yoff.append(fd.ymean + fr.sy)
        terms = []
        for g, xb, yb in rows.blocks():
            k = bin_of(g)
            r = (yb - yoff[k])[:, None, :] - ((xb - off[k]) @ wz[k]).reshape(xb.shape[0], A, T)
            t = np.zeros((K, A, T))
            t[k] = np.einsum("iat,iat->at", r, r)
            terms.append(t)
        sse = exact_sum(comm, terms, (K, A, T))
        return mean_mse(list(sse), counts)


def _warn_grid(extended, edge, alphas, max_extensions, stacklevel=2, where=None, best=None, times=None,
               grid=None, score="mse"):
    """RuntimeWarnings about the α grid after :meth:`AlphaPath.choose` (``alphas`` the grid used).

    ``where`` names the problem (e.g. "feature set 'init', species A"), ``best`` (T,) the chosen indices,
    ``times`` (T,) the targets' read-out times (τ), ``grid`` the configured α grid, ``score`` 'mse' | 'pearson'.
    Says: that the grid was extended (and at which targets the choice left the configured grid), that an optimum
    is still on the low edge after ``max_extensions`` extensions, and where α is the far (largest) end of the
    grid used: every coefficient is then shrunk to ≈ 0, an intercept-only model."""
    who = "GroupedRidgeCV" + (f" ({where})" if where else "")

    def at(mask):
        idx = np.flatnonzero(mask)
        if times is not None:
            return "t = " + ", ".join(f"{times[i]:.4g}" for i in idx) + " τ"
        return "target(s) " + ", ".join(str(i) for i in idx)

    alphas = np.asarray(alphas)
    if extended:
        msg = f"{who}: CV optimum on a grid edge; alpha grid extended to [{alphas[0]:.3g}, {alphas[-1]:.3g}]"
        if best is not None and grid is not None:
            out = (alphas[best] < np.min(grid)) | (alphas[best] > np.max(grid))
            if out.any():
                msg += f"; chosen outside the configured [{np.min(grid):.3g}, {np.max(grid):.3g}] at {at(out)}"
        warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)
    if best is None:
        if edge is not None:
            warnings.warn(f"{who}: CV optimum still on the grid edge after {max_extensions} extension(s) "
                          f"({edge} side)", RuntimeWarning, stacklevel=stacklevel)
        return
    best = np.asarray(best)
    if edge == "low":
        low = best == 0
        warnings.warn(f"{who}: CV optimum still on the low edge (α = {alphas[0]:.3g}) after {max_extensions} "
                      f"extension(s) at {at(low)}: nearly unregularised", RuntimeWarning, stacklevel=stacklevel)
    far = best == alphas.size - 1
    if alphas.size > 1 and far.any():
        again = (f" (still improving there after {max_extensions} extension(s))" if edge == "high" else "")
        what = ("the prediction is the training mean plus a tiny correlated part: ρ is defined, R² is that of "
                "an intercept-only model" if score == "pearson" else
                "an intercept-only model (predicts the training mean); the features carry no signal the CV sees")
        warnings.warn(f"{who}: α = {alphas[-1]:.3g}, the far end of the {'extended ' if extended else ''}grid, "
                      f"chosen at {at(far)}{again}: every coefficient is shrunk to ≈ 0, {what}",
                      RuntimeWarning, stacklevel=stacklevel)
