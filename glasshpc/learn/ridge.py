"""Ridge regression for many targets at once, with grouped cross-validation over MPI ranks.

The model predicts, for one species, the propensity at ``T`` times (``Y`` of shape ``(n, T)``) from ``F``
structural descriptors (``X`` of shape ``(n, F)``).  Rows are particles; ``groups`` gives each row's snapshot
id.  Cross-validation folds are made of whole snapshots, so a particle is never validated by a model trained
on other particles of its own snapshot (SCIENCE.md §5).

Everything is computed from sufficient statistics, so the result does not depend on how the rows are split
over MPI ranks (only the summation order changes, i.e. rounding):

* one pass over the rows accumulates, for every fold ``k``, the row count, ``Σx``, ``Σy``, ``Σy²``,
  the Gram ``Σxxᵀ`` and ``Σxyᵀ`` (float64, shifted by the global mean for accuracy), plus per-feature min/max;
  these are summed over ranks with one ``Allreduce`` each;
* the training statistics of fold ``k`` are the sums over the other folds; standardisation (mean, population
  std; zero-variance features get std 1 and coefficient 0) uses the training rows only;
* one ``numpy.linalg.eigh`` of the standardised training Gram ``G = V Λ Vᵀ`` per fold gives the whole α-path
  ``W(α) = V diag(1/(λ+α)) Vᵀ b`` (negative eigenvalues, i.e. rounding, are clipped to 0);
* the validation squared error of every (α, target) follows from the validation fold's own statistics
  (``cv_method="gram"``, default, no second pass over the data) or from explicit predictions on the local
  held-out rows (``cv_method="direct"``); both are summed over ranks.

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

__all__ = [
    "GroupedRidgeCV",
    "ridge_path",
    "pearson",
    "r2_score",
    "split_snapshots",
    "assign_folds",
]

DEFAULT_ALPHAS = np.logspace(-5, 7, 49)

_BLOCK_ROWS = 16384


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
# Distributed metrics
# --------------------------------------------------------------------------------------------------------------

def _as_2d(y):
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _centred_sums(y_true, y_pred, comm):
    yt, squeeze = _as_2d(y_true)
    yp, _ = _as_2d(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: {yt.shape} vs {yp.shape}")
    n = float(_allreduce(comm, np.array([yt.shape[0]], dtype=np.float64))[0])
    if n == 0:
        raise ValueError("no rows")
    sums = _allreduce(comm, np.stack([yt.sum(0), yp.sum(0)]))
    mt, mp = sums[0] / n, sums[1] / n
    dt, dp = yt - mt, yp - mp
    c = _allreduce(comm, np.stack([(dt * dt).sum(0), (dp * dp).sum(0), (dt * dp).sum(0),
                                   ((yt - yp) ** 2).sum(0)]))
    return c, squeeze


def pearson(y_true, y_pred, comm=None):
    """Pearson correlation per column, with rows distributed over ``comm`` (two-pass, Allreduced sums).

    Parameters
    ----------
    y_true, y_pred : (n,) or (n, T) arrays (this rank's rows).
    comm : mpi4py communicator or None (serial).

    Returns
    -------
    (T,) array (shape (1,) for 1-D input); NaN for a constant column.
    """
    (stt, spp, stp, _), _ = _centred_sums(y_true, y_pred, comm)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = stp / np.sqrt(stt * spp)
    return np.clip(r, -1.0, 1.0)


def r2_score(y_true, y_pred, comm=None):
    """Coefficient of determination per column (``sklearn.metrics.r2_score(..., multioutput="raw_values")``).

    A constant ``y_true`` column gives 1 for a perfect prediction and 0 otherwise (sklearn's convention).

    Returns
    -------
    (T,) array (shape (1,) for 1-D input).
    """
    (stt, _, _, sse), _ = _centred_sums(y_true, y_pred, comm)
    out = np.empty_like(stt)
    nz = stt > 0
    out[nz] = 1.0 - sse[nz] / stt[nz]
    out[~nz] = np.where(sse[~nz] == 0, 1.0, 0.0)
    return out


# --------------------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------------------

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


class GroupedRidgeCV:
    """Multi-target ridge regression with grouped (by snapshot) K-fold CV, rows distributed over MPI ranks.

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
    def fit(self, X, Y, groups):
        """Fit on this rank's rows (collective over ``comm``).

        Parameters
        ----------
        X : (n, F) array (cast to float64).
        Y : (n,) or (n, T) array.
        groups : (n,) int array, snapshot id of each row.
        """
        comm = self.comm
        if self.cv_method not in ("gram", "direct"):
            raise ValueError(f"cv_method must be 'gram' or 'direct', got {self.cv_method!r}")
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        Y2, squeeze = _as_2d(Y)
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
        fold_of_id = assign_folds(unique_ids, self.n_splits, self.seed)
        K = self.n_splits
        row_fold = fold_of_id[np.searchsorted(unique_ids, groups)] if n else np.zeros(0, dtype=np.int64)
        self.folds_ = [unique_ids[fold_of_id == k] for k in range(K)]

        # ---- global shift (mean over all rows) for accurate shifted sums
        n_tot = int(_allreduce(comm, np.array([n], dtype=np.int64))[0])
        s = _allreduce(comm, np.concatenate([X.sum(0, dtype=np.float64), Y2.sum(0)]))
        if not np.all(np.isfinite(s)):  # same verdict on every rank (Allreduced)
            raise ValueError("X or Y contains NaN or inf")
        sx, sy = s[:F] / n_tot, s[F:] / n_tot
        self.n_rows_ = n_tot

        # ---- one pass: per-fold sufficient statistics, one Allreduce per kind
        parts = self._fold_stats(X, Y2, row_fold, K, sx, sy, comm)
        for k, p in enumerate(parts):
            if p.n == 0:
                raise ValueError(f"fold {k} has no rows")

        # ---- per-fold standardised problems, one eigh each
        folds = []
        for k in range(K):
            tr = _Stats.total([parts[j] for j in range(K) if j != k])
            folds.append(_Standardised(tr, self.standardize))

        # ---- CV errors on the grid, extended at the edges when needed
        cv_mse = self._cv_mse(folds, parts, alphas, X, Y2, row_fold, sx, sy, comm)
        extended = False
        if alphas.size > 1:
            step = np.log10(alphas[-1] / alphas[-2]) if alphas[-2] > 0 else 0.25
            per_decade_hi = max(1, int(round(1.0 / step))) if step > 0 else 4
            step_lo = np.log10(alphas[1] / alphas[0]) if alphas[0] > 0 else np.inf
            per_decade_lo = max(1, int(round(1.0 / step_lo))) if np.isfinite(step_lo) and step_lo > 0 else 4
            n_lo = n_hi = 0
            while True:
                lo, hi = self._edge_optimum(cv_mse)
                lo = lo and alphas[0] > 0 and n_lo < self.max_extensions
                hi = hi and n_hi < self.max_extensions
                if not (lo or hi):
                    break
                new = []
                if lo:
                    new.append(alphas[0] * 10.0 ** (-np.arange(1, per_decade_lo + 1) / per_decade_lo))
                    n_lo += 1
                if hi:
                    new.append(alphas[-1] * 10.0 ** (np.arange(1, per_decade_hi + 1) / per_decade_hi))
                    n_hi += 1
                new = np.concatenate(new)
                new_mse = self._cv_mse(folds, parts, new, X, Y2, row_fold, sx, sy, comm)
                alphas = np.concatenate([alphas, new])
                cv_mse = np.concatenate([cv_mse, new_mse])
                order = np.argsort(alphas)
                alphas, cv_mse = alphas[order], cv_mse[order]
                extended = True
            # every rank holds the same cv_mse (broadcast), hence the same decision; only rank 0 says it
            loud = comm is None or comm.Get_rank() == 0
            if extended and loud:
                warnings.warn(f"GroupedRidgeCV: CV optimum on a grid edge; alpha grid extended to "
                              f"[{alphas[0]:.3g}, {alphas[-1]:.3g}]", RuntimeWarning, stacklevel=2)
            lo, hi = self._edge_optimum(cv_mse)
            if (lo or hi) and loud:
                warnings.warn("GroupedRidgeCV: CV optimum still on the grid edge after "
                              f"{self.max_extensions} extension(s) ({'low' if lo else 'high'} side)",
                              RuntimeWarning, stacklevel=2)
        best = np.argmin(cv_mse, axis=0)
        best = _bcast(comm, best.astype(np.int64))
        alpha_ = alphas[best]

        # ---- final refit on all rows at the chosen α per target
        full = _Standardised(_Stats.total(parts), self.standardize)
        uniq, inv = np.unique(best, return_inverse=True)
        w_all = full.w(alphas[uniq])  # (U, F, T)
        w = w_all[inv, :, np.arange(T)]  # (T, F)  standardised units
        coef = w / full.scale[None, :]
        intercept = (full.ymean + sy) - coef @ (full.mean + sx)
        coef = _bcast(comm, np.ascontiguousarray(coef))
        intercept = _bcast(comm, np.ascontiguousarray(intercept))

        self.alphas_ = alphas
        self.grid_extended_ = bool(extended)
        self.mean_ = full.mean + sx
        self.scale_ = full.scale.copy()
        self.n_features_in_ = F
        self._squeeze = squeeze
        if squeeze:
            self.coef_, self.intercept_ = coef[0], float(intercept[0])
            self.alpha_, self.cv_mse_ = float(alpha_[0]), cv_mse[:, 0]
        else:
            self.coef_, self.intercept_, self.alpha_, self.cv_mse_ = coef, intercept, alpha_, cv_mse
        return self

    def predict(self, X):
        """Predictions for this rank's rows: (n, T), or (n,) if fitted with 1-D ``Y``. Local, no communication."""
        X = np.asarray(X, dtype=np.float64)
        if self._squeeze:
            return X @ self.coef_ + self.intercept_
        return X @ self.coef_.T + self.intercept_[None, :]

    # ---------------------------------------------------------------------------------------------- internals
    def _edge_optimum(self, cv_mse):
        """(low, high): is the optimum of some target on that edge, beating its neighbour by > edge_rtol?"""
        if cv_mse.shape[0] < 2:
            return False, False
        best = np.argmin(cv_mse, axis=0)
        tol = self.edge_rtol * np.abs(cv_mse).max(axis=0)
        lo = np.any((best == 0) & (cv_mse[1] - cv_mse[0] > tol))
        hi = np.any((best == cv_mse.shape[0] - 1) & (cv_mse[-2] - cv_mse[-1] > tol))
        return bool(lo), bool(hi)

    @staticmethod
    def _blocks(idx):
        for a in range(0, idx.size, _BLOCK_ROWS):
            yield idx[a:a + _BLOCK_ROWS]

    def _fold_stats(self, X, Y, row_fold, K, sx, sy, comm):
        F, T = X.shape[1], Y.shape[1]
        cnt = np.zeros(K, dtype=np.float64)
        sxv = np.zeros((K, F))
        syv = np.zeros((K, T))
        syy = np.zeros((K, T))
        sxx = np.zeros((K, F, F))
        sxy = np.zeros((K, F, T))
        xmin = np.full((K, F), np.inf)
        xmax = np.full((K, F), -np.inf)
        # contiguous row blocks (no fancy-index copy when a block lies in one fold, the usual case for rows
        # sorted by snapshot); the shifted block goes into one reused buffer
        buf = np.empty((min(_BLOCK_ROWS, X.shape[0]), F))
        for a in range(0, X.shape[0], _BLOCK_ROWS):
            b = min(a + _BLOCK_ROWS, X.shape[0])
            fb = row_fold[a:b]
            ks = np.unique(fb)
            for k in ks:
                if ks.size == 1:
                    m = b - a
                    xb = np.subtract(X[a:b], sx, out=buf[:m])
                    yb = Y[a:b] - sy
                else:
                    sel = np.flatnonzero(fb == k) + a
                    m = sel.size
                    xb = np.take(X, sel, axis=0, out=buf[:m]) if X.dtype == np.float64 \
                        else np.asarray(X[sel], dtype=np.float64)
                    xb -= sx
                    yb = Y[sel] - sy
                cnt[k] += m
                sxv[k] += xb.sum(0)
                syv[k] += yb.sum(0)
                syy[k] += np.einsum("ij,ij->j", yb, yb)
                sxx[k] += xb.T @ xb  # numpy dispatches A.T @ A to syrk
                sxy[k] += xb.T @ yb
                np.minimum(xmin[k], xb.min(0), out=xmin[k])
                np.maximum(xmax[k], xb.max(0), out=xmax[k])
        cnt = _allreduce(comm, cnt)
        sxv = _allreduce(comm, sxv)
        syv = _allreduce(comm, syv)
        syy = _allreduce(comm, syy)
        sxx = _allreduce(comm, sxx)
        sxy = _allreduce(comm, sxy)
        xmin = _allreduce(comm, xmin, op="min")
        xmax = _allreduce(comm, xmax, op="max")
        parts = []
        for k in range(K):
            xx = 0.5 * (sxx[k] + sxx[k].T)
            parts.append(_Stats(cnt[k], sxv[k], syv[k], syy[k], xx, sxy[k], xmin[k], xmax[k]))
        return parts

    def _cv_mse(self, folds, parts, alphas, X, Y, row_fold, sx, sy, comm):
        """Mean over folds of the validation MSE, (A, T)."""
        alphas = np.asarray(alphas, dtype=np.float64)
        A, T = alphas.size, Y.shape[1]
        sse = np.zeros((len(folds), A, T))
        if self.cv_method == "gram":
            for k, (fd, va) in enumerate(zip(folds, parts)):
                m, ym, sc = fd.mean, fd.ymean, fd.scale
                # validation statistics re-centred at the training means, in standardised units
                ztz = (va.xx - np.outer(va.x, m) - np.outer(m, va.x) + va.n * np.outer(m, m)) / np.outer(sc, sc)
                ztr = (va.xy - np.outer(va.x, ym) - np.outer(m, va.y) + va.n * np.outer(m, ym)) / sc[:, None]
                r0 = va.yy - 2.0 * ym * va.y + va.n * ym * ym  # (T,)
                p = fd.vec.T @ ztz @ fd.vec
                q = fd.vec.T @ ztr  # (F, T)
                u = fd.u(alphas)  # (A, F, T)
                pu = np.einsum("ij,ajt->ait", p, u, optimize=True)
                sse[k] = r0[None, :] - 2.0 * np.einsum("aft,ft->at", u, q) + np.einsum("aft,aft->at", u, pu)
        else:
            for k, fd in enumerate(folds):
                w = fd.w(alphas)  # (A, F, T)
                wz = (w / fd.scale[None, :, None]).transpose(1, 0, 2).reshape(X.shape[1], A * T)
                off = (fd.mean + sx)  # training mean, original units
                idx = np.flatnonzero(row_fold == k)
                loc = np.zeros((A, T))
                for blk in self._blocks(idx):
                    xb = X[blk].astype(np.float64, copy=False) - off
                    r = (Y[blk] - (fd.ymean + sy))[:, None, :] - (xb @ wz).reshape(blk.size, A, T)
                    loc += np.einsum("iat,iat->at", r, r)
                sse[k] = loc
            sse = _allreduce(comm, sse)
        counts = np.array([p.n for p in parts])
        mse = (sse / counts[:, None, None]).mean(axis=0)
        return _bcast(comm, np.ascontiguousarray(mse))
