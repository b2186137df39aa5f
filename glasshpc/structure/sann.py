"""SANN nearest neighbours (solid-angle based nearest neighbours) for periodic boxes.

van Meel, Filion, Valeriani, Frenkel, J. Chem. Phys. 136, 234107 (2012).

For particle i sort all other particles by minimum-image distance r_1 <= r_2 <= ...;
the SANN neighbour count is the smallest m >= 3 with

    R_m = sum_{j=1..m} r_j / (m - 2)  <  r_{m+1},

and the neighbours are the m nearest particles.  The result is parameter free; the search radius
``r_max`` only has to be large enough to contain them, and it is grown automatically.

Exactness of the finite search radius: the neighbour list contains *every* particle with
r < r_max, so the first k sorted distances are exact.  If for some m the list is exhausted
(m particles found) and R_m < r_max, then r_{m+1} >= r_max > R_m and m is the answer; only if
R_m >= r_max (or fewer than 3 particles found) the radius has to grow.
"""
import numpy as np
from numba import njit

from .neighbors import NeighborList

_GROW = 1.3


@njit(cache=True)
def _sann_counts(offsets, distances, r_max):
    """Per particle: SANN count m (>=3), or -1 if the radius r_max is too small to decide.

    Also returns, per CSR row, the order (local argsort) of the row by distance.
    """
    n = offsets.shape[0] - 1
    counts = np.empty(n, np.int64)
    order = np.empty(distances.shape[0], np.int64)
    for i in range(n):
        a = offsets[i]
        b = offsets[i + 1]
        k = b - a
        o = np.argsort(distances[a:b], kind="mergesort")
        for t in range(k):
            order[a + t] = a + o[t]
        counts[i] = -1
        if k < 3:
            continue
        s = distances[order[a]] + distances[order[a + 1]] + distances[order[a + 2]]
        m = 3
        while True:
            rm = s / (m - 2)
            if m < k:
                if rm < distances[order[a + m]]:  # r_{m+1} (0-based index m)
                    counts[i] = m
                    break
                s += distances[order[a + m]]
                m += 1
            else:  # list exhausted: r_{m+1} >= r_max
                if rm < r_max:
                    counts[i] = m
                break
    return counts, order


@njit(cache=True)
def _gather(offsets, neighbors, order, counts):
    n = counts.shape[0]
    out_off = np.zeros(n + 1, np.int64)
    for i in range(n):
        out_off[i + 1] = out_off[i] + counts[i]
    out = np.empty(out_off[n], np.int64)
    for i in range(n):
        a = offsets[i]
        for t in range(counts[i]):
            out[out_off[i] + t] = neighbors[order[a + t]]
    return out_off, out


def sann_neighbors(positions, box, r_max=None):
    """SANN neighbours of every particle in a periodic orthorhombic box.

    Parameters
    ----------
    positions : (N, 3) float, any image
    box : (3,) float edge lengths
    r_max : float or None, initial search radius (default 2 * number-density^(-1/3)); it is
        multiplied by 1.3 until every particle's SANN shell is decided.

    Returns
    -------
    offsets : (N+1,) int64 and neighbors : (M,) int64 — CSR; the neighbours of i are
        neighbors[offsets[i]:offsets[i+1]], sorted by increasing distance.

    Raises ValueError when the required search radius would reach half the shortest box edge.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(box, dtype=np.float64)
    n = positions.shape[0]
    if n < 4:
        raise ValueError("SANN needs at least 4 particles")
    half = 0.5 * float(box.min())
    if r_max is None:
        r_max = 2.0 * (np.prod(box) / n) ** (1.0 / 3.0)
    r = float(r_max)
    tried_limit = False
    while True:
        if r >= half:
            if tried_limit:
                raise ValueError(
                    f"SANN search radius would have to exceed half the box ({half:.4g}); "
                    "system too small or too dilute")
            r = half * (1.0 - 1e-9)
            tried_limit = True
        nl = NeighborList(positions, box, r)
        counts, order = _sann_counts(nl.offsets, nl.distances, r)
        if (counts >= 3).all():
            return _gather(nl.offsets, nl.neighbors, order, counts)
        if tried_limit:
            raise ValueError(
                f"SANN search radius would have to exceed half the box ({half:.4g}); "
                "system too small or too dilute")
        r *= _GROW

