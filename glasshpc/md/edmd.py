"""Event-driven molecular dynamics (EDMD) of (binary) hard spheres, in numba.

Units: lengths in sigma_A (diameter of the large species A), masses m = 1, k_B = 1,
time tau = sqrt(m sigma_A^2 / k_B T).  All masses are equal; collisions are elastic.

Algorithm (after Smallenburg's EDMD design, with Paul's event calendar,
J. Comput. Phys. 221, 615 (2007)):

* one scheduled event per particle: its earliest collision with a particle of its
  neighbour list, or the moment it leaves its neighbour *shell* (a sphere of radius
  ``shell`` around the position ``c_i`` where its list was last built);
* per-particle neighbour lists: j is a neighbour of i iff |c_i - c_j| < sigma_ij + 2*shell,
  so two particles that are both inside their shells can only collide if listed.  When a
  particle leaves its shell it alone rebuilds its list (removing itself from its old
  neighbours' lists, inserting itself into the new ones);
* cell lists (cells >= max sigma + 2 shell, binned by shell centre) for the candidate search;
* an indexed binary heap (complete binary tree over the particles) as event calendar;
* particles are advanced lazily: each stores its position at its own local time t_i;
  positions are wrapped into the box only when a particle rebuilds its list, the periodic
  image is counted in an integer image counter (unwrapped = wrapped + image * box);
* a stale collision event (its partner collided in the meantime: collision counters differ)
  is simply re-predicted when it reaches the top of the calendar;
* pressure from the collision virial W = sum over collisions of |r_ij . dv_ij| (m = 1).

Lubachevsky–Stillinger growth is supported by the same kernel: all diameters are
``sigma_i * (s0 + gamma t)``; collision prediction solves |r_ij + v_ij t| = sigma_ij (s0 + gamma t)
and a collision reverses the normal relative velocity *in the frame of the growing surfaces*
(u_n' = 2 sigma_ij gamma - u_n), see :func:`prepare_snapshot`.
"""
import math

import numpy as np
from numba import njit

__all__ = ["HardSphereSystem", "bmcsl_Z", "maxwell_boltzmann", "prepare_snapshot"]

_INF = np.inf


# --------------------------------------------------------------------------------------
# equation of state, velocities
# --------------------------------------------------------------------------------------
def bmcsl_Z(eta, x=(1.0,), sigma=(1.0,)):
    """Compressibility factor Z = beta P / rho of an additive hard-sphere mixture (BMCSL).

    Boublik–Mansoori–Carnahan–Starling–Leland equation of state with
    xi_k = (pi/6) rho sum_s x_s sigma_s^k:
    beta P = (6/pi) [xi_0/(1-xi_3) + 3 xi_1 xi_2/(1-xi_3)^2 + (3-xi_3) xi_2^3/(1-xi_3)^3].
    For a single size it reduces to Carnahan–Starling (1 + eta + eta^2 - eta^3)/(1 - eta)^3.

    Parameters
    ----------
    eta : float, total packing fraction (pi/6) rho sum_s x_s sigma_s^3, 0 <= eta < 1
    x : sequence of mole fractions (normalised here), default one species
    sigma : sequence of diameters (sigma_A units), same length as x

    Raises ValueError on mismatched lengths, negative fractions or eta outside [0, 1).
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    sigma = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if x.shape != sigma.shape:
        raise ValueError(f"x and sigma must have the same length, got {x.shape} and {sigma.shape}")
    if np.any(x < 0) or x.sum() <= 0:
        raise ValueError(f"mole fractions must be non-negative with a positive sum, got {x}")
    if np.any(sigma <= 0):
        raise ValueError(f"diameters must be positive, got {sigma}")
    eta = float(eta)
    if not 0.0 <= eta < 1.0:
        raise ValueError(f"packing fraction must be in [0, 1), got {eta}")
    x = x / x.sum()
    rho = eta / (np.pi / 6.0 * np.sum(x * sigma ** 3))
    xi = [np.pi / 6.0 * rho * np.sum(x * sigma ** k) for k in range(4)]
    d = 1.0 - xi[3]
    beta_p = 6.0 / np.pi * (xi[0] / d + 3.0 * xi[1] * xi[2] / d ** 2 + (3.0 - xi[3]) * xi[2] ** 3 / d ** 3)
    return float(beta_p / rho)


def maxwell_boltzmann(n, T=1.0, seed_or_rng=None):
    """Maxwell–Boltzmann velocities, (n, 3) float64, m = 1.

    Gaussian components of variance T, then the mean (total momentum) is subtracted and the
    velocities are rescaled so that the kinetic energy is EXACTLY (3/2)(n - 1) k_B T
    (the n - 1 counts the 3(n - 1) degrees of freedom left once the total momentum is fixed
    at zero; this is also the temperature definition used by :class:`HardSphereSystem`).
    For n = 1 the only momentum-free velocity is zero.

    seed_or_rng : int, None or numpy.random.Generator.
    Raises ValueError for n < 1 or T <= 0.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need at least one particle, got n={n}")
    if not T > 0:
        raise ValueError(f"temperature must be positive, got {T}")
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    v = rng.normal(0.0, math.sqrt(T), size=(n, 3))
    v -= v.mean(axis=0)
    if n == 1:
        return np.zeros((1, 3))
    ke = 0.5 * np.sum(v * v)
    v *= math.sqrt(1.5 * (n - 1) * T / ke)
    return v


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------
# prm (float64): 0-2 box, 3 shell, 4 s0 (diameter scale at kernel time 0), 5 gamma (ds/dt)
# ist (int64 stats): 0 collisions, 1 events, 2 rebuilds, 3 stale events
# fst (float64 stats): 0 collision virial sum |r_ij . dv_ij|

@njit(cache=True, inline="always")
def _heap_fix(i, ev_time, heap, hpos, n):
    """Restore the heap property after ev_time[i] changed."""
    k = hpos[i]
    key = ev_time[i]
    moved = False
    while k > 0:
        p = (k - 1) >> 1
        hp = heap[p]
        if ev_time[hp] <= key:
            break
        heap[k] = hp
        hpos[hp] = k
        k = p
        moved = True
    if not moved:
        while True:
            c = 2 * k + 1
            if c >= n:
                break
            hc = heap[c]
            tc = ev_time[hc]
            if c + 1 < n:
                hc2 = heap[c + 1]
                tc2 = ev_time[hc2]
                if tc2 < tc:
                    c += 1
                    hc = hc2
                    tc = tc2
            if tc >= key:
                break
            heap[k] = hc
            hpos[hc] = k
            k = c
    heap[k] = i
    hpos[i] = k


@njit(cache=True, inline="always")
def _pair_time(dx, dy, dz, dvx, dvy, dvz, sig, sdot):
    """Earliest t >= 0 with |dr + dv t| = sig + sdot t (inf if none)."""
    b = dx * dvx + dy * dvy + dz * dvz
    c = dx * dx + dy * dy + dz * dz - sig * sig
    if sdot == 0.0:
        if b >= 0.0:
            return _INF
        if c <= 0.0:
            return 0.0
        a = dvx * dvx + dvy * dvy + dvz * dvz
        disc = b * b - a * c
        if disc < 0.0:
            return _INF
        return c / (-b + math.sqrt(disc))
    a = dvx * dvx + dvy * dvy + dvz * dvz - sdot * sdot
    bb = b - sig * sdot
    if bb >= 0.0 and a >= 0.0:
        return _INF
    if c <= 0.0:
        if bb < 0.0:
            return 0.0
        return -2.0 * bb / a  # a < 0 here: separating now, caught up by growth later
    disc = bb * bb - a * c
    if disc < 0.0:
        return _INF
    return c / (-bb + math.sqrt(disc))


@njit(cache=True)
def _predict(i, t, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm):
    """Schedule the earliest event of particle i (local state valid, current time t)."""
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    shell = prm[3]
    gamma = prm[5]
    s = prm[4] + gamma * t
    dti = t - tl[i]
    vix = v[i, 0]
    viy = v[i, 1]
    viz = v[i, 2]
    xi = r[i, 0] + vix * dti
    yi = r[i, 1] + viy * dti
    zi = r[i, 2] + viz * dti
    # leaving the shell
    ex = xi - ctr[i, 0]
    ey = yi - ctr[i, 1]
    ez = zi - ctr[i, 2]
    a = vix * vix + viy * viy + viz * viz
    best = _INF
    if a > 0.0:
        b = ex * vix + ey * viy + ez * viz
        c = ex * ex + ey * ey + ez * ez - shell * shell
        if c >= 0.0:
            best = 0.0 if b >= 0.0 else -2.0 * b / a
        else:
            best = (-b + math.sqrt(b * b - a * c)) / a
    partner = -1
    di = diam[i]
    for k in range(nn[i]):
        j = nbr[i, k]
        dtj = t - tl[j]
        dvx = v[j, 0] - vix
        dvy = v[j, 1] - viy
        dvz = v[j, 2] - viz
        dx = r[j, 0] + v[j, 0] * dtj - xi
        dy = r[j, 1] + v[j, 1] * dtj - yi
        dz = r[j, 2] + v[j, 2] * dtj - zi
        dx -= lx * np.rint(dx / lx)
        dy -= ly * np.rint(dy / ly)
        dz -= lz * np.rint(dz / lz)
        sig0 = 0.5 * (di + diam[j])
        tc = _pair_time(dx, dy, dz, dvx, dvy, dvz, sig0 * s, sig0 * gamma)
        if tc < best:
            best = tc
            partner = j
    ev_time[i] = t + best
    ev_partner[i] = partner
    if partner >= 0:
        ev_pcount[i] = ccount[partner]


@njit(cache=True)
def _cell_index(x, y, z, nc, prm):
    cx = int(x / prm[0] * nc[0])
    cy = int(y / prm[1] * nc[1])
    cz = int(z / prm[2] * nc[2])
    if cx >= nc[0]:
        cx = nc[0] - 1
    if cy >= nc[1]:
        cy = nc[1] - 1
    if cz >= nc[2]:
        cz = nc[2] - 1
    if cx < 0:
        cx = 0
    if cy < 0:
        cy = 0
    if cz < 0:
        cz = 0
    return (cx * nc[1] + cy) * nc[2] + cz


@njit(cache=True)
def _rebuild(i, t, r, v, tl, ctr, img, diam, nbr, nn, chead, cnext, cprev, cell_of, nc,
             stencil, stencil_n, prm, maxdiam):
    """Advance i to t, wrap it, make its position the new shell centre and rebuild its list.

    Returns False if a neighbour list would overflow (the lists are then inconsistent and
    must be rebuilt from scratch with a larger capacity)."""
    dt = t - tl[i]
    tl[i] = t
    for d in range(3):
        x = r[i, d] + v[i, d] * dt
        L = prm[d]
        if x < 0.0 or x >= L:
            k = math.floor(x / L)
            x -= k * L
            img[i, d] += k
            if x >= L:
                x -= L
                img[i, d] += 1
            if x < 0.0:
                x = 0.0
        r[i, d] = x
        ctr[i, d] = x
    # remove i from its old neighbours' lists
    for k in range(nn[i]):
        j = nbr[i, k]
        m = nn[j]
        for q in range(m):
            if nbr[j, q] == i:
                nbr[j, q] = nbr[j, m - 1]
                nn[j] = m - 1
                break
    nn[i] = 0
    # move i to the cell of its new centre
    cnew = _cell_index(ctr[i, 0], ctr[i, 1], ctr[i, 2], nc, prm)
    cold = cell_of[i]
    if cnew != cold:
        p = cprev[i]
        q = cnext[i]
        if p >= 0:
            cnext[p] = q
        else:
            chead[cold] = q
        if q >= 0:
            cprev[q] = p
        h = chead[cnew]
        cnext[i] = h
        cprev[i] = -1
        if h >= 0:
            cprev[h] = i
        chead[cnew] = i
        cell_of[i] = cnew
    return _fill_list(i, ctr, diam, nbr, nn, chead, cnext, stencil, stencil_n, cnew, prm)


@njit(cache=True)
def _fill_list(i, ctr, diam, nbr, nn, chead, cnext, stencil, stencil_n, c, prm):
    """Insert into i's list (and i into theirs) every j with |c_i - c_j| < sigma_ij + 2 shell."""
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    skin = 2.0 * prm[3]
    cap = nbr.shape[1]
    xi = ctr[i, 0]
    yi = ctr[i, 1]
    zi = ctr[i, 2]
    di = diam[i]
    ok = True
    for s in range(stencil_n[c]):
        j = chead[stencil[c, s]]
        while j >= 0:
            if j != i:
                dx = ctr[j, 0] - xi
                dy = ctr[j, 1] - yi
                dz = ctr[j, 2] - zi
                dx -= lx * np.rint(dx / lx)
                dy -= ly * np.rint(dy / ly)
                dz -= lz * np.rint(dz / lz)
                rc = 0.5 * (di + diam[j]) + skin
                if dx * dx + dy * dy + dz * dz < rc * rc:
                    if nn[i] >= cap or nn[j] >= cap:
                        ok = False
                    else:
                        nbr[i, nn[i]] = j
                        nn[i] += 1
                        nbr[j, nn[j]] = i
                        nn[j] += 1
            j = cnext[j]
    return ok


@njit(cache=True)
def _collide(i, j, t, r, v, tl, diam, ccount, prm, fst):
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    gamma = prm[5]
    dti = t - tl[i]
    dtj = t - tl[j]
    for d in range(3):
        r[i, d] += v[i, d] * dti
        r[j, d] += v[j, d] * dtj
    tl[i] = t
    tl[j] = t
    dx = r[j, 0] - r[i, 0]
    dy = r[j, 1] - r[i, 1]
    dz = r[j, 2] - r[i, 2]
    dx -= lx * np.rint(dx / lx)
    dy -= ly * np.rint(dy / ly)
    dz -= lz * np.rint(dz / lz)
    dvx = v[j, 0] - v[i, 0]
    dvy = v[j, 1] - v[i, 1]
    dvz = v[j, 2] - v[i, 2]
    b = dx * dvx + dy * dvy + dz * dvz
    r2 = dx * dx + dy * dy + dz * dz
    if gamma == 0.0:
        f = b / r2  # v_i += (dv.n) n, v_j -= (dv.n) n
        fst[0] -= b
    else:
        rr = math.sqrt(r2)
        sdot = 0.5 * (diam[i] + diam[j]) * gamma
        un = b / rr
        # u_n' = 2 sdot - u_n  ->  delta u_n = 2 (sdot - u_n); each gets half
        f = -(sdot - un) / rr
    v[i, 0] += f * dx
    v[i, 1] += f * dy
    v[i, 2] += f * dz
    v[j, 0] -= f * dx
    v[j, 1] -= f * dy
    v[j, 2] -= f * dz
    ccount[i] += 1
    ccount[j] += 1


@njit(cache=True)
def _run_kernel(t_end, r, v, tl, ctr, img, diam, nbr, nn, chead, cnext, cprev, cell_of, nc,
                stencil, stencil_n, ev_time, ev_partner, ev_pcount, ccount, heap, hpos, prm,
                maxdiam, ist, fst):
    """Process events up to t_end.  Returns (status, t): status 0 = reached t_end,
    1 = neighbour list overflow at time t (caller must resynchronise and reinitialise)."""
    n = r.shape[0]
    while True:
        i = heap[0]
        t = ev_time[i]
        if t > t_end:
            return 0, t_end
        ist[1] += 1
        p = ev_partner[i]
        if p < 0:
            ist[2] += 1
            ok = _rebuild(i, t, r, v, tl, ctr, img, diam, nbr, nn, chead, cnext, cprev, cell_of,
                          nc, stencil, stencil_n, prm, maxdiam)
            if not ok:
                return 1, t
            _predict(i, t, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm)
            _heap_fix(i, ev_time, heap, hpos, n)
        elif ccount[p] != ev_pcount[i]:
            ist[3] += 1
            _predict(i, t, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm)
            _heap_fix(i, ev_time, heap, hpos, n)
        else:
            ist[0] += 1
            _collide(i, p, t, r, v, tl, diam, ccount, prm, fst)
            _predict(i, t, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm)
            _heap_fix(i, ev_time, heap, hpos, n)
            _predict(p, t, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm)
            _heap_fix(p, ev_time, heap, hpos, n)


@njit(cache=True)
def _sync(t, r, v, tl):
    for i in range(r.shape[0]):
        dt = t - tl[i]
        if dt != 0.0:
            r[i, 0] += v[i, 0] * dt
            r[i, 1] += v[i, 1] * dt
            r[i, 2] += v[i, 2] * dt
        tl[i] = t


@njit(cache=True)
def _init_all(r, v, tl, ctr, img, diam, nbr, nn, chead, cnext, cprev, cell_of, nc, stencil,
              stencil_n, ev_time, ev_partner, ev_pcount, ccount, heap, hpos, prm):
    """Full (re)initialisation at time 0; particles must be synchronised (tl = 0).
    Returns False on neighbour-list overflow."""
    n = r.shape[0]
    chead[:] = -1
    for i in range(n):
        tl[i] = 0.0
        for d in range(3):
            x = r[i, d]
            L = prm[d]
            if x < 0.0 or x >= L:
                k = math.floor(x / L)
                x -= k * L
                img[i, d] += k
                if x >= L:
                    x -= L
                    img[i, d] += 1
                if x < 0.0:
                    x = 0.0
            r[i, d] = x
            ctr[i, d] = x
        c = _cell_index(ctr[i, 0], ctr[i, 1], ctr[i, 2], nc, prm)
        cell_of[i] = c
        h = chead[c]
        cnext[i] = h
        cprev[i] = -1
        if h >= 0:
            cprev[h] = i
        chead[c] = i
        nn[i] = 0
    ok = True
    # half lists via ordering: insert pair once (j < i)
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    skin = 2.0 * prm[3]
    cap = nbr.shape[1]
    for i in range(n):
        c = cell_of[i]
        for s in range(stencil_n[c]):
            j = chead[stencil[c, s]]
            while j >= 0:
                if j < i:
                    dx = ctr[j, 0] - ctr[i, 0]
                    dy = ctr[j, 1] - ctr[i, 1]
                    dz = ctr[j, 2] - ctr[i, 2]
                    dx -= lx * np.rint(dx / lx)
                    dy -= ly * np.rint(dy / ly)
                    dz -= lz * np.rint(dz / lz)
                    rc = 0.5 * (diam[i] + diam[j]) + skin
                    if dx * dx + dy * dy + dz * dz < rc * rc:
                        if nn[i] >= cap or nn[j] >= cap:
                            ok = False
                        else:
                            nbr[i, nn[i]] = j
                            nn[i] += 1
                            nbr[j, nn[j]] = i
                            nn[j] += 1
                j = cnext[j]
    if not ok:
        return False
    for i in range(n):
        _predict(i, 0.0, r, v, tl, ctr, diam, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, prm)
    order = np.argsort(ev_time, kind="mergesort")  # sorted array is a valid heap
    for k in range(n):
        heap[k] = order[k]
        hpos[order[k]] = k
    return True


@njit(cache=True)
def _min_gap(r, diam, box, scale):
    """min over pairs of |r_ij| - sigma_ij*scale (minimum image), and the pair."""
    n = r.shape[0]
    best = _INF
    bi = -1
    bj = -1
    for i in range(n):
        for j in range(i + 1, n):
            dx = r[j, 0] - r[i, 0]
            dy = r[j, 1] - r[i, 1]
            dz = r[j, 2] - r[i, 2]
            dx -= box[0] * np.rint(dx / box[0])
            dy -= box[1] * np.rint(dy / box[1])
            dz -= box[2] * np.rint(dz / box[2])
            g = math.sqrt(dx * dx + dy * dy + dz * dz) - 0.5 * (diam[i] + diam[j]) * scale
            if g < best:
                best = g
                bi = i
                bj = j
    return best, bi, bj


def _stencil_table(nc):
    ncell = int(nc[0] * nc[1] * nc[2])
    st = np.zeros((ncell, 27), np.int64)
    stn = np.zeros(ncell, np.int64)
    for cx in range(nc[0]):
        for cy in range(nc[1]):
            for cz in range(nc[2]):
                c = (cx * nc[1] + cy) * nc[2] + cz
                seen = []
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        for dz in (-1, 0, 1):
                            cc = (((cx + dx) % nc[0]) * nc[1] + (cy + dy) % nc[1]) * nc[2] + (cz + dz) % nc[2]
                            if cc not in seen:
                                seen.append(cc)
                st[c, :len(seen)] = seen
                stn[c] = len(seen)
    return st, stn


# --------------------------------------------------------------------------------------
# the system
# --------------------------------------------------------------------------------------
class HardSphereSystem:
    """N hard spheres (equal masses m = 1) in an orthorhombic periodic box, NVE by EDMD.

    Parameters
    ----------
    positions : (N, 3) float, any periodic image (wrapped internally; the given image is the
        origin of the unwrapped trajectory), sigma_A units
    diameters : (N,) float > 0, sigma_A units; pair contact sigma_ij = (sigma_i + sigma_j)/2
    box : (3,) float edge lengths (origin at 0); every edge must exceed 2 (max sigma + 2 shell)
    velocities : (N, 3) float or None -> Maxwell–Boltzmann at ``T`` (zero momentum,
        KE = (3/2)(N-1) T exactly) drawn with ``seed``
    check : if True refuse overlaps (ValueError naming the pair (i, j, gap)),
        positions that are NaN/inf or outside [0, box) (ValueError naming the index i),
        non-positive diameters and non-finite velocities.
    T, seed : temperature and seed for the velocities drawn when ``velocities`` is None
    shell : neighbour-shell radius delta (sigma_A); lists hold pairs within sigma_ij + 2 delta

    Attributes / properties
    -----------------------
    positions (N, 3) wrapped into [0, box), synchronised to ``time``; unwrapped_positions (N, 3);
    velocities (N, 3); time (tau, absolute since creation); n_collisions; n_events;
    pressure_Z (beta P / rho from the collision virial since the last ``reset_pressure``);
    kinetic_energy; temperature (2 KE / (3 (N - 1))).
    """

    def __init__(self, positions, diameters, box, velocities=None, check=True, *, T=1.0, seed=None,
                 shell=None):
        pos = np.array(positions, dtype=np.float64, copy=True)
        diam = np.array(diameters, dtype=np.float64, copy=True).reshape(-1)
        box = np.array(box, dtype=np.float64, copy=True).reshape(-1)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3), got {pos.shape}")
        n = pos.shape[0]
        if n < 2:
            raise ValueError(f"need at least 2 particles, got {n}")
        if diam.shape != (n,):
            raise ValueError(f"diameters must have shape ({n},), got {diam.shape}")
        if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
            raise ValueError(f"box must be 3 positive finite edge lengths, got {box}")
        bad = np.flatnonzero(~(np.isfinite(diam) & (diam > 0)))
        if bad.size:
            raise ValueError(f"particle {bad[0]} has an invalid diameter {diam[bad[0]]}")
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
        if bad.size:
            raise ValueError(f"particle {bad[0]} has a non-finite position {pos[bad[0]]}")
        if check:
            bad = np.flatnonzero(((pos < 0) | (pos >= box)).any(axis=1))
            if bad.size:
                raise ValueError(f"particle {bad[0]} is outside the box [0, {box}): {pos[bad[0]]}")
        if velocities is None:
            vel = maxwell_boltzmann(n, T, seed)
        else:
            vel = np.array(velocities, dtype=np.float64, copy=True)
            if vel.shape != (n, 3):
                raise ValueError(f"velocities must have shape ({n}, 3), got {vel.shape}")
            bad = np.flatnonzero(~np.isfinite(vel).all(axis=1))
            if bad.size:
                raise ValueError(f"particle {bad[0]} has a non-finite velocity {vel[bad[0]]}")
        self.n = n
        self.box = box
        self.diameters = diam
        if shell is None:
            shell = 0.15 * float(diam.max())
        self.shell = float(shell)
        maxd = float(diam.max())
        if 2.0 * (maxd + 2.0 * self.shell) >= box.min():
            raise ValueError(f"box {box} too small: every edge must exceed 2*(max sigma + 2 shell) = "
                             f"{2.0 * (maxd + 2.0 * self.shell):.4g}")
        # state
        img = np.floor(pos / box).astype(np.int64)
        self._r = pos - img * box
        self._img = img
        self._v = vel
        self._tl = np.zeros(n)
        self._ctr = np.zeros((n, 3))
        self._prm = np.array([box[0], box[1], box[2], self.shell, 1.0, 0.0])
        self._time = 0.0          # absolute time of the kernel origin + ...
        self._ist = np.zeros(4, np.int64)
        self._fst = np.zeros(1)
        self._virial0 = 0.0
        self._ptime = 0.0
        self._tsum_T = 0.0
        self._ccount = np.zeros(n, np.int64)
        self._ev_time = np.zeros(n)
        self._ev_partner = np.zeros(n, np.int64)
        self._ev_pcount = np.zeros(n, np.int64)
        self._heap = np.zeros(n, np.int64)
        self._hpos = np.zeros(n, np.int64)
        self._nn = np.zeros(n, np.int64)
        # cells
        cut = maxd + 2.0 * self.shell
        nc = np.maximum(1, np.floor(box / cut).astype(np.int64))
        nc[nc < 3] = 1
        self._nc = nc
        self._stencil, self._stencil_n = _stencil_table(nc)
        self._chead = -np.ones(int(nc.prod()), np.int64)
        self._cnext = np.zeros(n, np.int64)
        self._cprev = np.zeros(n, np.int64)
        self._cell_of = np.zeros(n, np.int64)
        rho = n / box.prod()
        expect = rho * 4.0 / 3.0 * np.pi * cut ** 3
        self._cap = int(2.0 * expect) + 16
        self._nbr = np.zeros((n, self._cap), np.int64)
        if check:
            g, i, j = _min_gap(self._r, diam, box, 1.0)
            if g < 0:
                raise ValueError(f"particles {i} and {j} overlap: gap {g:.6g} (pair ({i}, {j}, {g:.6g}))")
        self._ready = False

    # ---------------------------------------------------------------- internals
    def _args(self):
        return (self._r, self._v, self._tl, self._ctr, self._img, self.diameters, self._nbr, self._nn,
                self._chead, self._cnext, self._cprev, self._cell_of, self._nc, self._stencil,
                self._stencil_n, self._ev_time, self._ev_partner, self._ev_pcount, self._ccount,
                self._heap, self._hpos, self._prm)

    def _init(self):
        """Synchronised state (tl == 0) -> fresh lists, events and calendar."""
        while not _init_all(*self._args()):
            self._grow_lists()
        self._ready = True

    def _grow_lists(self):
        self._cap *= 2
        self._nbr = np.zeros((self.n, self._cap), np.int64)

    def _advance(self, duration):
        """Advance by duration >= 0 (kernel time restarts at 0 on every call)."""
        if duration < 0:
            raise ValueError(f"duration must be non-negative, got {duration}")
        if not self._ready:
            self._init()
        else:
            # rebase kernel time to 0: particles are synchronised at the previous end time
            self._ev_time -= self._tl[0]
            self._tl[:] = 0.0
        t_end = float(duration)
        ist, fst = self._ist, self._fst
        while True:
            status, t = _run_kernel(t_end, self._r, self._v, self._tl, self._ctr, self._img, self.diameters,
                                    self._nbr, self._nn, self._chead, self._cnext, self._cprev,
                                    self._cell_of, self._nc, self._stencil, self._stencil_n,
                                    self._ev_time, self._ev_partner, self._ev_pcount, self._ccount,
                                    self._heap, self._hpos, self._prm, float(self.diameters.max()),
                                    ist, fst)
            _sync(t, self._r, self._v, self._tl)
            if status == 0:
                break
            # neighbour-list overflow: restart from the synchronised state with larger lists
            self._grow_lists()
            self._time += t
            self._prm[4] += self._prm[5] * t
            t_end -= t
            self._init()
        self._time += t_end
        self._prm[4] += self._prm[5] * t_end

    # ---------------------------------------------------------------- public API
    def run(self, duration):
        """Advance the NVE dynamics by ``duration`` (tau); positions end synchronised."""
        duration = float(duration)
        if not np.isfinite(duration) or duration < 0:
            raise ValueError(f"duration must be finite and non-negative, got {duration}")
        self._advance(duration)
        self._ptime += duration

    def run_record(self, times):
        """Run and return UNWRAPPED positions at ``times`` after the current time.

        times : (M,) non-decreasing, >= 0 (tau, relative to the current ``time``).
        Returns (M, N, 3) float64.  The system ends at current time + times[-1].
        Raises ValueError for negative, decreasing or non-finite times."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if times.size and (not np.all(np.isfinite(times)) or times[0] < 0 or np.any(np.diff(times) < 0)):
            raise ValueError("times must be finite, non-negative and non-decreasing")
        out = np.empty((times.size, self.n, 3))
        t_prev = 0.0
        for k, t in enumerate(times):
            self.run(t - t_prev)
            t_prev = t
            out[k] = self.unwrapped_positions
        return out

    @property
    def positions(self):
        p = self._r - np.floor(self._r / self.box) * self.box
        p[p >= self.box] = 0.0
        return p

    @property
    def unwrapped_positions(self):
        return self._r + self._img * self.box

    @property
    def velocities(self):
        return self._v.copy()

    @property
    def time(self):
        return self._time

    @property
    def n_collisions(self):
        return int(self._ist[0])

    @property
    def n_events(self):
        return int(self._ist[1])

    @property
    def kinetic_energy(self):
        return 0.5 * float(np.sum(self._v * self._v))

    @property
    def temperature(self):
        """k_B T = 2 KE / (3 (N - 1)) (zero total momentum)."""
        return 2.0 * self.kinetic_energy / (3.0 * (self.n - 1))

    @property
    def packing_fraction(self):
        return float(np.pi / 6.0 * np.sum(self.diameters ** 3) / np.prod(self.box))

    def reset_pressure(self):
        """Start a new pressure measurement interval at the current time."""
        self._virial0 = float(self._fst[0])
        self._ptime = 0.0

    @property
    def pressure_Z(self):
        """beta P / rho = 1 + W / (3 N k_B T t) over the interval since ``reset_pressure``
        (or creation), W = sum over collisions of |r_ij . dv_ij| (m = 1), k_B T = 2KE/(3(N-1)).
        NaN before any time has elapsed."""
        if self._ptime <= 0:
            return float("nan")
        w = float(self._fst[0]) - self._virial0
        return 1.0 + w / (3.0 * self.n * self.temperature * self._ptime)

    def min_gap(self):
        """Smallest surface gap min_{i<j} (|r_ij| - sigma_ij) (all pairs, minimum image)."""
        return float(_min_gap(self._r, self.diameters, self.box, self._prm[4])[0])

    def set_velocities(self, velocities):
        vel = np.array(velocities, dtype=np.float64)
        if vel.shape != (self.n, 3) or not np.all(np.isfinite(vel)):
            raise ValueError(f"velocities must be finite with shape ({self.n}, 3)")
        self._v[:] = vel
        self._ready = False

    def reset_counters(self):
        """Zero the collision/event counters and the pressure accumulator and set time = 0."""
        self._ist[:] = 0
        self._fst[:] = 0.0
        self._virial0 = 0.0
        self._ptime = 0.0
        self._time = 0.0


# --------------------------------------------------------------------------------------
# preparation: random insertion + Lubachevsky–Stillinger growth + NVE equilibration
# --------------------------------------------------------------------------------------
def _random_insertion(diam, box, rng, max_tries=100000):
    n = diam.size
    pos = np.empty((n, 3))
    for i in range(n):
        for _ in range(max_tries):
            x = rng.random(3) * box
            if i == 0:
                break
            d = pos[:i] - x
            d -= box * np.rint(d / box)
            if np.all(np.sqrt(np.sum(d * d, axis=1)) > 0.5 * (diam[:i] + diam[i]) * (1 + 1e-9)):
                break
        else:
            raise RuntimeError(f"random insertion failed for particle {i}")
        pos[i] = x
    return pos


def prepare_snapshot(n, x_large, size_ratio, eta, seed, equilibration_time, growth_rate=0.02, *, T=1.0,
                     eta_insert=0.2, rescale_interval=0.25, shell=None):
    """Equilibrated binary hard-sphere configuration at packing fraction ``eta``.

    The first round(x_large * n) particles are large (species A, sigma = 1), the rest small
    (species B, sigma = size_ratio).  Protocol: random sequential insertion at diameters
    s0 * sigma_i with packing fraction ``eta_insert`` (if eta is larger), Lubachevsky–Stillinger
    growth s(t) = s0 + growth_rate * t (diameters grow linearly in time; collisions reflect the
    normal velocity in the frame of the growing surfaces) with velocities rescaled to T every
    ``rescale_interval`` tau, ending exactly at s = 1; then fresh Maxwell–Boltzmann velocities
    at T and NVE equilibration for ``equilibration_time`` (tau).  Counters, clock and pressure
    are reset at the end.  Deterministic for a given seed.

    Returns HardSphereSystem.  Raises ValueError on invalid parameters.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"need n >= 2, got {n}")
    if not 0.0 <= x_large <= 1.0:
        raise ValueError(f"x_large must be in [0, 1], got {x_large}")
    if not size_ratio > 0:
        raise ValueError(f"size_ratio must be positive, got {size_ratio}")
    if not 0.0 < eta < 0.74:
        raise ValueError(f"eta must be in (0, 0.74), got {eta}")
    if not growth_rate > 0:
        raise ValueError(f"growth_rate must be positive, got {growth_rate}")
    if equilibration_time < 0:
        raise ValueError(f"equilibration_time must be >= 0, got {equilibration_time}")
    rng = np.random.default_rng(seed)
    na = int(round(x_large * n))
    diam = np.full(n, float(size_ratio))
    diam[:na] = 1.0
    vol = np.pi / 6.0 * np.sum(diam ** 3) / eta
    box = np.full(3, vol ** (1.0 / 3.0))
    eta0 = min(eta, eta_insert)
    s0 = (eta0 / eta) ** (1.0 / 3.0)
    pos = _random_insertion(diam * s0, box, rng)
    vel = maxwell_boltzmann(n, T, rng)
    sysm = HardSphereSystem(pos, diam, box, vel, check=False, shell=shell)
    if s0 < 1.0:
        sysm._prm[4] = s0
        sysm._prm[5] = growth_rate
        while sysm._prm[4] < 1.0:
            dt = min(rescale_interval, (1.0 - sysm._prm[4]) / growth_rate)
            last = sysm._prm[4] + growth_rate * dt >= 1.0 - 1e-12
            if last:
                dt = (1.0 - sysm._prm[4]) / growth_rate
            sysm._advance(dt)
            sysm._v *= math.sqrt(1.5 * (n - 1) * T / sysm.kinetic_energy)
            sysm._ready = False
            if last:
                break
        sysm._prm[4] = 1.0
        sysm._prm[5] = 0.0
        sysm._ready = False
    sysm.set_velocities(maxwell_boltzmann(n, T, rng))
    sysm.run(equilibration_time)
    sysm.reset_counters()
    return sysm
