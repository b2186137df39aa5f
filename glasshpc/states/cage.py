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


# --------------------------------------------------------------------------- numba kernels

@njit(cache=True)
def _build_list(pos, box, cut, allpairs):
    """Neighbour list (offsets, neighbours, image shifts) of radius ``cut`` around ``pos``.

    shift[k] is the lattice vector with  r_j + shift[k] - r_i  = minimum image at build time.
    While every particle stays within skin/2 of its build position, this stored image is the
    only image of j that can come within r_c of i (it was the unique image within
    r_c + skin < L/2), so no minimum-image search is needed per move.  With ``allpairs`` the
    list holds every j != i and the minimum image is recomputed on the fly instead.
    """
    n = pos.shape[0]
    if allpairs:
        off = np.empty(n + 1, np.int64)
        nb = np.empty(n * (n - 1), np.int64)
        k = 0
        for i in range(n):
            off[i] = k
            for j in range(n):
                if j != i:
                    nb[k] = j
                    k += 1
        off[n] = k
        return off, nb, np.zeros((nb.shape[0], 3))
    off, nb, vec, _ = _neighbor_list(pos, box, cut)
    shift = np.empty_like(vec)
    for i in range(n):
        for k in range(off[i], off[i + 1]):
            j = nb[k]
            for d in range(3):
                shift[k, d] = vec[k, d] - (pos[j, d] - pos[i, d])
    return off, nb, shift


@njit(cache=True, inline="always")
def _pair_energy(kind, r2, eps, sig, rc2, esh):
    if r2 >= rc2:
        return 0.0
    if kind == 0:
        s2 = sig * sig / r2
        s6 = s2 * s2 * s2
        return 4.0 * eps * (s6 * s6 - s6) - esh
    if kind == 1:
        x = 1.0 - np.sqrt(r2) / sig
        return eps * x * x
    return np.inf


@njit(cache=True, inline="always")
def _sep(j, x, y, z, k, pos, box, shift, allpairs):
    dx = pos[j, 0] + shift[k, 0] - x
    dy = pos[j, 1] + shift[k, 1] - y
    dz = pos[j, 2] + shift[k, 2] - z
    if allpairs:
        dx -= box[0] * np.rint(dx / box[0])
        dy -= box[1] * np.rint(dy / box[1])
        dz -= box[2] * np.rint(dz / box[2])
    return dx * dx + dy * dy + dz * dz


@njit(cache=True)
def _energy_at(i, x, y, z, pos, types, box, off, nb, shift, allpairs, kind, eps, sig, rc2, esh):
    """Energy of particle i placed at (x, y, z) with its list neighbours (inf on HS overlap)."""
    ti = types[i]
    e = 0.0
    for k in range(off[i], off[i + 1]):
        j = nb[k]
        r2 = _sep(j, x, y, z, k, pos, box, shift, allpairs)
        tj = types[j]
        if r2 < rc2[ti, tj]:
            v = _pair_energy(kind, r2, eps[ti, tj], sig[ti, tj], rc2[ti, tj], esh[ti, tj])
            if kind == 2:
                return np.inf
            e += v
    return e


@njit(cache=True, inline="always")
def _lj(r2, eps, sig, esh):
    s2 = sig * sig / r2
    s6 = s2 * s2 * s2
    return 4.0 * eps * (s6 * s6 - s6) - esh


@njit(cache=True, inline="always")
def _harm(r2, eps, sig):
    x = 1.0 - np.sqrt(r2) / sig
    return eps * x * x


@njit(cache=True)
def _de_shift(i, x, y, z, pos, types, off, nb, shift, kind, eps, sig, rc2, esh):
    """(E_old, E_new) of particle i (current position / (x, y, z)); stored-image list.

    The loops are written out per potential kind: a runtime kind / image branch inside the
    pair loop costs a factor ~4 in speed."""
    ti = types[i]
    xo = pos[i, 0]
    yo = pos[i, 1]
    zo = pos[i, 2]
    eo = 0.0
    en = 0.0
    if kind == 0:
        for k in range(off[i], off[i + 1]):
            j = nb[k]
            tj = types[j]
            px = pos[j, 0] + shift[k, 0]
            py = pos[j, 1] + shift[k, 1]
            pz = pos[j, 2] + shift[k, 2]
            c = rc2[ti, tj]
            ax = px - x
            ay = py - y
            az = pz - z
            bx = px - xo
            by = py - yo
            bz = pz - zo
            r2n = ax * ax + ay * ay + az * az
            r2o = bx * bx + by * by + bz * bz
            if r2n < c:
                en += _lj(r2n, eps[ti, tj], sig[ti, tj], esh[ti, tj])
            if r2o < c:
                eo += _lj(r2o, eps[ti, tj], sig[ti, tj], esh[ti, tj])
    else:
        for k in range(off[i], off[i + 1]):
            j = nb[k]
            tj = types[j]
            px = pos[j, 0] + shift[k, 0]
            py = pos[j, 1] + shift[k, 1]
            pz = pos[j, 2] + shift[k, 2]
            c = rc2[ti, tj]
            ax = px - x
            ay = py - y
            az = pz - z
            bx = px - xo
            by = py - yo
            bz = pz - zo
            r2n = ax * ax + ay * ay + az * az
            r2o = bx * bx + by * by + bz * bz
            if r2n < c:
                en += _harm(r2n, eps[ti, tj], sig[ti, tj])
            if r2o < c:
                eo += _harm(r2o, eps[ti, tj], sig[ti, tj])
    return eo, en


@njit(cache=True)
def _de_minimage(i, x, y, z, pos, types, box, off, nb, kind, eps, sig, rc2, esh):
    """As _de_shift, minimum image recomputed per pair (all-pairs fallback, small boxes)."""
    ti = types[i]
    eo = 0.0
    en = 0.0
    for k in range(off[i], off[i + 1]):
        j = nb[k]
        tj = types[j]
        c = rc2[ti, tj]
        r2n = 0.0
        r2o = 0.0
        for d in range(3):
            t = pos[j, d] - (x if d == 0 else (y if d == 1 else z))
            t -= box[d] * np.rint(t / box[d])
            r2n += t * t
            t = pos[j, d] - pos[i, d]
            t -= box[d] * np.rint(t / box[d])
            r2o += t * t
        if r2n < c:
            en += _pair_energy(kind, r2n, eps[ti, tj], sig[ti, tj], c, esh[ti, tj])
        if r2o < c:
            eo += _pair_energy(kind, r2o, eps[ti, tj], sig[ti, tj], c, esh[ti, tj])
    return eo, en


@njit(cache=True)
def _total_energy(pos, types, box, off, nb, shift, allpairs, kind, eps, sig, rc2, esh):
    e = 0.0
    for i in range(pos.shape[0]):
        e += _energy_at(i, pos[i, 0], pos[i, 1], pos[i, 2], pos, types, box, off, nb, shift,
                        allpairs, kind, eps, sig, rc2, esh)
    return 0.5 * e


@njit(cache=True, inline="always")
def _in_voronoi(ux, uy, uz, i, coff, cvec, sc2):
    """u = R - r_i^init; cvec rows = minimum-image r_j^init - r_i^init; sc2 = s^2 per particle
    (sc2 indexed by the precomputed neighbour weights)."""
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


@njit(cache=True)
def _mc_kernel(pos, init, types, box, kind, eps, sig, rc2, esh, T,
               cage_mode, coff, cnb, cvec, csc2, sigc, rad2,
               allpairs, vl_cut, skin, n_equil, n_measure, seed, step, step_max, target,
               record_every, debug):
    np.random.seed(seed)
    n = pos.shape[0]
    beta = 1.0 / T
    half_skin2 = (0.5 * skin) ** 2
    off, nb, shift = _build_list(pos, box, vl_cut, allpairs)
    ref = pos.copy()
    n_rebuilds = 0
    energy = 0.0
    if kind != 2:
        energy = _total_energy(pos, types, box, off, nb, shift, allpairs, kind, eps, sig, rc2,
                               esh)
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
    for sweep in range(n_equil + n_measure):
        measuring = sweep >= n_equil
        for _ in range(n):
            i = np.random.randint(n)
            nx = pos[i, 0] + step * (2.0 * np.random.random() - 1.0)
            ny = pos[i, 1] + step * (2.0 * np.random.random() - 1.0)
            nz = pos[i, 2] + step * (2.0 * np.random.random() - 1.0)
            ux = nx - init[i, 0]
            uy = ny - init[i, 1]
            uz = nz - init[i, 2]
            if cage_mode == 0:
                inside = _in_voronoi(ux, uy, uz, i, coff, cvec, csc2)
            else:
                inside = ux * ux + uy * uy + uz * uz < rad2[i]
            accepted = False
            if inside:
                if not allpairs:
                    dx = nx - ref[i, 0]
                    dy = ny - ref[i, 1]
                    dz = nz - ref[i, 2]
                    if dx * dx + dy * dy + dz * dz > half_skin2:
                        off, nb, shift = _build_list(pos, box, vl_cut, allpairs)
                        ref[:, :] = pos
                        n_rebuilds += 1
                if kind == 2:
                    accepted = _energy_at(i, nx, ny, nz, pos, types, box, off, nb, shift,
                                          allpairs, kind, eps, sig, rc2, esh) == 0.0
                else:
                    if allpairs:
                        e_old, e_new = _de_minimage(i, nx, ny, nz, pos, types, box, off, nb,
                                                    kind, eps, sig, rc2, esh)
                    else:
                        e_old, e_new = _de_shift(i, nx, ny, nz, pos, types, off, nb, shift,
                                                 kind, eps, sig, rc2, esh)
                    de = e_new - e_old
                    if de <= 0.0 or np.random.random() < np.exp(-beta * de):
                        accepted = True
                        energy += de
            if accepted:
                pos[i, 0] = nx
                pos[i, 1] = ny
                pos[i, 2] = nz
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
                    a = block_acc / block_moves
                    f = np.exp(0.5 * (a - target) / max(target, 1e-3))
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
    return (_KINDS[potential.kind], np.ascontiguousarray(potential.epsilon),
            np.ascontiguousarray(potential.sigma), np.ascontiguousarray(potential.cutoff ** 2),
            np.ascontiguousarray(potential.energy_shift))


def total_energy(positions, types, box, potential):
    """Total potential energy with the MC kernel's own energy routine (inf on HS overlap)."""
    positions, types, box = _prepare(positions, types, box, potential)
    kind, eps, sig, rc2, esh = _tables(potential)
    rc = float(potential.cutoff.max())
    allpairs = rc + 0.1 >= 0.5 * box.min()
    off, nb, shift = _build_list(positions, box, rc + 0.1, allpairs)
    return float(_total_energy(positions, types, box, off, nb, shift, allpairs, kind, eps, sig,
                               rc2, esh))


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
    skin : Verlet skin (default 2 * max cage_radius + 0.05 for spheres, 0.8 for Voronoi)
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
    kind, eps, sig, rc2, esh = _tables(potential)
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
        default_skin = 0.8
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
    rc = float(potential.cutoff.max())
    vl_cut = rc + skin
    allpairs = vl_cut >= 0.5 * box.min()
    if allpairs or (cage == "sphere" and skin >= 2.0 * float(np.sqrt(rad2.max()))):
        step_max = step_cap  # no list rebuild can ever be triggered
    else:  # after a rebuild the trial displacement must be within skin/2
        step_max = min(step_cap, skin / (2.0 * np.sqrt(3.0)) * (1 - 1e-9))
    step0 = 0.05 * float(sigc.min()) if step is None else float(step)
    step0 = min(step0, step_max)

    cs, final, acc, acc_eq, step_f, energy, n_reb, viol, samples = _mc_kernel(
        positions.copy(), positions, types, box, kind, eps, sig, rc2, esh,
        float(T) if kind != 2 else 1.0,
        cage_mode, coff, cnb, cvec, csc2, sigc, rad2,
        allpairs, vl_cut, skin, int(n_equil), int(n_measure), int(seed), step0, step_max,
        float(target_acceptance), int(record_every), bool(debug))
    out = dict(positions=cs, displacement=np.linalg.norm(cs - positions, axis=1),
               acceptance=float(acc), step=float(step_f), acceptance_equil=float(acc_eq),
               final=final, energy=float(energy), n_rebuilds=int(n_reb),
               violations=int(viol))
    if record_every > 0:
        out["samples"] = samples
    return out
