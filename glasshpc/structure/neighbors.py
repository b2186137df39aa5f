"""Periodic neighbour lists (cell lists, numba) shared by every structural kernel.

Reduced LJ units (lengths in sigma_AA). Boxes are orthorhombic with their origin at 0 and
edge lengths ``box`` (3,); positions may be unwrapped, the minimum-image convention is applied,
so every cutoff must be below half the shortest box edge.
"""
import numpy as np
from numba import njit


def check_cutoff(box, cutoff):
    """Raise ValueError unless 0 < cutoff < min(box)/2 (minimum image must be unique)."""
    box = np.asarray(box, dtype=np.float64)
    if not cutoff > 0.0:
        raise ValueError(f"neighbour cutoff must be positive, got {cutoff}")
    if cutoff >= 0.5 * box.min():
        raise ValueError(
            f"neighbour cutoff {cutoff:.4g} must be smaller than half the shortest box edge "
            f"({0.5 * box.min():.4g}); use a larger system or a shorter descriptor grid")


@njit(cache=True)
def _wrap(positions, box):
    n = positions.shape[0]
    out = np.empty((n, 3))
    for i in range(n):
        for d in range(3):
            x = positions[i, d] - box[d] * np.floor(positions[i, d] / box[d])
            if x >= box[d]:  # floor round-off for x just below 0
                x -= box[d]
            out[i, d] = x
    return out


@njit(cache=True)
def _cells(wrapped, box, cutoff):
    nc = np.empty(3, np.int64)
    for d in range(3):
        nc[d] = max(1, int(np.floor(box[d] / cutoff)))
    ncell = nc[0] * nc[1] * nc[2]
    head = -np.ones(ncell, np.int64)
    nxt = -np.ones(wrapped.shape[0], np.int64)
    cell_of = np.empty(wrapped.shape[0], np.int64)
    for i in range(wrapped.shape[0]):
        c = 0
        for d in range(3):
            k = int(wrapped[i, d] / box[d] * nc[d])
            if k >= nc[d]:
                k = nc[d] - 1
            c = c * nc[d] + k
        cell_of[i] = c
        nxt[i] = head[c]
        head[c] = i
    return nc, head, nxt, cell_of


@njit(cache=True)
def _stencil(c, nc):
    """Distinct neighbouring cells of cell c (27 or fewer when nc < 3 along an axis)."""
    cz = c % nc[2]
    cy = (c // nc[2]) % nc[1]
    cx = c // (nc[1] * nc[2])
    out = np.empty(27, np.int64)
    m = 0
    for dx in range(-1, 2):
        x = (cx + dx) % nc[0]
        for dy in range(-1, 2):
            y = (cy + dy) % nc[1]
            for dz in range(-1, 2):
                z = (cz + dz) % nc[2]
                cc = (x * nc[1] + y) * nc[2] + z
                dup = False
                for k in range(m):
                    if out[k] == cc:
                        dup = True
                        break
                if not dup:
                    out[m] = cc
                    m += 1
    return out[:m]


@njit(cache=True)
def _pass(wrapped, box, cutoff, nc, head, nxt, cell_of, offsets, nbr, vec, dist, fill):
    n = wrapped.shape[0]
    rc2 = cutoff * cutoff
    for i in range(n):
        st = _stencil(cell_of[i], nc)
        k = offsets[i] if fill else 0
        cnt = 0
        for s in range(st.shape[0]):
            j = head[st[s]]
            while j >= 0:
                if j != i:
                    dx = wrapped[j, 0] - wrapped[i, 0]
                    dy = wrapped[j, 1] - wrapped[i, 1]
                    dz = wrapped[j, 2] - wrapped[i, 2]
                    dx -= box[0] * np.rint(dx / box[0])
                    dy -= box[1] * np.rint(dy / box[1])
                    dz -= box[2] * np.rint(dz / box[2])
                    r2 = dx * dx + dy * dy + dz * dz
                    if r2 < rc2:
                        if fill:
                            nbr[k] = j
                            vec[k, 0] = dx
                            vec[k, 1] = dy
                            vec[k, 2] = dz
                            dist[k] = np.sqrt(r2)
                            k += 1
                        cnt += 1
                j = nxt[j]
        if not fill:
            offsets[i + 1] = cnt


@njit(cache=True)
def _neighbor_list(positions, box, cutoff):
    wrapped = _wrap(positions, box)
    nc, head, nxt, cell_of = _cells(wrapped, box, cutoff)
    n = positions.shape[0]
    offsets = np.zeros(n + 1, np.int64)
    dummy_i = np.empty(0, np.int64)
    dummy_v = np.empty((0, 3))
    dummy_d = np.empty(0)
    _pass(wrapped, box, cutoff, nc, head, nxt, cell_of, offsets, dummy_i, dummy_v, dummy_d, False)
    for i in range(n):
        offsets[i + 1] += offsets[i]
    m = offsets[n]
    nbr = np.empty(m, np.int64)
    vec = np.empty((m, 3))
    dist = np.empty(m)
    _pass(wrapped, box, cutoff, nc, head, nxt, cell_of, offsets, nbr, vec, dist, True)
    return offsets, nbr, vec, dist


class NeighborList:
    """Full (i→j and j→i) periodic neighbour list within ``cutoff``, in CSR form.

    Parameters
    ----------
    positions : (N, 3) float64, any image (unwrapped is fine)
    box : (3,) float64 orthorhombic edge lengths, origin at 0
    cutoff : float, neighbours with r_ij < cutoff; must be < min(box)/2

    Attributes
    ----------
    offsets : (N+1,) int64 — neighbours of i are rows offsets[i]:offsets[i+1]
    neighbors : (M,) int64 — index j
    vectors : (M, 3) float64 — minimum-image r_j − r_i
    distances : (M,) float64 — |r_j − r_i|, unsorted within a row

    Raises ValueError for a cutoff that is not below half the box, or non-finite positions.
    """

    def __init__(self, positions, box, cutoff):
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        box = np.ascontiguousarray(box, dtype=np.float64)
        check_cutoff(box, cutoff)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if bad.size:
            raise ValueError(f"particle {bad[0]} has a non-finite position {positions[bad[0]]}")
        self.cutoff = float(cutoff)
        self.offsets, self.neighbors, self.vectors, self.distances = _neighbor_list(
            positions, box, float(cutoff))

    @property
    def counts(self):
        """(N,) int64 number of neighbours of each particle."""
        return np.diff(self.offsets)
