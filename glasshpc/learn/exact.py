"""Reproducible float64 sums: the result does not depend on the order or the grouping of the terms.

Why: the fits sum per-snapshot partial sums (Gram matrices, Σx, Σy, ...) computed by whichever rank holds the
snapshot.  A plain float sum (or ``MPI_Allreduce``) depends on how the snapshots are grouped over ranks, so
results would change in the last bits with the rank count.  Here every term is first split on a fixed grid,

    v = h + l + r,   h a multiple of q₁,   l a multiple of q₂,   |r| ≤ q₂/2 (dropped),

with quanta q₁ = 2^(E+L−52), q₂ = 2^(E+2L−105) fixed per entry by a bound |v| < 2^E shared by every rank and the
number of terms N < 2^L.  Any sum of at most N such h (or l) is an exact float64 (a multiple of q with magnitude
< 2^53 q), hence the same in any order and over any number of ranks (``MPI.SUM`` included).  The value returned
is fl(Σh + Σl): within about one ulp of the exact sum of the terms when the bound is within a few powers of two
of the true magnitudes (the dropped residuals total ≤ N q₂/2 ≈ 2^(3L−106) · bound).

This is the "pre-rounding" idea of reproducible summation (Demmel & Nguyen, ReproBLAS) with two fixed bins.
``comm=None`` means serial; mpi4py is imported only when a communicator is given.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ExactSum", "exact_sum", "allreduce_exact"]

_MIN_EXP = -900  # keeps both quanta normal numbers (entries below ~1e-270 lose exactness, not determinism)


def _n_bits(n_terms):
    return max(1, int(np.ceil(np.log2(int(n_terms) + 1))))


class ExactSum:
    """Accumulator of float64 arrays of one shape, exact up to the dropped level-3 residuals.

    Parameters
    ----------
    bound : array broadcastable to the term shape, float64 ≥ max |term| entry-wise; must be identical on every
        rank that takes part in the sum (e.g. from a MIN/MAX Allreduce, which is exact).
    n_terms : int ≥ 1, upper bound on the number of terms added over all ranks (identical on every rank).

    Raises ValueError (in :meth:`add`) when a term exceeds its bound: the sum would no longer be exact.
    """

    def __init__(self, bound, n_terms):
        bound = np.asarray(bound, dtype=np.float64)
        if np.any(~np.isfinite(bound)) or np.any(bound < 0):
            raise ValueError("ExactSum bound must be finite and >= 0")
        L = _n_bits(n_terms)
        _, e = np.frexp(bound)  # bound < 2**e
        e = np.maximum(e, _MIN_EXP)
        self.bound = bound
        self.q1 = np.ldexp(1.0, e + L - 52)
        self.q2 = np.ldexp(1.0, e + 2 * L - 105)
        self.h = np.zeros(bound.shape)
        self.l = np.zeros(bound.shape)

    def add(self, v):
        """Add one term (array of the bound's shape)."""
        v = np.asarray(v, dtype=np.float64)
        if np.any(np.abs(v) > self.bound):
            raise ValueError("ExactSum: a term exceeds its bound (non-finite data?)")
        h = np.rint(v / self.q1) * self.q1   # exact: scaling by powers of two, rounding to an integer
        r = v - h                            # exact (|r| ≤ q1/2, same binade as v or finer)
        self.h += h                          # exact (see module docstring)
        self.l += np.rint(r / self.q2) * self.q2

    def parts(self):
        """(2, ...) array of the two exact level sums; sum them over ranks with MPI.SUM, then :func:`value`."""
        return np.stack([self.h, self.l])

    @staticmethod
    def value(parts):
        """The rounded total fl(Σh + Σl) from (possibly reduced) :meth:`parts`."""
        return parts[0] + parts[1]


def allreduce_exact(comm, sums, root=None):
    """Sum every :class:`ExactSum` of ``sums`` over ``comm`` with one (All)reduce; returns the list of totals.

    ``root=None``: every rank gets the totals (Allreduce); otherwise only ``root`` (others get None).
    ``comm=None``: serial (local totals)."""
    if not sums:
        return []
    buf = np.concatenate([s.parts().ravel() for s in sums])
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI

        if root is None:
            out = np.empty_like(buf)
            comm.Allreduce(buf, out, op=MPI.SUM)
        else:
            out = np.empty_like(buf) if comm.Get_rank() == root else None
            comm.Reduce(buf, out, op=MPI.SUM, root=root)
            if out is None:
                return None
        buf = out
    res, a = [], 0
    for s in sums:
        n = 2 * s.h.size
        res.append(ExactSum.value(buf[a:a + n].reshape((2,) + s.h.shape)))
        a += n
    return res


def exact_sum(comm, terms, shape):
    """Reproducible sum of small arrays: ``terms`` is this rank's list of arrays of ``shape`` (possibly empty);
    the bound and the term count are taken from the data with one MAX/SUM Allreduce.  Collective.

    Returns the float64 total of ``shape`` (identical on every rank, whatever the split of terms over ranks).
    Raises ValueError if a term is not finite (on every rank)."""
    shape = tuple(shape)
    local = [np.asarray(t, dtype=np.float64).reshape(shape) for t in terms]
    amax = np.zeros(shape)
    for t in local:
        np.maximum(amax, np.abs(t), out=amax)   # NaN propagates
    if not np.all(np.isfinite(amax)):
        amax[...] = np.inf   # inf survives MPI.MAX (NaN may not): every rank raises below
    n_terms = len(local)
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI

        out = np.empty_like(amax)
        comm.Allreduce(np.ascontiguousarray(amax), out, op=MPI.MAX)
        amax = out
        # the quanta depend on the term count: the global count, never a layout-dependent bound
        n_terms = comm.allreduce(n_terms)
    if not np.all(np.isfinite(amax)):
        raise ValueError("exact_sum: non-finite term")
    acc = ExactSum(amax, max(n_terms, 1))
    for t in local:
        acc.add(t)
    return allreduce_exact(comm, [acc])[0]
