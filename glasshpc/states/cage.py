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
pass of k sweeps, see below; a sweep = N trial moves), in the same periodic image as r_i^init
(positions are never wrapped), and Delta r_i^CS = |r_i^CS - r_i^init|.

Trial moves: each particle in turn is displaced uniformly in a cube of side 2*step, k =
``moves_per_visit`` times in a row (default 4, as the default ``nselect`` of HOOMD-blue's HPMC;
each trial move is a Metropolis move of its own, so balance holds for any k), so a pass over
the particles is k sweeps of N trial moves.  During the ``n_equil`` equilibration sweeps
``step`` is tuned multiplicatively towards ``target_acceptance``; it is frozen during the
``n_measure`` measurement sweeps (so the measurement is a proper Markov chain with detailed
balance), and r^CS averages one sample per pass.  The numba RNG is seeded with ``seed``:
identical input + seed -> bit-identical output.

Potentials (``PairPotential``, generic S x S pair tables):

* ``'lj'``: 4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6] for r < cutoff_ij, truncated and by default
  NOT shifted (``shift=False``), as in Eq. 3 of [CAGE] and the original KA model.  In MC only
  energy differences enter, so a constant shift of the total energy is irrelevant; but note that
  truncation without shift leaves a step of -V(r_c) = +0.0163 eps_ij at r_c, so the sampled
  distribution differs (very slightly, only for pairs crossing r_c) from the shifted model.
  Use ``PairPotential.kob_andersen(shift=True)`` to sample the truncated-and-shifted variant.
* ``'harmonic'``: eps_ij (1 - r/s_ij)^2 for r < s_ij (cutoff = s_ij).
* ``'hard'``: overlap (r < s_ij (1 + 1e-6), a margin above the single-precision error of the
  list coordinates, so no accepted configuration overlaps) -> reject; otherwise every in-cage
  move is accepted (T drops out).

Sweeps visit the particles sequentially in Morton order (``spatial_order``), which satisfies balance
(Manousiouthakis & Deem, J. Chem. Phys. 110, 2753 (1999)) like random selection does, and keeps
the neighbour rows an accepted move rewrites in cache.

Energy of the moved particle: a full Verlet list of radius rc_ij + skin around *reference
positions*; each entry holds the neighbour's reference position relative to the row owner's
(single precision), and each particle its displacement from its own reference, which the row
loop gathers (see the list layout below), so an accepted move writes three numbers.
Exactness argument: a pair missing from the list
has reference distance >= rc_ij + skin; every particle stays within skin/2 of its reference
position, so the pair is beyond its cutoff.  A trial position (already inside its cage) farther
than skin/2 from ref_i *re-centres* particle i: ref_i becomes its current position (the trial
displacement is capped at skin / (2 sqrt 3)), and its row and the reverse entries are redone
from a cell list of the reference positions; in a cage only a few particles per sweep need
this, so there are no global rebuilds (only when a fixed-capacity segment overflows, or for
tiny boxes, max(cutoff) + skin >= half the box, where all images are enumerated and the whole
list is rebuilt instead).  Defaults: skin 0.6 for LJ, 0.4 for harmonic and hard spheres
(measured best, bench/bench_cage.py --skin).

Speed (bench/bench_cage.py, one core, N = 2000, Voronoi cage, against the pre-issue-15 kernel
in the same run; figures in the issue-15 closing notes).  What makes it fast: k trial moves per
visit (the neighbours' coordinates relative to ref_i gathered once per visit into a contiguous
buffer, the row energy kept between the trials: each trial streams the buffer and evaluates the
pair terms at the trial position only; k = 4: KA 1.6-1.9x, HS 1.9-2.0x the rate of k = 1),
accepted moves touch only the moved particle (no neighbour rows), row sums in fixed point
(exact and order free, so the loops vectorise; LJ in int32 lanes), SIMD-padded segments (hard
spheres: the whole packed row in one loop), one random draw per trial move (21 bits per
coordinate), the inscribed-ball shortcut of the cage test, sequential sweeps over spatially
sorted particles.
"""
from dataclasses import dataclass

import numpy as np
from numba import njit

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
    return np.float64(_next64(s) >> _U11) * _TWO_M53


_M21 = np.uint64(0x1FFFFF)
_U22, _U43, _U1 = np.uint64(22), np.uint64(43), np.uint64(1)
_TWO_M21 = 1.0 / 2097152.0


@njit(cache=True, inline="always")
def _cube3(s):
    """Three uniform numbers in (-1, 1) from one draw: 21 bits each (bits 63..1; the lowest bit
    of xoshiro256+ is weak), at the symmetric grid (2k + 1) / 2^21 - 1 so the trial move and
    its reverse are equally likely (resolution 2^-20 of the step: ample for a trial move, and
    one draw instead of three is 15 % of a hard-sphere move)."""
    r = _next64(s)
    a = np.float64(((r >> _U43) & _M21) * np.uint64(2) + _U1) * _TWO_M21 - 1.0
    b = np.float64(((r >> _U22) & _M21) * np.uint64(2) + _U1) * _TWO_M21 - 1.0
    c = np.float64(((r >> _U1) & _M21) * np.uint64(2) + _U1) * _TWO_M21 - 1.0
    return a, b, c


@njit(cache=True, inline="always")
def _next64(s):
    """Next 64-bit output of xoshiro256+ (state s updated in place)."""
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
    return r


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


# --------------------------------------------------------------------------- neighbour lists
# Layout: row i of the full list is split into one segment per species s of the neighbour so
# that the pair parameters are loop constants.  Segment (i, s) owns the slots
# seg_base[i*S + s] : seg_base[i*S + s + 1] (its capacity) of which the first seg_cnt[i*S + s]
# are used; the capacity is a multiple of _PAD and the unused slots hold a far-away offset,
# so the row loops run over whole SIMD blocks.  Per entry k: nbj[k] = j, the lattice image
# (ix, iy, iz)[k] (int8; the shift of the image of j is box * image), the reverse entry rev[k]
# (the entry of i in j's row, image -image) and the offset of the reference positions,
# (ex, ey, ez)[k] = float32(ref_j + shift - ref_i), which changes only when i or j is
# re-centred.  Per particle: q_i = float32(r_i - ref_i) (qx, qy, qz; |q| <= skin/2).  The
# pair vector seen from i is e_k + q_j - q_i: the row loop streams e_k and gathers q_j, and an
# accepted move only writes q_i (the earlier layout stored r_j + shift - ref_i per entry and
# rewrote every neighbour's row on acceptance: half the run time).  Single precision costs
# nothing physically: the pair vectors carry an absolute error below 5e-7 sigma and the LJ
# trial-move energies are evaluated in single precision, i.e. the kernel samples the Boltzmann
# weight of pair energies perturbed by ~1e-6 relative; the row sums are exact fixed-point
# integers and the running energy is a double (it stays within 1e-6 relative of a
# double-precision total over long runs, tests/test_cage.py).
#
# Exactness: every pair missing from the list has reference distance |ref_i - ref_j| >=
# rc_ij + skin, and every particle stays within skin/2 of its reference position, so a missing
# pair is always beyond its cutoff.  A trial position farther than skin/2 from ref_i *re-centres
# particle i* (ref_i := its current position, q_i := 0; its row is re-searched in a cell list of
# the reference positions, pairs beyond rc_ij + skin are dropped, new ones added to both rows,
# and the offsets of the kept pairs rewritten in both rows) instead of rebuilding the whole
# list: in a cage only a few particles per sweep ever need it.


@njit(cache=True, inline="always")
def _rel(p, shift, r):
    """Stored coordinate of a list entry: float32(p + shift - r), one rounding order everywhere."""
    return np.float32((p + shift) - r)


@njit(cache=True)
def _build_lists(pos, types, box, n_species, lcut2, allpairs, slack, far):
    """Full neighbour list around the current positions (= the reference positions; layout
    above).

    Segment capacities are slack x the largest count of their (species, species) kind (+4).
    Two stable counting sorts of the directed entries -- by neighbour, then by segment -- leave
    every segment sorted by neighbour index: with spatially sorted particles and sequential
    sweeps, the entries an accepted move rewrites in its neighbours' rows then share cache lines
    with those the previous move rewrote."""
    n = pos.shape[0]
    S = n_species
    pi, pj, ps = _pairs(pos, types, box, lcut2, allpairs)
    m2 = 2 * pi.shape[0]
    # directed entry e: row pi[e >> 1] (e even) or pj[e >> 1] (e odd), neighbour the other one
    start = np.zeros(n + 1, np.int64)
    for e in range(m2):
        start[(pj[e >> 1] if e & 1 == 0 else pi[e >> 1]) + 1] += 1
    for c in range(n):
        start[c + 1] += start[c]
    by_nb = np.empty(m2, np.int64)
    for e in range(m2):
        j = pj[e >> 1] if e & 1 == 0 else pi[e >> 1]
        by_nb[start[j]] = e
        start[j] += 1
    seg_cnt = np.zeros(n * S, np.int64)
    for e in range(m2):
        p = e >> 1
        r, j = (pi[p], pj[p]) if e & 1 == 0 else (pj[p], pi[p])
        seg_cnt[r * S + types[j]] += 1
    cap = np.zeros((S, S), np.int64)
    for i in range(n):
        for s in range(S):
            cap[types[i], s] = max(cap[types[i], s], seg_cnt[i * S + s])
    for a in range(S):
        for s in range(S):
            c = int(cap[a, s] * slack) + 4 if slack > 1.0 else cap[a, s]
            cap[a, s] = (c + _PAD - 1) // _PAD * _PAD  # whole SIMD blocks (see _moves)
    seg_base = np.zeros(n * S + 1, np.int64)
    max_row = 0
    for i in range(n):
        row = 0
        for s in range(S):
            seg_base[i * S + s + 1] = seg_base[i * S + s] + cap[types[i], s]
            row += cap[types[i], s]
        max_row = max(max_row, row)
    cur = seg_base[:-1].copy()
    slot = np.empty(m2, np.int64)
    for q in range(m2):
        e = by_nb[q]
        p = e >> 1
        r, j = (pi[p], pj[p]) if e & 1 == 0 else (pj[p], pi[p])
        slot[e] = cur[r * S + types[j]]
        cur[r * S + types[j]] += 1
    size = seg_base[n * S]
    nbj = np.zeros(size, np.int32)
    rev = np.zeros(size, np.int32)
    ix = np.zeros(size, np.int8)
    iy = np.zeros(size, np.int8)
    iz = np.zeros(size, np.int8)
    ex = np.full(size, far, np.float32)  # unused slots: a neighbour beyond every cutoff
    ey = np.full(size, far, np.float32)
    ez = np.full(size, far, np.float32)
    for e in range(m2):
        p = e >> 1
        k = slot[e]
        sign = 1.0 if e & 1 == 0 else -1.0
        i, j = (pi[p], pj[p]) if e & 1 == 0 else (pj[p], pi[p])
        nbj[k] = j
        rev[k] = slot[e ^ 1]
        ix[k] = np.int8(np.rint(sign * ps[p, 0] / box[0]))
        iy[k] = np.int8(np.rint(sign * ps[p, 1] / box[1]))
        iz[k] = np.int8(np.rint(sign * ps[p, 2] / box[2]))
        ex[k] = _rel(pos[j, 0], box[0] * ix[k], pos[i, 0])
        ey[k] = _rel(pos[j, 1], box[1] * iy[k], pos[i, 1])
        ez[k] = _rel(pos[j, 2], box[2] * iz[k], pos[i, 2])
    return seg_base, seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez, max_row


# Cell list of the reference positions for re-centring: cells of edge >= max list radius / 2,
# searched with a 5^3 stencil; fixed cell capacity (cell_mem rows), slot of each particle in
# where[i].

@njit(cache=True)
def _ref_cells(ref, box, lmax):
    nc = np.empty(3, np.int64)
    for d in range(3):
        nc[d] = max(1, int(np.floor(box[d] * 2.0 / lmax)))
    ncell = nc[0] * nc[1] * nc[2]
    n = ref.shape[0]
    cell_of = np.empty(n, np.int64)
    cnt = np.zeros(ncell, np.int64)
    for i in range(n):
        c = _cell_index(ref[i, 0], ref[i, 1], ref[i, 2], box[0], box[1], box[2], nc[0],
                        nc[1], nc[2])
        cell_of[i] = c
        cnt[c] += 1
    ccap = 2 * cnt.max() + 8
    cell_mem = np.empty((ncell, ccap), np.int32)
    where = np.empty(n, np.int64)
    cnt[:] = 0
    for i in range(n):
        c = cell_of[i]
        cell_mem[c, cnt[c]] = i
        where[i] = cnt[c]
        cnt[c] += 1
    return nc, cell_of, cnt, cell_mem, where


@njit(cache=True, inline="always")
def _cell_index(x, y, z, b0, b1, b2, n0, n1, n2):
    """Cell of a point (any image) in an n0 x n1 x n2 grid of the box b0 x b1 x b2 (scalars
    only: array arguments of inlined helpers cost reference counting)."""
    c = 0
    for v, b, nd in ((x, b0, n0), (y, b1, n1), (z, b2, n2)):
        w = v - b * np.floor(v / b)
        c = c * nd + min(int(w / b * nd), nd - 1)
    return c


@njit(cache=True)
def _recentre(i, x, y, z, pos, ref, types, box, S, lcut2, seg_base, seg_cnt, nbj, rev,
              ix, iy, iz, ex, ey, ez, nc, cell_of, cell_cnt, cell_mem, where, mark, stamp, far):
    """Move the reference position of particle i to (x, y, z) and make its row (and the
    reverse entries) exactly the pairs with |ref_i - ref_j| < rc_ij + skin (minimum image,
    unique since the list radius is below half the box).  ``mark``/``stamp``: scratch marks of
    the retained neighbours (stamp unique per call).  Returns False if a segment or cell is
    full (the caller then rebuilds everything with more room)."""
    ti = types[i]
    n = pos.shape[0]
    b0 = box[0]
    b1 = box[1]
    b2 = box[2]
    ib0 = 1.0 / b0
    ib1 = 1.0 / b1
    ib2 = 1.0 / b2
    # 1. keep the current pairs still within range (their coordinates now relative to the new
    #    reference position), drop the others (both rows)
    for s in range(S):
        seg = i * S + s
        k = seg_base[seg]
        while k < seg_base[seg] + seg_cnt[seg]:
            j = nbj[k]
            s0 = box[0] * ix[k]
            s1 = box[1] * iy[k]
            s2 = box[2] * iz[k]
            d0 = ref[j, 0] + s0 - x
            d1 = ref[j, 1] + s1 - y
            d2 = ref[j, 2] + s2 - z
            if d0 * d0 + d1 * d1 + d2 * d2 < lcut2[ti, s]:
                mark[j] = stamp
                r = rev[k]
                ex[k] = _rel(ref[j, 0], s0, x)
                ey[k] = _rel(ref[j, 1], s1, y)
                ez[k] = _rel(ref[j, 2], s2, z)
                ex[r] = _rel(x, -s0, ref[j, 0])
                ey[r] = _rel(y, -s1, ref[j, 1])
                ez[r] = _rel(z, -s2, ref[j, 2])
                k += 1
            else:
                # swap-remove the reverse entry, then k itself: the last used slot of the
                # segment moves in and its partner's reverse index follows (written out:
                # an inlined helper would cost reference counting)
                for kk, sg in ((np.int64(rev[k]), j * S + ti), (k, seg)):
                    last = seg_base[sg] + seg_cnt[sg] - 1
                    if kk != last:
                        nbj[kk] = nbj[last]
                        rev[kk] = rev[last]
                        ix[kk] = ix[last]
                        iy[kk] = iy[last]
                        iz[kk] = iz[last]
                        ex[kk] = ex[last]
                        ey[kk] = ey[last]
                        ez[kk] = ez[last]
                        rev[rev[kk]] = kk
                    ex[last] = far
                    ey[last] = far
                    ez[last] = far
                    seg_cnt[sg] -= 1
    # 2. add the missing pairs found in the cell list of the reference positions (5^3 stencil;
    #    all particles if a box edge holds fewer than 5 cells)
    use_cells = nc[0] >= 5 and nc[1] >= 5 and nc[2] >= 5
    c = _cell_index(x, y, z, box[0], box[1], box[2], nc[0], nc[1], nc[2])
    span = 2 if use_cells else 0
    cx = c // (nc[1] * nc[2])
    cy = (c // nc[2]) % nc[1]
    cz = c % nc[2]
    for qx in range(cx - span, cx + span + 1):
        wx = qx + nc[0] if qx < 0 else (qx - nc[0] if qx >= nc[0] else qx)
        for qy in range(cy - span, cy + span + 1):
            wy = qy + nc[1] if qy < 0 else (qy - nc[1] if qy >= nc[1] else qy)
            cxy = (wx * nc[1] + wy) * nc[2]
            for qz in range(cz - span, cz + span + 1):
                c2 = cxy + (qz + nc[2] if qz < 0 else (qz - nc[2] if qz >= nc[2] else qz))
                m = cell_cnt[c2] if use_cells else n
                for q in range(m):
                    # unsigned indices and rint: no wrap-around code, no unpredictable branches
                    j = np.uint64(cell_mem[np.uint64(c2), np.uint64(q)] if use_cells else q)
                    d0 = ref[j, 0] - x
                    d1 = ref[j, 1] - y
                    d2 = ref[j, 2] - z
                    d0 -= b0 * np.rint(d0 * ib0)
                    d1 -= b1 * np.rint(d1 * ib1)
                    d2 -= b2 * np.rint(d2 * ib2)
                    tj = types[j]
                    if d0 * d0 + d1 * d1 + d2 * d2 >= lcut2[ti, tj] or j == i \
                            or mark[j] == stamp:
                        continue
                    si = i * S + tj
                    sj = j * S + ti
                    if seg_base[si] + seg_cnt[si] == seg_base[si + 1] or \
                            seg_base[sj] + seg_cnt[sj] == seg_base[sj + 1]:
                        return False
                    # lattice image of j near i
                    a0 = np.int8(np.rint((x - ref[j, 0] + d0) / box[0]))
                    a1 = np.int8(np.rint((y - ref[j, 1] + d1) / box[1]))
                    a2 = np.int8(np.rint((z - ref[j, 2] + d2) / box[2]))
                    k = seg_base[si] + seg_cnt[si]
                    r = seg_base[sj] + seg_cnt[sj]
                    seg_cnt[si] += 1
                    seg_cnt[sj] += 1
                    nbj[k] = j
                    nbj[r] = i
                    rev[k] = r
                    rev[r] = k
                    ix[k] = a0
                    iy[k] = a1
                    iz[k] = a2
                    ix[r] = -a0
                    iy[r] = -a1
                    iz[r] = -a2
                    ex[k] = _rel(ref[j, 0], box[0] * a0, x)
                    ey[k] = _rel(ref[j, 1], box[1] * a1, y)
                    ez[k] = _rel(ref[j, 2], box[2] * a2, z)
                    ex[r] = _rel(x, box[0] * -a0, ref[j, 0])
                    ey[r] = _rel(y, box[1] * -a1, ref[j, 1])
                    ez[r] = _rel(z, box[2] * -a2, ref[j, 2])
    # 3. move i in the cell list of the reference positions
    c_old = cell_of[i]
    if c != c_old:
        w = where[i]
        last = cell_mem[c_old, cell_cnt[c_old] - 1]
        cell_mem[c_old, w] = last
        where[last] = w
        cell_cnt[c_old] -= 1
        if cell_cnt[c] == cell_mem.shape[1]:
            return False
        cell_mem[c, cell_cnt[c]] = i
        where[i] = cell_cnt[c]
        cell_cnt[c] += 1
        cell_of[i] = c
    ref[i, 0] = x
    ref[i, 1] = y
    ref[i, 2] = z
    return True


@njit(cache=True)
def _list_errors(pos, ref, qx, qy, qz, types, box, S, lcut2, seg_base, seg_cnt, nbj, rev, ix,
                 iy, iz, ex, ey, ez, far):
    """Brute-force audit of the list (debug mode): every pair with minimum-image reference
    distance below its list radius is listed exactly once in both rows, with opposite shifts,
    mutual reverse indices and the current neighbour coordinates; returns the error count."""
    n = pos.shape[0]
    err = 0
    count = np.zeros(n, np.int64)
    for i in range(n):
        ti = types[i]
        count[:] = 0
        for s in range(S):
            seg = i * S + s
            for k in range(seg_base[seg], seg_base[seg] + seg_cnt[seg]):
                j = nbj[k]
                r = rev[k]
                count[j] += 1
                if types[j] != s or rev[r] != k or nbj[r] != i or ix[r] != -ix[k] \
                        or iy[r] != -iy[k] or iz[r] != -iz[k]:
                    err += 1
                if ex[k] != _rel(ref[j, 0], box[0] * ix[k], ref[i, 0]) \
                        or ey[k] != _rel(ref[j, 1], box[1] * iy[k], ref[i, 1]) \
                        or ez[k] != _rel(ref[j, 2], box[2] * iz[k], ref[i, 2]):
                    err += 1
            for k in range(seg_base[seg] + seg_cnt[seg], seg_base[seg + 1]):  # unused slots
                if ex[k] != far or ey[k] != far or ez[k] != far or nbj[k] < 0 or nbj[k] >= n:
                    err += 1
            if (seg_base[seg + 1] - seg_base[seg]) % _PAD != 0:
                err += 1
        if qx[i] != np.float32(pos[i, 0] - ref[i, 0]) \
                or qy[i] != np.float32(pos[i, 1] - ref[i, 1]) \
                or qz[i] != np.float32(pos[i, 2] - ref[i, 2]):
            err += 1
        for j in range(n):
            if j == i:
                continue
            d2 = 0.0
            for d in range(3):
                t = ref[j, d] - ref[i, d]
                t -= box[d] * np.rint(t / box[d])
                d2 += t * t
            if (d2 < lcut2[ti, types[j]]) != (count[j] == 1) or count[j] > 1:
                err += 1
    return err


# --------------------------------------------------------------------------- row energies
# The trial-move row loops live in _moves.  No fastmath anywhere: they are vectorised by LLVM
# as plain IEEE maps plus an integer reduction (no reassociation needed; unsigned offsets, so
# no negative-index wrap-around code), so the energies -- and hence every accept/reject
# decision -- are bitwise the same whatever the SIMD width.  The initial total energy comes
# from _total_energy (double precision, from the pair search).


# Row sums in fixed point: every pair energy v is added as an integer, so the row energy E_i is
# exact and independent of the order and of the SIMD width -- and, being an integer reduction,
# the row loops (over the gathered visit buffer) are vectorised by LLVM without fastmath.  LJ
# (single-precision pair terms): x = v * 2^19 is split exactly into h = trunc(x) and
# trunc((x - h) * 2^12), each summed in int32, so the loop runs as many lanes as float32 does
# (an int64 sum halves them) at a resolution of 2^-31 eps per pair, far below the
# single-precision error of the pair energies.  A trial move compares E_i at the trial position
# with E_i at the current one, both such sums over the same buffer, so the reverse move sees
# exactly -dE.
# Harmonic (double-precision pair terms): trunc(v * 2^32) in int64.  |v| must stay below
# lim = 2^31 / (2^19 max_row) (LJ, about 20 eps) or 2^30 / max_row (harmonic): no integer
# overflow; a row with a larger pair energy (a trial move into a near overlap, rejected anyway
# at any sensible T) is re-summed in floating point by _row_e_float.
_PAD = 8                    # segment capacities are multiples of this (SIMD blocks)
_FX = 4294967296.0          # 2^32
_FX_INV = 1.0 / _FX
_FXL32 = np.float32(524288.0)   # 2^19
_FXL_INV = 1.0 / 524288.0
_FXLO32 = np.float32(4096.0)    # fraction of d * 2^19 in units of 2^-12
_FXLO_INV = 1.0 / 2147483648.0  # 2^-31


@njit(cache=True)
def _fx_limits(max_row):
    lim = 1073741824.0 / max(max_row, 1)   # 2^30 / max_row: |sum| < 2^62
    # 2^31 / 2^19 / max_row, less a margin for the float32 rounding of the bound itself
    lim32 = np.float32(4096.0 * (1.0 - 1e-6) / max(max_row, 1))
    return lim, lim32


@njit(cache=True, inline="always")
def _r2(ex, ey, ez, x, y, z):
    """Squared distance of a neighbour at (ex, ey, ez) from (x, y, z) (scalars only: array
    arguments of inlined helpers would cost reference counting)."""
    ax = ex - x
    ay = ey - y
    az = ez - z
    return ax * ax + ay * ay + az * az


@njit(cache=True, inline="always")
def _lj_v32(r2, c_s2, c_e4, c_sh, c_rc32):
    """V(r) of one LJ pair in single precision from the squared distance (0 beyond the
    cutoff)."""
    q = c_s2 / r2
    q = q * q * q
    return c_e4 * (q * q - q) - c_sh if r2 < c_rc32 else np.float32(0.0)


@njit(cache=True, inline="always")
def _harmonic_v(r2, c_is, c_ep, c_rc):
    w = 1.0 - np.sqrt(r2) * c_is
    return c_ep * w * w if r2 < c_rc else 0.0


@njit(cache=True)
def _row_e_float(i, ti, S, kind, sig, sig2, eps, eps4, esh, rc2, x, y, z, seg_cnt, bx, by,
                 bz):
    """The row energy of i at (x, y, z) (relative to ref_i) summed sequentially in double
    precision over the visit buffer (segments packed in whole _PAD blocks; the same pair terms
    as the fixed-point loops of _moves); for rows with a pair energy beyond the fixed-point
    range."""
    e = 0.0
    o = 0
    for s in range(S):
        for b in range(o, o + seg_cnt[i * S + s]):
            if kind == 0:
                e += _lj_v32(_r2(bx[b], by[b], bz[b], x, y, z), np.float32(sig2[ti, s]),
                             np.float32(eps4[ti, s]), np.float32(esh[ti, s]),
                             np.float32(rc2[ti, s]))
            else:
                e += _harmonic_v(_r2(np.float64(bx[b]), np.float64(by[b]), np.float64(bz[b]),
                                     np.float64(x), np.float64(y), np.float64(z)),
                                 1.0 / sig[ti, s], eps[ti, s], rc2[ti, s])
        o += (seg_cnt[i * S + s] + _PAD - 1) // _PAD * _PAD   # the segments' packed blocks
    return e


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

MOVES_PER_VISIT = 4  # trial moves per particle visit (cage_state's moves_per_visit)
_SLACK = 1.3  # segment capacity / largest count at a global rebuild (room for re-centring)
# Hard spheres: trial moves closer than sigma_ij (1 + _HS_MARGIN) are rejected; the margin
# exceeds the single-precision error of the pair vectors (< 5e-7 sigma), so no accepted
# configuration ever overlaps.
_HS_MARGIN = 1e-6
# slots of the small state arrays shared by _moves and _mc_kernel
_ENERGY, _STEP, _PX, _PY, _PZ = 0, 1, 2, 3, 4
_BLOCK_MOVES, _BLOCK_ACC, _SWEEP_ACC, _RECENTRED, _VIOLATIONS, _PENDING, _TRIAL = range(7)


@njit(cache=True, error_model="numpy")
def _moves(i0, measuring, pos, init, ref, qx, qy, qz, types, box, S, kind, sig, sig2, eps, eps4,
           rc2, esh, lcut2, beta, cage_mode, coff, cvx, cvy, cvz, csc2, cnb, sigc, rad2, rin2,
           allpairs, half_skin2, step_max, target, block_len, debug, rng, fs, ist,
           seg_base, seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez,
           nc, cell_of, cell_cnt, cell_mem, where, mark, lim, lim32, far, kv, bx, by, bz, bc):
    """Trial moves (kv per particle) of particles i0 .. N-1 of one sequential pass.

    Returns N when the pass is done, or the index i of a particle whose move needs a global
    list rebuild (its trial position is kept in fs[_PX:_PZ + 1] and its trial index in
    ist[_TRIAL], ist[_PENDING] = 1; the caller rebuilds and calls again from i).  The arrays are never reassigned here, so numba passes
    them without reference counting (a loop that can rebind them paid two atomic updates per
    array and move, half of the run time)."""
    n = pos.shape[0]
    step = fs[_STEP]
    for i in range(i0, n):
        ti = types[i]
        # the neighbours stay put while i makes its kv trial moves: their coordinates relative
        # to ref_i (e_k + q_j) are gathered once per visit into the contiguous buffer and the
        # current row energy is kept, so each trial move streams the buffer and evaluates the
        # pair terms at the trial position only
        filled = False
        e_known = False   # E_i at the current position, kept while the buffer is valid
        e_cur = 0.0
        e_new = 0.0
        row_len = np.uint64(0)
        t0 = 0
        if ist[_PENDING]:
            t0 = ist[_TRIAL]
        for t in range(t0, kv):
            ox = pos[i, 0]
            oy = pos[i, 1]
            oz = pos[i, 2]
            if ist[_PENDING]:
                nx = fs[_PX]
                ny = fs[_PY]
                nz = fs[_PZ]
                ist[_PENDING] = 0
            else:
                wx, wy, wz = _cube3(rng)
                nx = ox + step * wx
                ny = oy + step * wy
                nz = oz + step * wz
            ux = nx - init[i, 0]
            uy = ny - init[i, 1]
            uz = nz - init[i, 2]
            u2 = ux * ux + uy * uy + uz * uz
            if cage_mode == 0 and u2 < rin2[i]:
                inside = True  # within the ball inscribed in the cell: no face test needed
            elif cage_mode == 0:  # Eq. 10, branch free over the SANN row
                a = np.uint64(coff[i])
                bad = False
                for u in range(np.uint64(coff[i + 1] - coff[i])):
                    k = a + np.uint64(u)
                    wx = ux - cvx[k]
                    wy = uy - cvy[k]
                    wz = uz - cvz[k]
                    bad |= not (u2 * csc2[k] < wx * wx + wy * wy + wz * wz)
                inside = not bad
            else:
                inside = u2 < rad2[i]
            accepted = False
            if inside:
                rx = ref[i, 0]
                ry = ref[i, 1]
                rz = ref[i, 2]
                if (nx - rx) ** 2 + (ny - ry) ** 2 + (nz - rz) ** 2 > half_skin2:
                    # re-centre i on its current position (within skin/2 of the trial
                    # position, since step <= skin / (2 sqrt 3))
                    ok = False
                    if not allpairs:
                        ist[_RECENTRED] += 1
                        ok = _recentre(i, ox, oy, oz, pos, ref, types, box, S, lcut2, seg_base,
                                       seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez, nc, cell_of,
                                       cell_cnt, cell_mem, where, mark, ist[_RECENTRED], far)
                    if not ok:
                        fs[_PX] = nx
                        fs[_PY] = ny
                        fs[_PZ] = nz
                        ist[_PENDING] = 1
                        ist[_TRIAL] = t
                        fs[_STEP] = step
                        return i
                    rx = ref[i, 0]
                    ry = ref[i, 1]
                    rz = ref[i, 2]
                    qx[i] = 0.0
                    qy[i] = 0.0
                    qz[i] = 0.0
                    filled = False  # new reference position: new offsets
                qnx = np.float32(nx - rx)
                qny = np.float32(ny - ry)
                qnz = np.float32(nz - rz)
                if not filled:
                    # gather the neighbours' coordinates (relative to ref_i); the loops are
                    # written out because inlined helpers alias the arrays and bring back the
                    # reference counting.  The segments' used slots, each rounded up to whole
                    # blocks of _PAD (the unused ones hold far-away neighbours: the vector loops
                    # need no scalar remainder), are packed one after the other; bc: the
                    # slot's squared contact distance (hard spheres: one loop over the row)
                    o = np.uint64(0)
                    for s in range(S):
                        a = np.uint64(seg_base[i * S + s])
                        m = (np.uint64(seg_cnt[i * S + s]) + np.uint64(_PAD - 1)) \
                            & ~np.uint64(_PAD - 1)
                        for u in range(m):
                            k = a + np.uint64(u)
                            j = np.uint64(nbj[k])
                            bx[o + np.uint64(u)] = ex[k] + qx[j]
                            by[o + np.uint64(u)] = ey[k] + qy[j]
                            bz[o + np.uint64(u)] = ez[k] + qz[j]
                        if kind == 2:
                            c_rc32 = np.float32(rc2[ti, s])
                            for u in range(m):
                                bc[o + np.uint64(u)] = c_rc32
                        o += m
                    row_len = o
                    filled = True
                    e_known = False
                overlaps = False  # OR reduction: full SIMD width (an int64 count halves it)
                if kind == 2:
                    for b in range(row_len):
                        overlaps |= _r2(bx[b], by[b], bz[b], qnx, qny, qnz) < bc[b]
                # the row energy E_i in fixed point at the current position (ev = 0, once per
                # visit) and at the trial position (ev = 1)
                for ev in range(np.int64(e_known), 2 if kind != 2 else 0):
                    px = qx[i] if ev == 0 else qnx
                    py = qy[i] if ev == 0 else qny
                    pz = qz[i] if ev == 0 else qnz
                    acc_fx = np.int64(0)
                    acc32 = np.int32(0)
                    acc_lo = np.int32(0)
                    n_big = False
                    o = np.uint64(0)
                    for s in range(S):
                        m = (np.uint64(seg_cnt[i * S + s]) + np.uint64(_PAD - 1)) \
                            & ~np.uint64(_PAD - 1)
                        if kind == 0:
                            c_s2 = np.float32(sig2[ti, s])
                            c_e4 = np.float32(eps4[ti, s])
                            c_sh = np.float32(esh[ti, s])
                            c_rc32 = np.float32(rc2[ti, s])
                            for u in range(m):
                                b = o + np.uint64(u)
                                v = _lj_v32(_r2(bx[b], by[b], bz[b], px, py, pz), c_s2, c_e4,
                                            c_sh, c_rc32)
                                n_big |= not (abs(v) < lim32)
                                # int32 lanes: twice the SIMD width of an int64 sum (numba
                                # widens int32 + int32 to int64; the cast keeps the add in 32
                                # bits); exact split of v * 2^19 into integer + fraction, the
                                # fraction in 2^-12 units: 2^-31 resolution overall
                                x = v * _FXL32
                                h = np.int32(x)
                                acc32 = np.int32(acc32 + h)
                                acc_lo = np.int32(acc_lo
                                                  + np.int32((x - np.float32(h)) * _FXLO32))
                        else:
                            c_rc = rc2[ti, s]
                            c_is = 1.0 / sig[ti, s]
                            c_ep = eps[ti, s]
                            for u in range(m):
                                b = o + np.uint64(u)
                                v = _harmonic_v(_r2(np.float64(bx[b]), np.float64(by[b]),
                                                    np.float64(bz[b]), np.float64(px),
                                                    np.float64(py), np.float64(pz)),
                                                c_is, c_ep, c_rc)
                                n_big |= not (abs(v) < lim)
                                acc_fx += np.int64(v * _FX)
                        o += m
                    if not n_big:
                        e = (acc32 * _FXL_INV + acc_lo * _FXLO_INV) if kind == 0 \
                            else acc_fx * _FX_INV
                    else:  # a pair energy beyond the fixed-point range: sum in floating point
                        e = _row_e_float(i, ti, S, kind, sig, sig2, eps, eps4, esh, rc2, px, py,
                                         pz, seg_cnt, bx, by, bz)
                    if ev == 0:
                        e_cur = e
                        e_known = True
                    else:
                        e_new = e
                if kind == 2:
                    accepted = not overlaps
                else:
                    de = e_new - e_cur
                    if de <= 0.0 or _uniform(rng) < np.exp(-beta * de):
                        accepted = True
                        fs[_ENERGY] += de
                        e_cur = e_new
                if accepted:
                    # the neighbours' rows read q_i: nothing else to update
                    ist[_SWEEP_ACC] += 1
                    pos[i, 0] = nx
                    pos[i, 1] = ny
                    pos[i, 2] = nz
                    qx[i] = qnx
                    qy[i] = qny
                    qz[i] = qnz
                    if debug:
                        if cage_mode == 0:
                            ok = _in_cage_full(pos[i], i, init, box, coff, cnb, sigc)
                        else:
                            ok = np.sqrt(ux * ux + uy * uy + uz * uz) < np.sqrt(rad2[i])
                        if not ok:
                            ist[_VIOLATIONS] += 1
            if not measuring:
                ist[_BLOCK_MOVES] += 1
                ist[_BLOCK_ACC] += accepted
                if ist[_BLOCK_MOVES] >= block_len:
                    a_blk = ist[_BLOCK_ACC] / ist[_BLOCK_MOVES]
                    f = np.exp(0.5 * (a_blk - target) / max(target, 1e-3))
                    f = min(max(f, 0.5), 2.0)
                    step = min(step * f, step_max)
                    ist[_BLOCK_MOVES] = 0
                    ist[_BLOCK_ACC] = 0
    fs[_STEP] = step
    return n


# nogil: one call is a whole chain (minutes on a cluster); the progress thread needs the GIL
@njit(cache=True, error_model="numpy", nogil=True)
def _mc_kernel(pos, init, types, box, S, kind, sig, sig2, eps, eps4, rc2, esh, lcut2, T,
               cage_mode, coff, cvx, cvy, cvz, csc2, cnb, sigc, rad2, rin2,
               allpairs, skin, n_equil, n_measure, seed, step, step_max, target,
               record_every, debug, kv):
    """The chain: n_equil + n_measure passes (kv sweeps each: kv trial moves per particle
    visit), one measurement sample per pass, a recorded configuration every record_every
    passes."""
    rng = _rng_state(seed)
    n = pos.shape[0]
    beta = 1.0 / T
    half_skin2 = (0.5 * skin) ** 2
    lmax = np.sqrt(lcut2.max())
    slack = 1.0 if allpairs else _SLACK
    # unused list slots hold this neighbour offset: beyond every cutoff from any position
    # within skin/2 of the reference, and harmless in every pair formula
    far = np.float32(2.0 * lmax + 1.0)
    seg_base, seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez, max_row = _build_lists(
        pos, types, box, S, lcut2, allpairs, slack, far)
    ref = pos.copy()
    qx = np.zeros(n, np.float32)  # float32(pos - ref), read by the neighbours' rows
    qy = np.zeros(n, np.float32)
    qz = np.zeros(n, np.float32)
    nc, cell_of, cell_cnt, cell_mem, where = _ref_cells(ref, box, lmax)
    mark = np.full(n, -1, np.int64)
    lim, lim32 = _fx_limits(max_row)
    bx = np.empty(max_row, np.float32)  # the visit buffer (see _moves)
    by = np.empty(max_row, np.float32)
    bz = np.empty(max_row, np.float32)
    bc = np.empty(max_row, np.float32)
    fs = np.zeros(5)
    fs[_STEP] = step
    if kind != 2:
        fs[_ENERGY] = _total_energy(pos, types, box, kind, sig, eps, rc2, esh, lcut2,
                                    allpairs)
    ist = np.zeros(7, np.int64)
    n_rebuilds = 0
    acc_sum = np.zeros((n, 3))
    # convergence diagnostics: sum of squared displacements from r^init (centred: no
    # cancellation), and both sums frozen at the half-way sweep (first half = sweeps 1..h)
    sq_sum = np.zeros((n, 3))
    half_sum = np.zeros((n, 3))
    half_sq = np.zeros((n, 3))
    n_half = n_measure // 2
    n_rec = n_measure // record_every if record_every > 0 else 0
    samples = np.empty((n_rec, n, 3))
    block_len = max(500, n)
    meas_acc = 0
    eq_acc = 0
    rec = 0
    for sweep in range(n_equil + n_measure):   # passes
        measuring = sweep >= n_equil
        ist[_SWEEP_ACC] = 0
        i = 0
        while True:
            i = _moves(i, measuring, pos, init, ref, qx, qy, qz, types, box, S, kind, sig, sig2,
                       eps, eps4, rc2, esh, lcut2, beta, cage_mode, coff, cvx, cvy, cvz, csc2,
                       cnb, sigc, rad2, rin2, allpairs, half_skin2, step_max, target,
                       block_len, debug, rng, fs, ist, seg_base, seg_cnt, nbj, rev, ix, iy, iz,
                       ex, ey, ez, nc, cell_of,
                       cell_cnt, cell_mem, where, mark, lim, lim32, far, kv, bx, by, bz, bc)
            if i == n:
                break
            # tiny box (all images, no re-centring) or a full segment / cell: rebuild all
            if not allpairs:
                slack *= 1.25
            seg_base, seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez, max_row = _build_lists(
                pos, types, box, S, lcut2, allpairs, slack, far)
            ref[:, :] = pos
            qx[:] = 0.0
            qy[:] = 0.0
            qz[:] = 0.0
            nc, cell_of, cell_cnt, cell_mem, where = _ref_cells(ref, box, lmax)
            lim, lim32 = _fx_limits(max_row)
            if max_row > bx.shape[0]:
                bx = np.empty(max_row, np.float32)
                by = np.empty(max_row, np.float32)
                bz = np.empty(max_row, np.float32)
                bc = np.empty(max_row, np.float32)
            n_rebuilds += 1
        if debug and not allpairs:
            ist[_VIOLATIONS] += _list_errors(pos, ref, qx, qy, qz, types, box, S, lcut2,
                                             seg_base, seg_cnt, nbj, rev, ix, iy, iz, ex, ey, ez,
                                             far)
        if measuring:
            meas_acc += ist[_SWEEP_ACC]
            for p in range(n):  # one pass: <r> and <(r - r^init)^2> (cost ~ 1 % of a sweep)
                for d in range(3):
                    x = pos[p, d]
                    acc_sum[p, d] += x
                    u = x - init[p, d]
                    sq_sum[p, d] += u * u
            m = sweep - n_equil + 1
            if m == n_half:
                half_sum[:, :] = acc_sum
                half_sq[:, :] = sq_sum
            if record_every > 0 and m % record_every == 0 and rec < n_rec:
                samples[rec] = pos
                rec += 1
        else:
            eq_acc += ist[_SWEEP_ACC]
    acc_meas = meas_acc / (n_measure * n * kv) if n_measure > 0 else np.nan
    acc_eq = eq_acc / (n_equil * n * kv) if n_equil > 0 else np.nan
    return (acc_sum / max(n_measure, 1), pos, acc_meas, acc_eq, fs[_STEP], fs[_ENERGY],
            n_rebuilds, ist[_RECENTRED], ist[_VIOLATIONS], samples, acc_sum, sq_sum, half_sum,
            half_sq)


@njit(cache=True)
def _total_energy(pos, types, box, kind, sig, eps, rc2, esh, lcut2, allpairs):
    """Total energy in double precision straight from the pair search (independent of the
    kernel's single-precision list entries); hard spheres: inf on any overlap, else 0."""
    pi, pj, ps = _pairs(pos, types, box, lcut2, allpairs)
    tot = 0.0
    for p in range(pi.shape[0]):
        i = pi[p]
        j = pj[p]
        a = types[i]
        b = types[j]
        r2 = 0.0
        for d in range(3):
            t = pos[j, d] + ps[p, d] - pos[i, d]
            r2 += t * t
        if r2 >= rc2[a, b]:
            continue
        if kind == 2:
            return np.inf
        if kind == 0:
            q = (sig[a, b] * sig[a, b] / r2) ** 3
            tot += 4.0 * eps[a, b] * (q * q - q) - esh[a, b]
        else:
            u = 1.0 - np.sqrt(r2) / sig[a, b]
            tot += eps[a, b] * u * u
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
    """Total potential energy (double precision; inf if hard spheres overlap) of an (N, 3)
    configuration with (N,) species indices in an orthorhombic (3,) box."""
    positions, types, box = _prepare(positions, types, box, potential)
    kind, sig, sig2, eps, eps4, rc2, esh = _tables(potential)
    lcut2 = (potential.cutoff + 0.1) ** 2
    allpairs = float(np.sqrt(lcut2.max())) >= 0.5 * box.min()
    return float(_total_energy(positions, types, box, kind, sig, eps, rc2, esh, lcut2, allpairs))


def spatial_order(positions, box, cell=1.0):
    """Permutation putting particles in Morton (Z-curve) order of cells of edge ~``cell``.

    Returns (N,) int64; neighbours in space become neighbours in memory, which is what makes
    the MC kernel's row updates cache friendly."""
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    w = positions - box * np.floor(positions / box)
    nc = np.maximum(1, np.floor(box / cell)).astype(np.int64)
    c = np.minimum((w / box * nc).astype(np.int64), nc - 1)
    code = np.zeros(len(w), np.int64)
    for bit in range(20):
        for d in range(3):
            code |= ((c[:, d] >> bit) & 1) << (3 * bit + d)
    return np.argsort(code, kind="stable")


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


def _inscribed_radius2(coff, cvec, csc2):
    """(N,) squared radius (less a relative 1e-6, far above rounding) of the ball around
    r_i^init inside the Eq. 10 cell: the face of neighbour j, |u|^2 c = |u - d|^2 with
    c = (s_j/s_i)^2, is a plane (c = 1) or an Apollonius sphere whose nearest point to u = 0
    lies at |d| / (1 + sqrt c).  A trial point within it passes the cage test at once."""
    n = len(coff) - 1
    dist = np.linalg.norm(cvec, axis=1) / (1.0 + np.sqrt(csc2))
    r = np.full(n, np.inf)
    has = np.diff(coff) > 0
    if has.any():
        r[has] = np.minimum.reduceat(dist, coff[:-1][has])
    return np.ascontiguousarray((r * (1.0 - 1e-6)) ** 2)


def _halves(init, tot_sum, sq_sum, half_sum, half_sq, n_measure):
    """Means (2, N, 3) and coordinate-averaged sample variances (2, N) of the positions over the
    first h = n_measure // 2 and the last n_measure - h measurement samples (passes), from the
    kernel's sums (positions, and squared displacements from ``init``); NaN where a half is too
    short."""
    h = n_measure // 2
    counts = (h, n_measure - h)
    sums = (half_sum, tot_sum - half_sum)
    sqs = (half_sq, sq_sum - half_sq)
    means = np.full((2,) + init.shape, np.nan)
    var = np.full((2, init.shape[0]), np.nan)
    for k in range(2):
        if counts[k] >= 1:
            means[k] = sums[k] / counts[k]
        if counts[k] >= 2:
            u = means[k] - init
            v = (sqs[k] - counts[k] * u * u) / (counts[k] - 1)
            var[k] = np.maximum(v, 0.0).mean(axis=1)
    return means, var, h


def passes(sweeps, moves_per_visit):
    """Whole passes (moves_per_visit sweeps each) that cage_state runs for ``sweeps`` sweeps
    (rounded up): int >= 0; for the measurement, the number of samples r^CS averages."""
    return -(-int(sweeps) // int(moves_per_visit))


def cage_state(positions, types, box, potential, T, n_equil, n_measure, seed,
               cage="voronoi", cage_radius=None, cage_sigma=None, target_acceptance=0.3,
               step=None, skin=None, record_every=0, debug=False,
               moves_per_visit=MOVES_PER_VISIT):
    """Cage-state positions by constrained canonical MC ([CAGE] Eq. 10).

    Parameters
    ----------
    positions : (N, 3) initial configuration r^init (any image; output is in the same image)
    types : (N,) int species indices into the potential tables
    box : (3,) orthorhombic box edges
    potential : PairPotential
    T : temperature (k_B = 1); irrelevant for hard spheres
    n_equil, n_measure : equilibration / measurement sweeps (N trial moves each), rounded up
        to whole passes of moves_per_visit sweeps (``sweeps`` in the result); the step is
        retuned every 500 equilibration moves (factor <= 2 per block), so tiny systems need
        more than 500 / N equilibration sweeps
    seed : int, seeds the numba RNG (deterministic)
    cage : 'voronoi' (Eq. 10 with SANN neighbours) or 'sphere'
    cage_radius : sphere radius (scalar, per species or per particle); default 0.5 * s_i
    cage_sigma : s_i in Eq. 10 (scalar, per species or per particle); default sigma_ii
    target_acceptance : acceptance the step is tuned to during equilibration
    step : initial half-side of the trial cube (default 0.05 * min s_i)
    skin : Verlet skin (default 0.6 for LJ, 0.4 for harmonic and hard spheres); the trial step
        is capped at skin / (2 sqrt 3) (``step_capped`` in the result says it was reached, i.e.
        the acceptance may stay above target: pass a larger skin for dilute systems; a sphere
        cage with skin >= 2 cage_radius needs no re-centring and caps the step at the radius)
    record_every : if > 0 (a multiple of moves_per_visit), also return ``samples`` — the
        configuration every ``record_every`` measurement sweeps, shape
        (n_measure // record_every, N, 3) for n_measure a multiple of moves_per_visit
    debug : re-check every accepted position with an independent cage test and count
        ``violations`` (must be 0)
    moves_per_visit : k, trial moves of a particle per visit (default 4, as the default
        ``nselect`` of HOOMD-blue's HPMC): a pass over the particles is k sweeps, and r^CS
        averages one sample per pass (samples k sweeps apart are nearly identical in a cage)

    Returns
    -------
    dict with positions (N, 3) r^CS, displacement (N,) |r^CS - r^init|, acceptance (measurement
    phase), step (frozen step), and also acceptance_equil, final (N, 3) last configuration,
    energy (running total energy of ``final``, accurate to ~1e-8 relative; 0 for hard spheres),
    n_recentred (list re-centrings), n_rebuilds (global list rebuilds), step_capped,
    violations (debug: cage violations + list-audit errors, must be 0), samples (if
    record_every), sweeps (equilibration, measurement) as run; for the convergence diagnostics
    (states.chains), with P = measurement passes: half_positions (2, N, 3) the averages of r_i
    over the first h = P // 2 and over the last P - h measurement samples (NaN for an empty
    half), half_variance (2, N) the sample variances (ddof 1, σ²) of r_i within each half
    averaged over the three coordinates (NaN for a half of < 2 samples), half_samples
    (h, P - h), half_sweeps (k h, k (P - h)).

    Raises ValueError for bad shapes, species indices, non-finite positions, a cutoff above
    half the box, overlapping hard spheres, or a bad parameter (the message names it).
    """
    positions, types, box = _prepare(positions, types, box, potential)
    n = positions.shape[0]
    if cage not in ("voronoi", "sphere"):
        raise ValueError(f"cage must be 'voronoi' or 'sphere', got {cage!r}")
    if potential.kind != "hard" and not T > 0:
        raise ValueError("T must be positive")
    if n_equil < 0 or n_measure < 1:
        raise ValueError("need n_equil >= 0 and n_measure >= 1")
    kv = int(moves_per_visit)
    if kv < 1 or kv != moves_per_visit:
        raise ValueError(f"moves_per_visit must be a positive integer, got {moves_per_visit!r}")
    if record_every < 0 or record_every % kv:
        raise ValueError(f"record_every ({record_every}) must be a non-negative multiple of "
                         f"moves_per_visit ({kv})")
    p_equil, p_measure = passes(n_equil, kv), passes(n_measure, kv)
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

    rad = np.zeros(n)
    if cage == "sphere":
        rad = _per_particle(0.5 * sigc if cage_radius is None else cage_radius, types,
                            potential.n_species, "cage_radius")
        if np.any(rad <= 0):
            raise ValueError("cage_radius must be positive")

    # the kernel works on particles in spatial (Morton) order, each in its image in the box (the
    # list stores lattice images as int8); results are mapped back below
    order = spatial_order(positions, box)
    positions_in = positions
    image = (box * np.floor(positions / box))[order]
    positions = np.ascontiguousarray(positions[order] - image)
    types = np.ascontiguousarray(types[order])
    sigc = np.ascontiguousarray(sigc[order])
    rad = np.ascontiguousarray(rad[order])

    if cage == "voronoi":
        coff, cnb, cvec = cage_neighbors(positions, box)
        src = np.repeat(np.arange(n), np.diff(coff))
        csc2 = np.ascontiguousarray((sigc[cnb] / sigc[src]) ** 2)
        rin2 = _inscribed_radius2(coff, cvec, csc2)
        rad2 = np.zeros(n)
        cage_mode = 0
        step_cap = 1.0 * float(sigc.max())
    else:
        coff = np.zeros(n + 1, np.int64)
        cnb = np.zeros(0, np.int64)
        cvec = np.zeros((0, 3))
        csc2 = np.zeros(0)
        rin2 = np.zeros(n)
        rad2 = rad ** 2
        cage_mode = 1
        step_cap = float(rad.max())
    default_skin = 0.6 if kind == 0 else 0.4  # measured best (bench/bench_cage.py --skin)
    skin = default_skin if skin is None else float(skin)
    if not skin > 0:
        raise ValueError("skin must be positive")
    lcut2 = np.ascontiguousarray((potential.cutoff + skin) ** 2)  # per species-pair list radii
    allpairs = float(potential.cutoff.max()) + skin >= 0.5 * box.min()
    if cage == "sphere" and skin >= 2.0 * float(np.sqrt(rad2.max())):
        step_max = step_cap  # every particle stays within skin/2 of r^init: no re-centring
    else:  # a re-centred particle's trial position must lie within skin/2 of its position
        step_max = min(step_cap, skin / (2.0 * np.sqrt(3.0)) * (1 - 1e-9))
    step0 = 0.05 * float(sigc.min()) if step is None else float(step)
    step0 = min(step0, step_max)

    cvx, cvy, cvz = (np.ascontiguousarray(cvec[:, d]) for d in range(3))
    if kind == 2:  # single-precision list entries: keep a margin so no true overlap slips in
        rc2 = rc2 * (1.0 + _HS_MARGIN) ** 2
    (cs, final, acc, acc_eq, step_f, energy, n_reb, n_rec, viol, samples, tot_sum, sq_sum,
     half_sum, half_sq) = _mc_kernel(
        positions.copy(), positions, types, box, potential.n_species, kind, sig, sig2, eps,
        eps4, rc2, esh, lcut2, float(T) if kind != 2 else 1.0,
        cage_mode, coff, cvx, cvy, cvz, csc2, cnb, sigc, rad2, rin2,
        allpairs, skin, p_equil, p_measure, np.uint64(int(seed) % 2 ** 64), step0,
        step_max, float(target_acceptance), int(record_every) // kv, bool(debug), kv)
    halves, half_var, h1 = _halves(positions, tot_sum, sq_sum, half_sum, half_sq, p_measure)
    back = np.empty_like(order)
    back[order] = np.arange(n)
    cs = (cs + image)[back]
    final = (final + image)[back]
    out = dict(positions=cs, displacement=np.linalg.norm(cs - positions_in, axis=1),
               acceptance=float(acc), step=float(step_f), acceptance_equil=float(acc_eq),
               final=final, energy=float(energy), n_rebuilds=int(n_reb),
               n_recentred=int(n_rec), violations=int(viol),
               step_capped=bool(step_f >= step_max * (1 - 1e-12)),
               half_positions=(halves + image)[:, back], half_variance=half_var[:, back],
               half_samples=(h1, p_measure - h1),
               half_sweeps=(kv * h1, kv * (p_measure - h1)),
               sweeps=(kv * p_equil, kv * p_measure))
    if record_every > 0:
        out["samples"] = (samples + image)[:, back]
    return out
