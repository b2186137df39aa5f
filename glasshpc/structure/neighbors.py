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
def _grid(box, cutoff, n):
    """Cells per axis: edge h_d = box_d / nc_d >= cutoff / k, with k (<= 4) chosen so that a cell holds ~3
    particles; finer cells let the stencil follow the cutoff sphere instead of a (3 cutoff)^3 cube."""
    vol = box[0] * box[1] * box[2]
    rho = n / vol
    h_target = cutoff
    if rho > 0.0:
        h_target = max(cutoff / 4.0, (3.0 / rho) ** (1.0 / 3.0))
    k = max(1, min(4, int(np.ceil(cutoff / h_target - 1e-9))))
    nc = np.empty(3, np.int64)
    for d in range(3):
        nc[d] = max(1, int(np.floor(box[d] * k / cutoff)))
    return nc


@njit(cache=True)
def _stencil_offsets(box, cutoff, nc):
    """Cell offsets (distinct modulo nc) whose cells can hold a particle within cutoff of the central cell."""
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    h = np.empty(3)
    for d in range(3):
        h[d] = box[d] / nc[d]
        kd = int(np.ceil(cutoff / h[d] - 1e-12))
        if 2 * kd + 1 >= nc[d]:  # every cell along this axis, each once (minimal-|o| representative)
            lo[d] = -((nc[d] - 1) // 2)
            hi[d] = nc[d] // 2
        else:
            lo[d] = -kd
            hi[d] = kd
    m = (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1)
    out = np.empty((m, 3), np.int64)
    c = 0
    rc2 = cutoff * cutoff
    for ox in range(lo[0], hi[0] + 1):
        gx = max(0, abs(ox) - 1) * h[0]
        for oy in range(lo[1], hi[1] + 1):
            gy = max(0, abs(oy) - 1) * h[1]
            for oz in range(lo[2], hi[2] + 1):
                gz = max(0, abs(oz) - 1) * h[2]
                if gx * gx + gy * gy + gz * gz < rc2:
                    out[c, 0] = ox
                    out[c, 1] = oy
                    out[c, 2] = oz
                    c += 1
    return out[:c]


@njit(cache=True)
def _cell_sort(positions, box, cutoff):
    """Wrap, bin into cells (see _grid) and sort particles by cell.

    Returns wrapped (N,3), nc (3,), cx (N,3) cell coordinates of each particle, start (ncell+1,) so that cell c holds
    sorted slots start[c]:start[c+1], order (N,) particle of each sorted slot, xs (N,3) wrapped positions in sorted
    order, and the stencil: offs (nst,3), lo (3,), wrap (3, w) (see _stencil_cells).
    """
    wrapped = _wrap(positions, box)
    n = positions.shape[0]
    nc = _grid(box, cutoff, n)
    ncell = nc[0] * nc[1] * nc[2]
    cx = np.empty((n, 3), np.int64)
    cell_of = np.empty(n, np.int64)
    start = np.zeros(ncell + 1, np.int64)
    for i in range(n):
        c = 0
        for d in range(3):
            k = int(wrapped[i, d] / box[d] * nc[d])
            if k >= nc[d]:
                k = nc[d] - 1
            cx[i, d] = k
            c = c * nc[d] + k
        cell_of[i] = c
        start[c + 1] += 1
    for c in range(ncell):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    xs = np.empty((n, 3))
    for i in range(n):
        p = fill[cell_of[i]]
        fill[cell_of[i]] += 1
        order[p] = i
        xs[p, 0] = wrapped[i, 0]
        xs[p, 1] = wrapped[i, 1]
        xs[p, 2] = wrapped[i, 2]
    offs = _stencil_offsets(box, cutoff, nc)
    # per-axis wrap tables: cell index of c + o is wrap[d, c + o - lo[d]] (no modulo in the particle loop)
    lo = np.empty(3, np.int64)
    width = 0
    for d in range(3):
        lo[d] = offs[:, d].min()
        width = max(width, nc[d] + offs[:, d].max() - lo[d])
    wrap = np.zeros((3, width), np.int64)
    for d in range(3):
        for t in range(nc[d] + offs[:, d].max() - lo[d]):
            wrap[d, t] = (t + lo[d]) % nc[d]
    return wrapped, nc, cx, start, order, xs, offs, lo, wrap


@njit(cache=True)
def _stencil_cells(c0, c1, c2, nc, offs, lo, wrap, st):
    """Fill st with the flat ids of the stencil cells of cell (c0, c1, c2)."""
    for s in range(offs.shape[0]):
        st[s] = (wrap[0, c0 + offs[s, 0] - lo[0]] * nc[1] + wrap[1, c1 + offs[s, 1] - lo[1]]) * nc[2] \
            + wrap[2, c2 + offs[s, 2] - lo[2]]


@njit(cache=True)
def _neighbor_list(positions, box, cutoff):
    n = positions.shape[0]
    wrapped, nc, cx, start, order, xs, offs, lo, wrap = _cell_sort(positions, box, cutoff)
    st = np.empty(offs.shape[0], np.int64)
    vol = box[0] * box[1] * box[2]
    cap = int(1.15 * n * n / vol * 4.18879 * cutoff ** 3) + 16 * n + 16
    nbr = np.empty(cap, np.int64)
    vec = np.empty((cap, 3))
    dist = np.empty(cap)
    offsets = np.zeros(n + 1, np.int64)
    k = 0
    for i in range(n):
        _stencil_cells(cx[i, 0], cx[i, 1], cx[i, 2], nc, offs, lo, wrap, st)
        cand = 0
        for s in range(st.shape[0]):
            cand += start[st[s] + 1] - start[st[s]]
        if k + cand > cap:
            cap = max(2 * cap, k + cand)
            nbr2 = np.empty(cap, np.int64)
            vec2 = np.empty((cap, 3))
            dist2 = np.empty(cap)
            nbr2[:k] = nbr[:k]
            vec2[:k] = vec[:k]
            dist2[:k] = dist[:k]
            nbr, vec, dist = nbr2, vec2, dist2
        k = _row(i, wrapped, box, cutoff * cutoff, st, start, order, xs, nbr, vec, dist, k)
        offsets[i + 1] = k
    if k < 0.8 * cap:
        return offsets, nbr[:k].copy(), vec[:k].copy(), dist[:k].copy()
    return offsets, nbr[:k], vec[:k], dist[:k]


@njit(cache=True, inline="always")
def minimum_image(d, b, half_b):
    """One separation component d (|d| < 1.5 b) mapped into [−b/2, b/2] for box edge b."""
    if d > half_b:
        return d - b
    if d < -half_b:
        return d + b
    return d


@njit(cache=True)
def _row(i, wrapped, box, rc2, st, start, order, xs, nbr, vec, dist, k):
    """Append the neighbours of i (scanning the stencil cells st) at nbr/vec/dist[k:], return the new k."""
    x0 = wrapped[i, 0]
    y0 = wrapped[i, 1]
    z0 = wrapped[i, 2]
    b0 = box[0]
    b1 = box[1]
    b2 = box[2]
    hb0 = 0.5 * b0
    hb1 = 0.5 * b1
    hb2 = 0.5 * b2
    for s in range(st.shape[0]):
        c = st[s]
        for p in range(start[c], start[c + 1]):
            dx = xs[p, 0] - x0
            dy = xs[p, 1] - y0
            dz = xs[p, 2] - z0
            dx = minimum_image(dx, b0, hb0)
            dy = minimum_image(dy, b1, hb1)
            dz = minimum_image(dz, b2, hb2)
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < rc2:
                j = order[p]
                if j != i:
                    nbr[k] = j
                    vec[k, 0] = dx
                    vec[k, 1] = dy
                    vec[k, 2] = dz
                    dist[k] = np.sqrt(r2)
                    k += 1
    return k


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
