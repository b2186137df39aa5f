"""Cage state (CS) by constrained canonical Monte Carlo  ([CAGE] §II, Eq. 10; SCIENCE.md §3).

Canonical (NVT) Metropolis MC at temperature T with the model's own pair potential, in which
every trial move that takes particle i out of its *cage* is rejected.  The cage of i is

* ``cage='voronoi'`` (default, the paper's choice): the approximate Voronoi cell of Eq. 10,
  the points R with  |R - r_i^init| / s_i  <  |R - r_j^init| / s_j  for all SANN neighbours j
  of i in the initial configuration (s_i = sigma_ii of i's species, e.g. KA: s_A = 1,
  s_B = 0.88; override with ``cage_sigma``).  For s_i != s_j the boundary is an Apollonius
  sphere, not a plane.
* ``cage='sphere'``: |R - r_i^init| < cage_radius (default 0.5 s_i).

The cage-state position is r_i^CS = <r_i> averaged over the measurement sweeps (one sample per
sweep = N trial moves), in the same periodic image as r_i^init (positions are never wrapped),
and Delta r_i^CS = |r_i^CS - r_i^init|.

Trial moves: a random particle is displaced uniformly in a cube of side 2*step.  During the
``n_equil`` equilibration sweeps ``step`` is tuned multiplicatively towards
``target_acceptance``; it is frozen during the ``n_measure`` measurement sweeps (so the
measurement is a proper Markov chain with detailed balance).  The numba RNG is seeded with
``seed``: identical input + seed -> bit-identical output.

Potentials (``PairPotential``, generic S x S pair tables):

* ``'lj'``: 4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6] for r < cutoff_ij, truncated and by default
  NOT shifted (``shift=False``), as in Eq. 3 of [CAGE] and the original KA model.  In MC only
  energy differences enter, so a constant shift of the total energy is irrelevant; but note that
  truncation without shift leaves a step of -V(r_c) = +0.0163 eps_ij at r_c, so the sampled
  distribution differs (very slightly, only for pairs crossing r_c) from the shifted model.
  Use ``PairPotential.kob_andersen(shift=True)`` to sample the truncated-and-shifted variant.
* ``'harmonic'``: eps_ij (1 - r/s_ij)^2 for r < s_ij (cutoff = s_ij).
* ``'hard'``: overlap (r < s_ij) -> reject; otherwise every in-cage move is accepted
  (T drops out).

Energy of the moved particle: Verlet list built with radius max(cutoff) + skin around
reference positions.  Exactness argument: a pair missing from the list had reference distance
>= r_c + skin; if both particles are within skin/2 of their reference positions, their distance
is still >= r_c, where the pair energy is zero.  Hence the kernel keeps the invariant
|r_i - r_i^ref| <= skin/2 for every particle: a trial position (already inside its cage) that
would violate it triggers a rebuild of the list from the current configuration, and the step is
capped at skin/(2 sqrt 3) so that after a rebuild the trial displacement is again within skin/2.
For the spherical cage the default skin = 2 cage_radius + 0.05 makes the list built once at
r^init exact for the whole run (every particle stays within cage_radius <= skin/2 of r^init,
so no rebuild can happen; the 0.05 margin only guards against round-off).  For the Voronoi
cage the cell size is not bounded a priori (Eq. 10 cells are bounded by Apollonius spheres, the
cell of a large particle with only small neighbours can be large, and SANN misses some true
Voronoi neighbours so cells can have long spikes), so the guard above is what makes the list
exact; with the default skin 0.8 rebuilds are rare (``n_rebuilds`` is reported; e.g. 10 in
300 sweeps of a poorly relaxed N = 2000 KA glass).  If max(cutoff) + skin >= half the box the
kernel falls back to all pairs with the minimum image (requires max(cutoff) < half the box).
"""
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..structure.neighbors import _neighbor_list
from ..structure.sann import sann_neighbors

_KINDS = {"lj": 0, "harmonic": 1, "hard": 2}


@dataclass(frozen=True, eq=False)  # eq=False: array fields; identity comparison / hashing
class PairPotential:
    """Generic pair potential tables for S species (indices 0..S-1 in ``types``).

    kind : 'lj' | 'harmonic' | 'hard'
    epsilon, sigma, cutoff : (S, S) symmetric float arrays; cutoff is an absolute distance
        (KA: 2.5 sigma_ij; harmonic / hard: sigma_ij).
    shift : LJ only — subtract V(cutoff) (default False: truncated, not shifted).
    """
    kind: str
    epsilon: np.ndarray
    sigma: np.ndarray
    cutoff: np.ndarray
    shift: bool = False

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown potential kind {self.kind!r}; use one of {list(_KINDS)}")
        arrs = {}
        for name in ("epsilon", "sigma", "cutoff"):
            a = np.array(getattr(self, name), dtype=np.float64, ndmin=2)
            if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.allclose(a, a.T):
                raise ValueError(f"{name} must be a symmetric (S, S) table, got {a.shape}")
            arrs[name] = a
        if not (arrs["epsilon"].shape == arrs["sigma"].shape == arrs["cutoff"].shape):
            raise ValueError("epsilon, sigma and cutoff tables must have the same shape")
        if np.any(arrs["sigma"] <= 0) or np.any(arrs["cutoff"] <= 0):
            raise ValueError("sigma and cutoff must be positive")
        if self.kind == "hard" and not np.allclose(arrs["cutoff"], arrs["sigma"]):
            raise ValueError("hard spheres: cutoff must equal sigma")
        for name, a in arrs.items():
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def n_species(self):
        return self.sigma.shape[0]

    @property
    def energy_shift(self):
        """(S, S) constant subtracted from every pair energy inside the cutoff."""
        if self.kind == "lj" and self.shift:
            x6 = (self.sigma / self.cutoff) ** 6
            return 4.0 * self.epsilon * (x6 * x6 - x6)
        return np.zeros_like(self.sigma)

    @classmethod
    def kob_andersen(cls, shift=False):
        eps = np.array([[1.0, 1.5], [1.5, 0.5]])
        sig = np.array([[1.0, 0.8], [0.8, 0.88]])
        return cls("lj", eps, sig, 2.5 * sig, shift)

    @classmethod
    def harmonic_spheres(cls, size_ratio=1.4, epsilon=1.0):
        d = np.array([1.0, size_ratio])
        sig = 0.5 * (d[:, None] + d[None, :])
        return cls("harmonic", np.full((2, 2), float(epsilon)), sig, sig.copy())

    @classmethod
    def hard_spheres(cls, size_ratio=0.85):
        d = np.array([1.0, size_ratio])
        sig = 0.5 * (d[:, None] + d[None, :])
        return cls("hard", np.zeros((2, 2)), sig, sig.copy())


# --------------------------------------------------------------------------- random numbers
# xoshiro256+ (Blackman & Vigna 2018) seeded by splitmix64: a private, explicitly passed
# generator state (4 uint64) -- faster than numba's global Mersenne Twister and independent of
# any other numba code using np.random in the same process.

_SM_A = np.uint64(0x9E3779B97F4A7C15)
_SM_B = np.uint64(0xBF58476D1CE4E5B9)
_SM_C = np.uint64(0x94D049BB133111EB)
_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)
_U17, _U45, _U19, _U11 = np.uint64(17), np.uint64(45), np.uint64(19), np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0


@njit(cache=True)
def _rng_state(seed):
    s = np.empty(4, np.uint64)
    x = seed
    for k in range(4):
        x = x + _SM_A
        z = x
        z = (z ^ (z >> _U30)) * _SM_B
        z = (z ^ (z >> _U27)) * _SM_C
        s[k] = z ^ (z >> _U31)
    return s


@njit(cache=True, inline="always")
def _uniform(s):
    """Uniform double in [0, 1) (53 random bits)."""
    s0 = s[0]
    s1 = s[1]
    s2 = s[2]
    s3 = s[3]
    r = s0 + s3
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << _U45) | (s3 >> _U19)
    s[0] = s0
    s[1] = s1
    s[2] = s2
    s[3] = s3
    return np.float64(r >> _U11) * _TWO_M53


# --------------------------------------------------------------------------- neighbour lists
# Layout (rebuilt together): row i of the full list is split into one segment per species s of
# the neighbour, entries row_off[i*S + s] : row_off[i*S + s + 1], so that the pair parameters are
# loop constants.  Per entry k: nbj[k] = j, the lattice shift (sx, sy, sz)[k] of the image of j
# (a multiple of the box), the *current* image-shifted neighbour coordinates
# (ex, ey, ez)[k] = r_j + shift (kept up to date on every accepted move of j through the reverse
# entry rev[k], the entry of i in j's row, whose shift is -shift), and the cached pair energy
# pe[k] = pe[rev[k]].  The energy loop then streams three contiguous arrays, branch free.


@njit(cache=True)
def _pairs_cells(pos, types, box, lcut2, lmax):
    """Half-list cell search (cells of edge >= lmax / sub, half stencil, each pair once) with the
    unique minimum image (lmax < L/2); all pairs with the minimum image if a box edge holds
    fewer than 2 sub + 1 cells."""
    n = pos.shape[0]
    nc = np.empty(3, np.int64)
    sub = 2
    for d in range(3):
        if int(np.floor(box[d] * 2 / lmax)) < 5:
            sub = 1
    for d in range(3):
        nc[d] = max(1, int(np.floor(box[d] * sub / lmax)))
    use_cells = nc[0] >= 2 * sub + 1 and nc[1] >= 2 * sub + 1 and nc[2] >= 2 * sub + 1
    if not use_cells:
        nc[:] = 1
    w = np.empty((n, 3))
    ncell = nc[0] * nc[1] * nc[2]
    cell = np.empty(n, np.int64)
    start = np.zeros(ncell + 1, np.int64)
    for i in range(n):
        c = 0
        for d in range(3):
            x = pos[i, d] - box[d] * np.floor(pos[i, d] / box[d])
            if x >= box[d]:
                x -= box[d]
            w[i, d] = x
            k = min(int(x / box[d] * nc[d]), nc[d] - 1)
            c = c * nc[d] + k
        cell[i] = c
        start[c + 1] += 1
    for c in range(ncell):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[cell[i]]] = i
        fill[cell[i]] += 1
    # half stencil: offset 0 and the offsets lexicographically > 0
    offs = np.zeros(((2 * sub + 1) ** 3 // 2 + 1, 3), np.int64)
    no = 1
    if use_cells:
        for ox in range(-sub, sub + 1):
            for oy in range(-sub, sub + 1):
                for oz in range(-sub, sub + 1):
                    if (ox, oy, oz) > (0, 0, 0):
                        offs[no, 0] = ox
                        offs[no, 1] = oy
                        offs[no, 2] = oz
                        no += 1
    cap = int(0.5 * n * (4.18879 * lmax ** 3 * n / (box[0] * box[1] * box[2])) * 1.3) + 64
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    ps = np.empty((cap, 3))
    m = 0
    hb0 = 0.5 * box[0]
    hb1 = 0.5 * box[1]
    hb2 = 0.5 * box[2]
    for c in range(ncell):
        cz = c % nc[2]
        cy = (c // nc[2]) % nc[1]
        cx = c // (nc[1] * nc[2])
        for o in range(no):
            c2 = (((cx + offs[o, 0]) % nc[0]) * nc[1] + (cy + offs[o, 1]) % nc[1]) * nc[2] \
                + (cz + offs[o, 2]) % nc[2]
            for p in range(start[c], start[c + 1]):
                i = order[p]
                ti = types[i]
                q0 = p + 1 if o == 0 else start[c2]
                for q in range(q0, start[c2 + 1]):
                    j = order[q]
                    d0 = w[j, 0] - w[i, 0]  # wrapped: |d| < L, one correction at most
                    d1 = w[j, 1] - w[i, 1]
                    d2 = w[j, 2] - w[i, 2]
                    d0 = d0 - box[0] if d0 > hb0 else (d0 + box[0] if d0 < -hb0 else d0)
                    d1 = d1 - box[1] if d1 > hb1 else (d1 + box[1] if d1 < -hb1 else d1)
                    d2 = d2 - box[2] if d2 > hb2 else (d2 + box[2] if d2 < -hb2 else d2)
                    if d0 * d0 + d1 * d1 + d2 * d2 < lcut2[ti, types[j]]:
                        # exact lattice shift of the unwrapped positions: r_j + s - r_i = d
                        s0 = box[0] * np.rint((pos[i, 0] - pos[j, 0] + d0) / box[0])
                        s1 = box[1] * np.rint((pos[i, 1] - pos[j, 1] + d1) / box[1])
                        s2 = box[2] * np.rint((pos[i, 2] - pos[j, 2] + d2) / box[2])
                        if m == cap:
                            cap *= 2
                            pi2 = np.empty(cap, np.int64)
                            pj2 = np.empty(cap, np.int64)
                            ps2 = np.empty((cap, 3))
                            pi2[:m] = pi[:m]
                            pj2[:m] = pj[:m]
                            ps2[:m] = ps[:m]
                            pi, pj, ps = pi2, pj2, ps2
                        if i < j:  # row i sees r_j + s, row j sees r_i - s
                            pi[m] = i
                            pj[m] = j
                            ps[m, 0] = s0
                            ps[m, 1] = s1
                            ps[m, 2] = s2
                        else:
                            pi[m] = j
                            pj[m] = i
                            ps[m, 0] = -s0
                            ps[m, 1] = -s1
                            ps[m, 2] = -s2
                        m += 1
    return pi[:m], pj[:m], ps[:m]


@njit(cache=True)
def _pairs(pos, types, box, lcut2, allpairs):
    """Every pair image (i < j, lattice shift) with |r_j + shift - r_i|^2 < lcut2[t_i, t_j].

    Without ``allpairs`` (max list cutoff < L/2) the image is the unique minimum image, found with
    the cell list; with ``allpairs`` every image within the cutoff is enumerated (small boxes).
    """
    n = pos.shape[0]
    lmax = np.sqrt(lcut2.max())
    if not allpairs:
        return _pairs_cells(pos, types, box, lcut2, lmax)
    kx = int(np.ceil(lmax / box[0])) + 1
    ky = int(np.ceil(lmax / box[1])) + 1
    kz = int(np.ceil(lmax / box[2])) + 1
    pi = np.empty(0, np.int64)
    pj = np.empty(0, np.int64)
    ps = np.empty((0, 3))
    for sweep in range(2):  # count, then fill
        m = 0
        for i in range(n):
            ti = types[i]
            for j in range(i + 1, n):
                c = lcut2[ti, types[j]]
                d0 = pos[j, 0] - pos[i, 0]
                d1 = pos[j, 1] - pos[i, 1]
                d2 = pos[j, 2] - pos[i, 2]
                b0 = np.rint(d0 / box[0])
                b1 = np.rint(d1 / box[1])
                b2 = np.rint(d2 / box[2])
                for a0 in range(-kx, kx + 1):
                    s0 = box[0] * (a0 - b0)
                    for a1 in range(-ky, ky + 1):
                        s1 = box[1] * (a1 - b1)
                        for a2 in range(-kz, kz + 1):
                            s2 = box[2] * (a2 - b2)
                            r2 = (d0 + s0) ** 2 + (d1 + s1) ** 2 + (d2 + s2) ** 2
                            if r2 < c:
                                if sweep == 1:
                                    pi[m] = i
                                    pj[m] = j
                                    ps[m, 0] = s0
                                    ps[m, 1] = s1
                                    ps[m, 2] = s2
                                m += 1
        if sweep == 0:
            pi = np.empty(m, np.int64)
            pj = np.empty(m, np.int64)
            ps = np.empty((m, 3))
    return pi, pj, ps


@njit(cache=True)
def _build_lists(pos, types, box, n_species, lcut2, allpairs):
    """Full per-species-segmented list (see layout above) around the current positions."""
    n = pos.shape[0]
    S = n_species
    pi, pj, ps = _pairs(pos, types, box, lcut2, allpairs)
    m = pi.shape[0]
    row_off = np.zeros(n * S + 1, np.int64)
    for p in range(m):
        row_off[pi[p] * S + types[pj[p]] + 1] += 1
        row_off[pj[p] * S + types[pi[p]] + 1] += 1
    for c in range(n * S):
        row_off[c + 1] += row_off[c]
    cur = row_off[:-1].copy()
    nbj = np.empty(2 * m, np.int64)
    rev = np.empty(2 * m, np.int64)
    sx = np.empty(2 * m)
    sy = np.empty(2 * m)
    sz = np.empty(2 * m)
    ex = np.empty(2 * m)
    ey = np.empty(2 * m)
    ez = np.empty(2 * m)
    for p in range(m):
        i = pi[p]
        j = pj[p]
        k1 = cur[i * S + types[j]]
        cur[i * S + types[j]] += 1
        k2 = cur[j * S + types[i]]
        cur[j * S + types[i]] += 1
        nbj[k1] = j
        nbj[k2] = i
        rev[k1] = k2
        rev[k2] = k1
        sx[k1] = ps[p, 0]
        sy[k1] = ps[p, 1]
        sz[k1] = ps[p, 2]
        sx[k2] = -ps[p, 0]
        sy[k2] = -ps[p, 1]
        sz[k2] = -ps[p, 2]
        ex[k1] = pos[j, 0] + sx[k1]
        ey[k1] = pos[j, 1] + sy[k1]
        ez[k1] = pos[j, 2] + sz[k1]
        ex[k2] = pos[i, 0] + sx[k2]
        ey[k2] = pos[i, 1] + sy[k2]
        ez[k2] = pos[i, 2] + sz[k2]
    max_row = 0
    for i in range(n):
        max_row = max(max_row, row_off[(i + 1) * S] - row_off[i * S])
    return row_off, nbj, rev, sx, sy, sz, ex, ey, ez, max_row


# --------------------------------------------------------------------------- row energies
# No fastmath anywhere: the loops below are vectorised by LLVM as plain IEEE maps (no
# reassociation needed), and the row sum uses eight fixed partial sums, so the energies -- and
# hence every accept/reject decision -- are bitwise the same whatever the SIMD width.


@njit(cache=True, inline="always")
def _lane_sum(buf, m):
    """sum(buf[:m]) in a fixed order (eight interleaved partial sums)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    k = 0
    while k + 8 <= m:
        a0 += buf[k]
        a1 += buf[k + 1]
        a2 += buf[k + 2]
        a3 += buf[k + 3]
        a4 += buf[k + 4]
        a5 += buf[k + 5]
        a6 += buf[k + 6]
        a7 += buf[k + 7]
        k += 8
    while k < m:
        a0 += buf[k]
        k += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


# The segment loops run over array *views* indexed from 0: with an index known to be >= 0
# numba emits no negative-index wrap-around, and LLVM vectorises (5x faster than indexing the
# full arrays with k in range(a, b)).

@njit(cache=True, error_model="numpy", inline="always")
def _seg_lj(x, y, z, ex, ey, ez, c_s2, c_e4, c_rc, c_sh, out):
    for k in range(ex.shape[0]):
        dx = ex[k] - x
        dy = ey[k] - y
        dz = ez[k] - z
        r2 = dx * dx + dy * dy + dz * dz
        q = c_s2 / r2
        q6 = q * q * q
        v = c_e4 * (q6 * q6 - q6) - c_sh
        out[k] = v if r2 < c_rc else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _seg_harmonic(x, y, z, ex, ey, ez, c_is, c_ep, c_rc, out):
    for k in range(ex.shape[0]):
        dx = ex[k] - x
        dy = ey[k] - y
        dz = ez[k] - z
        r2 = dx * dx + dy * dy + dz * dz
        u = 1.0 - np.sqrt(r2) * c_is
        out[k] = c_ep * u * u if r2 < c_rc else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _seg_overlaps(x, y, z, ex, ey, ez, c_rc):
    cnt = 0
    for k in range(ex.shape[0]):
        dx = ex[k] - x
        dy = ey[k] - y
        dz = ez[k] - z
        cnt += (dx * dx + dy * dy + dz * dz) < c_rc
    return cnt


@njit(cache=True, error_model="numpy")
def _row_lj(i, x, y, z, ti, S, row_off, ex, ey, ez, sig2, eps4, rc2, esh, buf):
    """Pair energies of particle i placed at (x, y, z) with its row -> buf[0:m]; returns the sum.

    LJ: 4 eps [(s/r)^12 - (s/r)^6] - shift for r^2 < rc^2, else 0 (branch free: select)."""
    base = row_off[i * S]
    for s in range(S):
        a = row_off[i * S + s]
        b = row_off[i * S + s + 1]
        _seg_lj(x, y, z, ex[a:b], ey[a:b], ez[a:b], sig2[ti, s], eps4[ti, s], rc2[ti, s],
                esh[ti, s], buf[a - base:b - base])
    return _lane_sum(buf, row_off[i * S + S] - base)


@njit(cache=True, error_model="numpy")
def _row_harmonic(i, x, y, z, ti, S, row_off, ex, ey, ez, sig, eps, rc2, buf):
    """As _row_lj for eps (1 - r/sigma)^2, r < sigma."""
    base = row_off[i * S]
    for s in range(S):
        a = row_off[i * S + s]
        b = row_off[i * S + s + 1]
        _seg_harmonic(x, y, z, ex[a:b], ey[a:b], ez[a:b], 1.0 / sig[ti, s], eps[ti, s],
                      rc2[ti, s], buf[a - base:b - base])
    return _lane_sum(buf, row_off[i * S + S] - base)


@njit(cache=True, error_model="numpy")
def _row_overlaps(i, x, y, z, ti, S, row_off, ex, ey, ez, rc2):
    """Hard spheres: number of row neighbours overlapping particle i placed at (x, y, z)."""
    cnt = 0
    for s in range(S):
        a = row_off[i * S + s]
        b = row_off[i * S + s + 1]
        cnt += _seg_overlaps(x, y, z, ex[a:b], ey[a:b], ez[a:b], rc2[ti, s])
    return cnt


@njit(cache=True, inline="always")
def _row_energy(kind, i, x, y, z, ti, S, row_off, ex, ey, ez, sig, sig2, eps, eps4, rc2, esh,
                buf):
    if kind == 0:
        return _row_lj(i, x, y, z, ti, S, row_off, ex, ey, ez, sig2, eps4, rc2, esh, buf)
    return _row_harmonic(i, x, y, z, ti, S, row_off, ex, ey, ez, sig, eps, rc2, buf)


@njit(cache=True)
def _refresh(kind, pos, types, S, row_off, rev, ex, ey, ez, sig, sig2, eps, eps4, rc2, esh,
             buf, pe, e):
    """Recompute every cached pair energy (symmetrised: pe[k] = pe[rev[k]]) and particle energy
    e_i = sum of its row from scratch; returns the total energy 0.5 sum_i e_i (HS: number of
    overlapping pairs)."""
    n = pos.shape[0]
    tot = 0.0
    for i in range(n):
        ti = types[i]
        a = row_off[i * S]
        if kind == 2:
            tot += _row_overlaps(i, pos[i, 0], pos[i, 1], pos[i, 2], ti, S, row_off, ex, ey, ez,
                                 rc2)
            continue
        _row_energy(kind, i, pos[i, 0], pos[i, 1], pos[i, 2], ti, S, row_off, ex, ey, ez,
                    sig, sig2, eps, eps4, rc2, esh, buf)
        for k in range(a, row_off[i * S + S]):
            if k < rev[k]:
                pe[k] = buf[k - a]
                pe[rev[k]] = buf[k - a]
    if kind == 2:
        return 0.5 * tot
    for i in range(n):
        a = row_off[i * S]
        e[i] = _lane_sum(pe[a:], row_off[i * S + S] - a)
        tot += e[i]
    return 0.5 * tot


# --------------------------------------------------------------------------- cage tests

@njit(cache=True, inline="always")
def _in_voronoi(ux, uy, uz, i, coff, cvec, sc2):
    """u = R - r_i^init; cvec rows = minimum-image r_j^init - r_i^init; sc2[k] = (s_j/s_i)^2.
    Reference (row-major, early-exit) form of the kernel's test, kept for the tests."""
    u2 = ux * ux + uy * uy + uz * uz
    for k in range(coff[i], coff[i + 1]):
        wx = ux - cvec[k, 0]
        wy = uy - cvec[k, 1]
        wz = uz - cvec[k, 2]
        # |u|^2 / s_i^2 < |u - d_ij|^2 / s_j^2  <=>  |u|^2 * (s_j/s_i)^2 < |u - d_ij|^2
        if not (u2 * sc2[k] < wx * wx + wy * wy + wz * wz):
            return False
    return True


@njit(cache=True, error_model="numpy")
def _outside_voronoi(ux, uy, uz, i, coff, cvx, cvy, cvz, sc2):
    """Number of Eq. 10 conditions violated by u = R - r_i^init (0: inside); branch free over
    the SANN row stored as separate coordinate arrays (vectorised)."""
    u2 = ux * ux + uy * uy + uz * uz
    a = coff[i]
    b = coff[i + 1]
    vx = cvx[a:b]
    vy = cvy[a:b]
    vz = cvz[a:b]
    c2 = sc2[a:b]
    bad = 0
    for k in range(b - a):
        wx = ux - vx[k]
        wy = uy - vy[k]
        wz = uz - vz[k]
        bad += not (u2 * c2[k] < wx * wx + wy * wy + wz * wz)
    return bad


@njit(cache=True)
def _in_cage_full(x, i, init, box, coff, cnb, sigc):
    """Independent (slow-path) check of Eq. 10 from the raw initial positions."""
    for k in range(coff[i], coff[i + 1]):
        j = cnb[k]
        dj = np.empty(3)
        for d in range(3):
            t = init[j, d] - init[i, d]
            dj[d] = t - box[d] * np.rint(t / box[d])
        di = 0.0
        dd = 0.0
        for d in range(3):
            u = x[d] - init[i, d]
            di += u * u
            dd += (u - dj[d]) ** 2
        if not (np.sqrt(di) / sigc[i] < np.sqrt(dd) / sigc[j]):
            return False
    return True


def in_cage(point, i, positions_init, box, cage_offsets, cage_neighbors, sigma_cage):
    """True if ``point`` lies in the approximate Voronoi cell (Eq. 10) of particle i.

    point : (3,) in the same periodic image as positions_init[i];
    cage_offsets, cage_neighbors : SANN CSR lists of the initial configuration;
    sigma_cage : (N,) per-particle cage sizes s_i (KA: sigma_ii of the species).
    Same test as the MC kernel's debug check (the kernel's fast path uses precomputed
    minimum-image neighbour vectors instead).
    """
    return bool(_in_cage_full(np.asarray(point, dtype=np.float64), int(i),
                              np.ascontiguousarray(positions_init, dtype=np.float64),
                              np.ascontiguousarray(box, dtype=np.float64),
                              np.asarray(cage_offsets, dtype=np.int64),
                              np.asarray(cage_neighbors, dtype=np.int64),
                              np.ascontiguousarray(sigma_cage, dtype=np.float64)))


# --------------------------------------------------------------------------- the MC kernel

_REFRESH_SWEEPS = 1000  # cached energies recomputed from scratch at least this often


@njit(cache=True, error_model="numpy")
def _mc_kernel(pos, init, types, box, S, kind, sig, sig2, eps, eps4, rc2, esh, lcut2, T,
               cage_mode, coff, cvx, cvy, cvz, csc2, cnb, sigc, rad2,
               allpairs, skin, n_equil, n_measure, seed, step, step_max, target,
               record_every, debug):
    rng = _rng_state(seed)
    n = pos.shape[0]
    beta = 1.0 / T
    half_skin2 = (0.5 * skin) ** 2
    row_off, nbj, rev, sx, sy, sz, ex, ey, ez, max_row = _build_lists(pos, types, box, S, lcut2,
                                                                      allpairs)
    ref = pos.copy()
    buf = np.zeros(max_row + 8)
    pe = np.zeros(nbj.shape[0])
    e = np.zeros(n)
    energy = 0.0
    if kind != 2:
        energy = _refresh(kind, pos, types, S, row_off, rev, ex, ey, ez, sig, sig2, eps, eps4,
                          rc2, esh, buf, pe, e)
    n_rebuilds = 0
    acc_sum = np.zeros((n, 3))
    n_rec = n_measure // record_every if record_every > 0 else 0
    samples = np.empty((n_rec, n, 3))
    violations = 0
    block_moves = 0
    block_acc = 0
    block_len = max(500, n)
    meas_moves = 0
    meas_acc = 0
    eq_moves = 0
    eq_acc = 0
    rec = 0
    fn = float(n)
    for sweep in range(n_equil + n_measure):
        measuring = sweep >= n_equil
        if kind != 2 and sweep > 0 and sweep % _REFRESH_SWEEPS == 0:
            _refresh(kind, pos, types, S, row_off, rev, ex, ey, ez, sig, sig2, eps, eps4, rc2,
                     esh, buf, pe, e)
        for _ in range(n):
            i = int(_uniform(rng) * fn)
            if i >= n:  # guard against round-up of u * n
                i = n - 1
            nx = pos[i, 0] + step * (2.0 * _uniform(rng) - 1.0)
            ny = pos[i, 1] + step * (2.0 * _uniform(rng) - 1.0)
            nz = pos[i, 2] + step * (2.0 * _uniform(rng) - 1.0)
            ux = nx - init[i, 0]
            uy = ny - init[i, 1]
            uz = nz - init[i, 2]
            if cage_mode == 0:
                inside = _outside_voronoi(ux, uy, uz, i, coff, cvx, cvy, cvz, csc2) == 0
            else:
                inside = ux * ux + uy * uy + uz * uz < rad2[i]
            accepted = False
            if inside:
                dx = nx - ref[i, 0]
                dy = ny - ref[i, 1]
                dz = nz - ref[i, 2]
                if dx * dx + dy * dy + dz * dz > half_skin2:
                    row_off, nbj, rev, sx, sy, sz, ex, ey, ez, max_row = _build_lists(
                        pos, types, box, S, lcut2, allpairs)
                    ref[:, :] = pos
                    n_rebuilds += 1
                    if buf.shape[0] < max_row + 8:
                        buf = np.zeros(max_row + 8)
                    pe = np.zeros(nbj.shape[0])
                    if kind != 2:
                        _refresh(kind, pos, types, S, row_off, rev, ex, ey, ez, sig, sig2, eps,
                                 eps4, rc2, esh, buf, pe, e)
                ti = types[i]
                if kind == 2:
                    accepted = _row_overlaps(i, nx, ny, nz, ti, S, row_off, ex, ey, ez,
                                             rc2) == 0
                else:
                    en = _row_energy(kind, i, nx, ny, nz, ti, S, row_off, ex, ey, ez, sig,
                                     sig2, eps, eps4, rc2, esh, buf)
                    de = en - e[i]
                    if de <= 0.0 or _uniform(rng) < np.exp(-beta * de):
                        accepted = True
                        energy += de
                        # cached pair energies: row i from buf, partners through rev
                        a = row_off[i * S]
                        for k in range(a, row_off[i * S + S]):
                            v = buf[k - a]
                            e[nbj[k]] += v - pe[k]
                            pe[k] = v
                            pe[rev[k]] = v
                        e[i] = en
            if accepted:
                pos[i, 0] = nx
                pos[i, 1] = ny
                pos[i, 2] = nz
                for k in range(row_off[i * S], row_off[i * S + S]):
                    r = rev[k]  # the entry of i in j's row: shift -shift[k] (exact negation)
                    ex[r] = nx - sx[k]
                    ey[r] = ny - sy[k]
                    ez[r] = nz - sz[k]
                if debug:
                    if cage_mode == 0:
                        ok = _in_cage_full(pos[i], i, init, box, coff, cnb, sigc)
                    else:
                        ok = np.sqrt(ux * ux + uy * uy + uz * uz) < np.sqrt(rad2[i])
                    if not ok:
                        violations += 1
            if measuring:
                meas_moves += 1
                meas_acc += accepted
            else:
                eq_moves += 1
                eq_acc += accepted
                block_moves += 1
                block_acc += accepted
                if block_moves >= block_len:
                    a_blk = block_acc / block_moves
                    f = np.exp(0.5 * (a_blk - target) / max(target, 1e-3))
                    f = min(max(f, 0.5), 2.0)
                    step = min(step * f, step_max)
                    block_moves = 0
                    block_acc = 0
        if measuring:
            acc_sum += pos
            m = sweep - n_equil + 1
            if record_every > 0 and m % record_every == 0 and rec < n_rec:
                samples[rec] = pos
                rec += 1
    acc_meas = meas_acc / meas_moves if meas_moves > 0 else np.nan
    acc_eq = eq_acc / eq_moves if eq_moves > 0 else np.nan
    return (acc_sum / max(n_measure, 1), pos, acc_meas, acc_eq, step, energy, n_rebuilds,
            violations, samples)


@njit(cache=True)
def _total_energy(pos, types, box, S, kind, sig, sig2, eps, eps4, rc2, esh, lcut2, allpairs):
    row_off, nbj, rev, sx, sy, sz, ex, ey, ez, max_row = _build_lists(pos, types, box, S, lcut2,
                                                                      allpairs)
    buf = np.zeros(max_row + 8)
    pe = np.zeros(nbj.shape[0])
    e = np.zeros(pos.shape[0])
    tot = _refresh(kind, pos, types, S, row_off, rev, ex, ey, ez, sig, sig2, eps, eps4, rc2, esh,
                   buf, pe, e)
    if kind == 2:
        return np.inf if tot > 0 else 0.0
    return tot


# --------------------------------------------------------------------------- Python API

def _per_particle(value, types, n_species, name):
    v = np.asarray(value, dtype=np.float64)
    n = types.shape[0]
    if v.ndim == 0:
        return np.full(n, float(v))
    if v.shape == (n,) and n != n_species:
        return v.copy()
    if v.shape == (n_species,):
        return v[types]
    if v.shape == (n,):
        return v.copy()
    raise ValueError(f"{name} must be a scalar, per-species ({n_species},) or per-particle "
                     f"({n},) array, got shape {v.shape}")


def _prepare(positions, types, box, potential):
    positions = np.array(positions, dtype=np.float64, order="C")
    box = np.ascontiguousarray(box, dtype=np.float64)
    types = np.ascontiguousarray(types, dtype=np.int64)
    n = positions.shape[0]
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if types.shape != (n,):
        raise ValueError(f"types must have shape ({n},), got {types.shape}")
    if types.min() < 0 or types.max() >= potential.n_species:
        raise ValueError(f"types must lie in 0..{potential.n_species - 1}")
    if not np.isfinite(positions).all():
        raise ValueError("non-finite positions")
    rc = float(potential.cutoff.max())
    if rc >= 0.5 * box.min():
        raise ValueError(f"potential cutoff {rc:.4g} must be below half the box "
                         f"({0.5 * box.min():.4g})")
    return positions, types, box


def _tables(potential):
    """(kind, sigma, sigma^2, eps, 4 eps, cutoff^2, energy shift) as contiguous (S, S) tables."""
    sig = np.ascontiguousarray(potential.sigma)
    eps = np.ascontiguousarray(potential.epsilon)
    return (_KINDS[potential.kind], sig, sig * sig, eps, 4.0 * eps,
            np.ascontiguousarray(potential.cutoff ** 2),
            np.ascontiguousarray(potential.energy_shift))


def total_energy(positions, types, box, potential):
    """Total potential energy with the MC kernel's own energy routine (inf on HS overlap)."""
    positions, types, box = _prepare(positions, types, box, potential)
    kind, sig, sig2, eps, eps4, rc2, esh = _tables(potential)
    lcut2 = (potential.cutoff + 0.1) ** 2
    allpairs = float(np.sqrt(lcut2.max())) >= 0.5 * box.min()
    return float(_total_energy(positions, types, box, potential.n_species, kind, sig, sig2, eps,
                               eps4, rc2, esh, lcut2, allpairs))


def cage_neighbors(positions, box):
    """SANN neighbours of the initial configuration and their minimum-image vectors.

    Returns (offsets, neighbors, vectors) with vectors[k] = r_j^init - r_i^init (min image).
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    off, nb = sann_neighbors(positions, box)
    src = np.repeat(np.arange(positions.shape[0]), np.diff(off))
    vec = positions[nb] - positions[src]
    vec -= box * np.rint(vec / box)
    return off, nb, np.ascontiguousarray(vec)


def cage_state(positions, types, box, potential, T, n_equil, n_measure, seed,
               cage="voronoi", cage_radius=None, cage_sigma=None, target_acceptance=0.3,
               step=None, skin=None, record_every=0, debug=False):
    """Cage-state positions by constrained canonical MC ([CAGE] Eq. 10).

    Parameters
    ----------
    positions : (N, 3) initial configuration r^init (any image; output is in the same image)
    types : (N,) int species indices into the potential tables
    box : (3,) orthorhombic box edges
    potential : PairPotential
    T : temperature (k_B = 1); irrelevant for hard spheres
    n_equil, n_measure : equilibration / measurement sweeps (N trial moves each); the step is
        retuned every 500 equilibration moves (factor <= 2 per block), so tiny systems need
        more than 500 / N equilibration sweeps
    seed : int, seeds the numba RNG (deterministic)
    cage : 'voronoi' (Eq. 10 with SANN neighbours) or 'sphere'
    cage_radius : sphere radius (scalar, per species or per particle); default 0.5 * s_i
    cage_sigma : s_i in Eq. 10 (scalar, per species or per particle); default sigma_ii
    target_acceptance : acceptance the step is tuned to during equilibration
    step : initial half-side of the trial cube (default 0.05 * min s_i)
    skin : Verlet skin (default 2 * max cage_radius + 0.05 for spheres; Voronoi: 0.8, hard
        spheres 0.5)
    record_every : if > 0, also return ``samples`` — the configuration every
        ``record_every`` measurement sweeps, shape (n_measure // record_every, N, 3)
    debug : re-check every accepted position with an independent cage test and count
        ``violations`` (must be 0)

    Returns
    -------
    dict with positions (N, 3) r^CS, displacement (N,) |r^CS - r^init|, acceptance (measurement
    phase), step (frozen step), and also acceptance_equil, final (N, 3) last configuration,
    energy (running total energy of ``final``; 0 for hard spheres), n_rebuilds, violations,
    samples (if record_every).
    """
    positions, types, box = _prepare(positions, types, box, potential)
    n = positions.shape[0]
    if cage not in ("voronoi", "sphere"):
        raise ValueError(f"cage must be 'voronoi' or 'sphere', got {cage!r}")
    if potential.kind != "hard" and not T > 0:
        raise ValueError("T must be positive")
    if n_equil < 0 or n_measure < 1:
        raise ValueError("need n_equil >= 0 and n_measure >= 1")
    diag = np.diag(potential.sigma)
    sigc = _per_particle(diag if cage_sigma is None else cage_sigma, types,
                         potential.n_species, "cage_sigma")
    if np.any(sigc <= 0):
        raise ValueError("cage_sigma must be positive")
    kind, sig, sig2, eps, eps4, rc2, esh = _tables(potential)
    if kind == 2:
        # a hard-sphere initial configuration must be overlap free
        e0 = total_energy(positions, types, box, potential)
        if not np.isfinite(e0):
            raise ValueError("hard-sphere initial configuration has overlaps")

    if cage == "voronoi":
        coff, cnb, cvec = cage_neighbors(positions, box)
        src = np.repeat(np.arange(n), np.diff(coff))
        csc2 = np.ascontiguousarray((sigc[cnb] / sigc[src]) ** 2)
        rad2 = np.zeros(n)
        cage_mode = 0
        default_skin = 0.5 if kind == 2 else 0.8  # measured best (bench/bench_cage.py --skin)
        step_cap = 1.0 * float(sigc.max())
    else:
        coff = np.zeros(n + 1, np.int64)
        cnb = np.zeros(0, np.int64)
        cvec = np.zeros((0, 3))
        csc2 = np.zeros(0)
        rad = _per_particle(0.5 * sigc if cage_radius is None else cage_radius, types,
                            potential.n_species, "cage_radius")
        if np.any(rad <= 0):
            raise ValueError("cage_radius must be positive")
        rad2 = rad ** 2
        cage_mode = 1
        default_skin = 2.0 * float(rad.max()) + 0.05
        step_cap = float(rad.max())
    skin = default_skin if skin is None else float(skin)
    if not skin > 0:
        raise ValueError("skin must be positive")
    lcut2 = np.ascontiguousarray((potential.cutoff + skin) ** 2)  # per species-pair list radii
    allpairs = float(potential.cutoff.max()) + skin >= 0.5 * box.min()
    if cage == "sphere" and skin >= 2.0 * float(np.sqrt(rad2.max())):
        step_max = step_cap  # no list rebuild can ever be triggered
    else:  # after a rebuild the trial displacement must be within skin/2
        step_max = min(step_cap, skin / (2.0 * np.sqrt(3.0)) * (1 - 1e-9))
    step0 = 0.05 * float(sigc.min()) if step is None else float(step)
    step0 = min(step0, step_max)

    cvx, cvy, cvz = (np.ascontiguousarray(cvec[:, d]) for d in range(3))
    cs, final, acc, acc_eq, step_f, energy, n_reb, viol, samples = _mc_kernel(
        positions.copy(), positions, types, box, potential.n_species, kind, sig, sig2, eps,
        eps4, rc2, esh, lcut2, float(T) if kind != 2 else 1.0,
        cage_mode, coff, cvx, cvy, cvz, csc2, cnb, sigc, rad2,
        allpairs, skin, int(n_equil), int(n_measure), np.uint64(int(seed) % 2 ** 64), step0,
        step_max, float(target_acceptance), int(record_every), bool(debug))
    out = dict(positions=cs, displacement=np.linalg.norm(cs - positions, axis=1),
               acceptance=float(acc), step=float(step_f), acceptance_equil=float(acc_eq),
               final=final, energy=float(energy), n_rebuilds=int(n_reb),
               violations=int(viol))
    if record_every > 0:
        out["samples"] = samples
    return out
