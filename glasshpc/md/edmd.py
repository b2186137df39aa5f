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
* Paul's event calendar: a ring of buckets of width ~2 x (mean event horizon)/N covering a
  bounded time window, an overflow list beyond it, and a small indexed binary heap holding the
  events of the current bucket (O(1) insertion/removal);
* particles are advanced lazily: each stores its position at its own local time t_i;
  positions are wrapped into the box only when a particle rebuilds its list, the periodic
  image is counted in an integer image counter (unwrapped = wrapped + image * box);
* a stale collision event (its partner collided in the meantime: collision counters differ)
  is simply re-predicted when it reaches the top of the calendar;
* pressure from the collision virial W = sum over collisions of |r_ij . dv_ij| (m = 1).

Performance notes: each particle's state is one 64-byte row (one cache line per neighbour
visited); the kernels are compiled without numba's reference counting (``_nrt=False``: passing
arrays between njit functions otherwise costs atomic inc/decrefs per call, which dominated);
the prediction first gathers the neighbours' relative positions/velocities into contiguous
scratch rows, then computes all contact times in a branch-free loop that LLVM vectorises
(AVX-512 sqrt/div), then takes the argmin: no unpredictable approach/discriminant branches.

Lubachevsky–Stillinger growth is supported by the same kernel: all diameters are
``sigma_i * (s0 + gamma t)``; collision prediction solves |r_ij + v_ij t| = sigma_ij (s0 + gamma t)
and a collision reverses the normal relative velocity *in the frame of the growing surfaces*
(u_n' = 2 sigma_ij gamma - u_n), see :func:`prepare_snapshot`.
"""
import math

import numpy as np
from numba import njit

from .velocities import maxwell_boltzmann  # noqa: F401  (public here too)

__all__ = ["EdmdEngine", "HardSphereSystem", "bmcsl_Z", "maxwell_boltzmann", "prepare_snapshot"]

_INF = np.inf
OVERLAP_TOLERANCE = 1e-10   # gaps above -1e-10 max sigma count as contacts, not overlaps


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


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------
# Particle state, one 64-byte row (one cache line) per particle:
#   st[i] = (x, y, z, t_i, vx, vy, vz, a_i): position at the particle's own local time t_i,
#   velocity, and radius a_i = sigma_i / 2 (target radius; the actual one is a_i * s(t)).
# prm (float64): 0-2 box, 3 shell, 4 s0 (diameter scale at kernel time 0), 5 gamma (ds/dt),
#                6-8 half box, 9 1/bucket width, 10 bucket width, 11 event budget (total count)
# cst (int64 calendar state): 0 current bucket cb, 1 small-heap size, 2 ring mask (NB - 1),
#                3 events in the ring
# ist (int64 stats): 0 collisions, 1 events, 2 list rebuilds, 3 stale events
# fst (float64 stats): 0 collision virial sum |r_ij . dv_ij|
_X, _Y, _Z, _T, _VX, _VY, _VZ, _A = 0, 1, 2, 3, 4, 5, 6, 7
_JIT = dict(cache=True, error_model="numpy", boundscheck=False, _nrt=False)


# ---- Paul's event calendar: ring of NB buckets of width w, overflow list, and a small
# ---- indexed binary heap holding the events of the current bucket.
@njit(inline="always", **_JIT)
def _sh_place(i, k, key, ev_time, sh, shpos, n):
    """Put particle i (event time key) into heap hole k of a heap of size n, sifting."""
    moved = False
    while k > 0:
        p = (k - 1) >> 1
        hp = sh[p]
        if ev_time[hp] <= key:
            break
        sh[k] = hp
        shpos[hp] = k
        k = p
        moved = True
    if not moved:
        while True:
            c = 2 * k + 1
            if c >= n:
                break
            hc = sh[c]
            tc = ev_time[hc]
            if c + 1 < n:
                hc2 = sh[c + 1]
                tc2 = ev_time[hc2]
                if tc2 < tc:
                    c += 1
                    hc = hc2
                    tc = tc2
            if tc >= key:
                break
            sh[k] = hc
            shpos[hc] = k
            k = c
    sh[k] = i
    shpos[i] = k


@njit(inline="always", **_JIT)
def _cal_insert(i, ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm):
    x = ev_time[i] * prm[9]
    cb = cst[0]
    nb = cst[2] + 1
    if x < cb + 1:
        n = cst[1]
        cst[1] = n + 1
        where[i] = -2
        _sh_place(i, n, ev_time[i], ev_time, sh, shpos, n + 1)
    else:
        if x < cb + nb:
            w = int(x) & cst[2]
            cst[3] += 1
        else:
            w = nb
        h = ring[w]
        cnx[i] = h
        cpv[i] = -1
        if h >= 0:
            cpv[h] = i
        ring[w] = i
        where[i] = w


@njit(inline="always", **_JIT)
def _cal_remove(i, ev_time, where, cnx, cpv, ring, sh, shpos, cst):
    w = where[i]
    if w == -2:
        k = shpos[i]
        n = cst[1] - 1
        cst[1] = n
        if k < n:
            last = sh[n]
            _sh_place(last, k, ev_time[last], ev_time, sh, shpos, n)
    else:
        p = cpv[i]
        q = cnx[i]
        if p >= 0:
            cnx[p] = q
        else:
            ring[w] = q
        if q >= 0:
            cpv[q] = p
        if w <= cst[2]:
            cst[3] -= 1


@njit(**_JIT)
def _cal_next(ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm):
    """Particle with the earliest event (-1 if every event is at infinity)."""
    mask = cst[2]
    nb = mask + 1
    inv = prm[9]
    while cst[1] == 0:
        if cst[3] == 0:
            # ring empty: jump towards the earliest overflow event
            xmin = _INF
            j = ring[nb]
            while j >= 0:
                x = ev_time[j] * inv
                if x < xmin:
                    xmin = x
                j = cnx[j]
            if not xmin < 4.0e18:
                return -1
            target = (int(xmin) & ~mask) - 1
            if target > cst[0]:
                cst[0] = target
        cb = cst[0] + 1
        cst[0] = cb
        if (cb & mask) == 0:
            j = ring[nb]
            while j >= 0:
                q = cnx[j]
                x = ev_time[j] * inv
                if x < cb + nb:
                    p = cpv[j]
                    if p >= 0:
                        cnx[p] = q
                    else:
                        ring[nb] = q
                    if q >= 0:
                        cpv[q] = p
                    w = int(x) & mask
                    h = ring[w]
                    cnx[j] = h
                    cpv[j] = -1
                    if h >= 0:
                        cpv[h] = j
                    ring[w] = j
                    where[j] = w
                    cst[3] += 1
                j = q
        w = cb & mask
        j = ring[w]
        ring[w] = -1
        while j >= 0:
            q = cnx[j]
            n = cst[1]
            cst[1] = n + 1
            where[j] = -2
            _sh_place(j, n, ev_time[j], ev_time, sh, shpos, n + 1)
            cst[3] -= 1
            j = q
    return sh[0]


@njit(**_JIT)
def _cal_build(ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm):
    """Empty the calendar, choose the bucket width (~2 events per bucket) and insert all."""
    n = ev_time.shape[0]
    ring[:] = -1
    cst[0] = 0
    cst[1] = 0
    cst[3] = 0
    t0 = _INF
    for i in range(n):
        if ev_time[i] < t0:
            t0 = ev_time[i]
    tot = 0.0
    m = 0
    for i in range(n):
        if ev_time[i] < 1e300:
            tot += ev_time[i] - t0
            m += 1
    width = 1.0
    if m > 0 and tot > 0.0:
        width = 2.0 * tot / m / n
    if not t0 < 1e300:
        t0 = 0.0
    prm[10] = width
    prm[9] = 1.0 / width
    x0 = t0 * prm[9]
    if x0 < 4.0e18:
        cst[0] = int(x0)
    for i in range(n):
        _cal_insert(i, ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)


# ---- prediction
@njit(inline="always", **_JIT)
def _predict(i, t, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm):
    """Schedule the earliest event of particle i at current time t: leaving its shell or
    colliding with a listed neighbour."""
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    hx = prm[6]
    hy = prm[7]
    hz = prm[8]
    shell = prm[3]
    gamma = prm[5]
    s = prm[4] + gamma * t
    dti = t - st[i, _T]
    vix = st[i, _VX]
    viy = st[i, _VY]
    viz = st[i, _VZ]
    xi = st[i, _X] + vix * dti
    yi = st[i, _Y] + viy * dti
    zi = st[i, _Z] + viz * dti
    ai = st[i, _A]
    # leaving the shell: |x_i + v_i tau - c_i| = shell
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
    if gamma == 0.0:
        m = nn[i]
        # gather the neighbours' data into contiguous rows (relative to i, at time t) ...
        for k in range(m):
            j = nbr[i, k]
            dtj = t - st[j, _T]
            vjx = st[j, _VX]
            vjy = st[j, _VY]
            vjz = st[j, _VZ]
            scratch[1, k] = st[j, _X] + vjx * dtj - xi
            scratch[2, k] = st[j, _Y] + vjy * dtj - yi
            scratch[3, k] = st[j, _Z] + vjz * dtj - zi
            scratch[4, k] = vjx - vix
            scratch[5, k] = vjy - viy
            scratch[6, k] = vjz - viz
            scratch[7, k] = ai + st[j, _A]
        # ... then a branch-free, vectorisable contact-time loop
        for k in range(m):
            dx = scratch[1, k]
            dy = scratch[2, k]
            dz = scratch[3, k]
            dvx = scratch[4, k]
            dvy = scratch[5, k]
            dvz = scratch[6, k]
            sig = scratch[7, k]
            dx = dx - lx if dx > hx else dx
            dx = dx + lx if dx < -hx else dx
            dy = dy - ly if dy > hy else dy
            dy = dy + ly if dy < -hy else dy
            dz = dz - lz if dz > hz else dz
            dz = dz + lz if dz < -hz else dz
            b = dx * dvx + dy * dvy + dz * dvz
            c = dx * dx + dy * dy + dz * dz - sig * sig
            v2 = dvx * dvx + dvy * dvy + dvz * dvz
            disc = b * b - v2 * c
            tc = c / (math.sqrt(max(disc, 0.0)) - b)
            tc = _INF if ((b >= 0.0) | (disc < 0.0)) else tc
            tc = 0.0 if ((c <= 0.0) & (b < 0.0)) else tc
            scratch[0, k] = tc
        for k in range(m):
            tc = scratch[0, k]
            if tc < best:
                best = tc
                partner = nbr[i, k]
    else:
        m = nn[i]
        for k in range(m):
            j = nbr[i, k]
            dtj = t - st[j, _T]
            vjx = st[j, _VX]
            vjy = st[j, _VY]
            vjz = st[j, _VZ]
            dx = st[j, _X] + vjx * dtj - xi
            dy = st[j, _Y] + vjy * dtj - yi
            dz = st[j, _Z] + vjz * dtj - zi
            dx = dx - lx if dx > hx else dx
            dx = dx + lx if dx < -hx else dx
            dy = dy - ly if dy > hy else dy
            dy = dy + ly if dy < -hy else dy
            dz = dz - lz if dz > hz else dz
            dz = dz + lz if dz < -hz else dz
            dvx = vjx - vix
            dvy = vjy - viy
            dvz = vjz - viz
            sig0 = ai + st[j, _A]
            sig = sig0 * s
            sdot = sig0 * gamma
            # |dr + dv tau|^2 = (sig + sdot tau)^2  ->  A tau^2 + 2 B tau + C = 0
            aa = dvx * dvx + dvy * dvy + dvz * dvz - sdot * sdot
            bb = dx * dvx + dy * dvy + dz * dvz - sig * sdot
            cc = dx * dx + dy * dy + dz * dz - sig * sig
            disc = bb * bb - aa * cc
            t1 = cc / (math.sqrt(max(disc, 0.0)) - bb)
            t1 = _INF if disc < 0.0 else t1
            # touching/overlapping: now if approaching, else when the growth catches up (aa < 0)
            t2 = 0.0 if bb < 0.0 else -2.0 * bb / aa
            tc = t2 if cc <= 0.0 else t1
            tc = _INF if ((bb >= 0.0) & (aa >= 0.0)) else tc
            scratch[0, k] = tc
        for k in range(m):
            tc = scratch[0, k]
            if tc < best:
                best = tc
                partner = nbr[i, k]
    ev_time[i] = t + best
    ev_partner[i] = partner
    if partner >= 0:
        ev_pcount[i] = ccount[partner]


@njit(inline="always", **_JIT)
def _cell_index(x, y, z, nc, prm):
    cx = int(x / prm[0] * nc[0])
    cy = int(y / prm[1] * nc[1])
    cz = int(z / prm[2] * nc[2])
    cx = min(max(cx, 0), nc[0] - 1)
    cy = min(max(cy, 0), nc[1] - 1)
    cz = min(max(cz, 0), nc[2] - 1)
    return (cx * nc[1] + cy) * nc[2] + cz


@njit(inline="always", **_JIT)
def _fill_list(i, ctr, st, nbr, nn, ccnt, cmem, stencil, stencil_n, c, prm, half):
    """Insert into i's list (and i into theirs) every j with |c_i - c_j| < sigma_ij + 2 shell.
    half=True: only j < i (used for the initial build).  Returns False on overflow."""
    lx = prm[0]
    ly = prm[1]
    lz = prm[2]
    hx = prm[6]
    hy = prm[7]
    hz = prm[8]
    skin = 2.0 * prm[3]
    cap = nbr.shape[1]
    xi = ctr[i, 0]
    yi = ctr[i, 1]
    zi = ctr[i, 2]
    ai = st[i, _A]
    nothalf = not half
    start = nn[i]
    m = start
    last = cap - 1
    for s in range(stencil_n[c]):
        c2 = stencil[c, s]
        for q in range(ccnt[c2]):
            j = cmem[c2, q]
            dx = ctr[j, 0] - xi
            dy = ctr[j, 1] - yi
            dz = ctr[j, 2] - zi
            dx = dx - lx if dx > hx else dx
            dx = dx + lx if dx < -hx else dx
            dy = dy - ly if dy > hy else dy
            dy = dy + ly if dy < -hy else dy
            dz = dz - lz if dz > hz else dz
            dz = dz + lz if dz < -hz else dz
            rc = ai + st[j, _A] + skin
            take = (dx * dx + dy * dy + dz * dz < rc * rc) & (j != i) & ((j < i) | nothalf)
            nbr[i, min(m, last)] = j
            m += 1 if take else 0
    if m > cap:
        nn[i] = cap
        return False
    nn[i] = m
    ok = True
    for k in range(start, m):
        j = nbr[i, k]
        mj = nn[j]
        if mj >= cap:
            ok = False
        else:
            nbr[j, mj] = i
            nn[j] = mj + 1
    return ok


@njit(inline="always", **_JIT)
def _wrap_into(i, st, ctr, img, prm):
    for d in range(3):
        x = st[i, d]
        L = prm[d]
        if x < 0.0 or x >= L:
            k = math.floor(x / L)
            x -= k * L
            img[i, d] += int(k)
            if x >= L:
                x -= L
                img[i, d] += 1
            if x < 0.0:
                x = 0.0
        st[i, d] = x
        ctr[i, d] = x


@njit(inline="always", **_JIT)
def _rebuild(i, t, st, ctr, img, nbr, nn, ccnt, cmem, cslot, cell_of, nc, stencil, stencil_n, prm):
    """Advance i to t, wrap it into the box, make its position the new shell centre and
    rebuild its neighbour list.  Returns False if a list would overflow."""
    dt = t - st[i, _T]
    st[i, _X] += st[i, _VX] * dt
    st[i, _Y] += st[i, _VY] * dt
    st[i, _Z] += st[i, _VZ] * dt
    st[i, _T] = t
    _wrap_into(i, st, ctr, img, prm)
    # remove i from its old neighbours' lists
    for k in range(nn[i]):
        j = nbr[i, k]
        m = nn[j] - 1
        for q in range(m + 1):
            if nbr[j, q] == i:
                nbr[j, q] = nbr[j, m]
                nn[j] = m
                break
    nn[i] = 0
    cnew = _cell_index(ctr[i, 0], ctr[i, 1], ctr[i, 2], nc, prm)
    cold = cell_of[i]
    if cnew != cold:
        k = cslot[i]
        m = ccnt[cold] - 1
        last = cmem[cold, m]
        cmem[cold, k] = last
        cslot[last] = k
        ccnt[cold] = m
        m = ccnt[cnew]
        if m >= cmem.shape[1]:
            return False
        cmem[cnew, m] = i
        cslot[i] = m
        ccnt[cnew] = m + 1
        cell_of[i] = cnew
    return _fill_list(i, ctr, st, nbr, nn, ccnt, cmem, stencil, stencil_n, cnew, prm, False)


@njit(inline="always", **_JIT)
def _collide(i, j, t, st, ccount, prm, fst):
    dti = t - st[i, _T]
    dtj = t - st[j, _T]
    xi = st[i, _X] + st[i, _VX] * dti
    yi = st[i, _Y] + st[i, _VY] * dti
    zi = st[i, _Z] + st[i, _VZ] * dti
    xj = st[j, _X] + st[j, _VX] * dtj
    yj = st[j, _Y] + st[j, _VY] * dtj
    zj = st[j, _Z] + st[j, _VZ] * dtj
    st[i, _X] = xi
    st[i, _Y] = yi
    st[i, _Z] = zi
    st[j, _X] = xj
    st[j, _Y] = yj
    st[j, _Z] = zj
    st[i, _T] = t
    st[j, _T] = t
    dx = xj - xi
    dy = yj - yi
    dz = zj - zi
    if dx > prm[6]:
        dx -= prm[0]
    elif dx < -prm[6]:
        dx += prm[0]
    if dy > prm[7]:
        dy -= prm[1]
    elif dy < -prm[7]:
        dy += prm[1]
    if dz > prm[8]:
        dz -= prm[2]
    elif dz < -prm[8]:
        dz += prm[2]
    dvx = st[j, _VX] - st[i, _VX]
    dvy = st[j, _VY] - st[i, _VY]
    dvz = st[j, _VZ] - st[i, _VZ]
    b = dx * dvx + dy * dvy + dz * dvz
    r2 = dx * dx + dy * dy + dz * dz
    gamma = prm[5]
    if gamma == 0.0:
        f = b / r2  # v_i += (dv.n) n, v_j -= (dv.n) n
        fst[0] -= b
    else:
        rr = math.sqrt(r2)
        sdot = (st[i, _A] + st[j, _A]) * gamma
        # u_n' = 2 sdot - u_n in the frame of the growing surfaces; each sphere takes half
        f = -(sdot - b / rr) / rr
    st[i, _VX] += f * dx
    st[i, _VY] += f * dy
    st[i, _VZ] += f * dz
    st[j, _VX] -= f * dx
    st[j, _VY] -= f * dy
    st[j, _VZ] -= f * dz
    ccount[i] += 1
    ccount[j] += 1


@njit(nogil=True, **_JIT)   # long calls: the progress thread needs the GIL meanwhile
def _run_kernel(t_end, st, ctr, img, nbr, nn, ccnt, cmem, cslot, cell_of, nc, stencil, stencil_n,
                ev_time, ev_partner, ev_pcount, scratch, ccount, where, cnx, cpv, ring, sh, shpos, cst, prm,
                ist, fst):
    """Process events up to t_end.  Returns (status, t): status 0 = reached t_end,
    1 = neighbour-list overflow at time t (caller must synchronise and reinitialise),
    2 = event budget prm[11] exhausted at time t (state consistent)."""
    while True:
        i = _cal_next(ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)
        if i < 0:
            return 0, t_end
        t = ev_time[i]
        if t > t_end:
            return 0, t_end
        ist[1] += 1
        if ist[1] > prm[11]:
            return 2, t
        p = ev_partner[i]
        _cal_remove(i, ev_time, where, cnx, cpv, ring, sh, shpos, cst)
        if p < 0:
            ist[2] += 1
            if not _rebuild(i, t, st, ctr, img, nbr, nn, ccnt, cmem, cslot, cell_of, nc,
                            stencil, stencil_n, prm):
                return 1, t
            _predict(i, t, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm)
        elif ccount[p] != ev_pcount[i]:
            ist[3] += 1
            _predict(i, t, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm)
        else:
            ist[0] += 1
            _cal_remove(p, ev_time, where, cnx, cpv, ring, sh, shpos, cst)
            _collide(i, p, t, st, ccount, prm, fst)
            _predict(i, t, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm)
            _predict(p, t, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm)
            _cal_insert(p, ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)
        _cal_insert(i, ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)


@njit(**_JIT)
def _sync(t, st):
    for i in range(st.shape[0]):
        dt = t - st[i, _T]
        if dt != 0.0:
            st[i, _X] += st[i, _VX] * dt
            st[i, _Y] += st[i, _VY] * dt
            st[i, _Z] += st[i, _VZ] * dt
        st[i, _T] = t


@njit(**_JIT)
def _init_all(st, ctr, img, nbr, nn, ccnt, cmem, cslot, cell_of, nc, stencil, stencil_n,
              ev_time, ev_partner, ev_pcount, scratch, ccount, where, cnx, cpv, ring, sh, shpos, cst, prm):
    """Full (re)initialisation at kernel time 0 of synchronised particles (all t_i = 0):
    wrap, shell centres, cells, lists, events, calendar.  Returns False on list overflow."""
    n = st.shape[0]
    ccnt[:] = 0
    ok = True
    for i in range(n):
        st[i, _T] = 0.0
        _wrap_into(i, st, ctr, img, prm)
        c = _cell_index(ctr[i, 0], ctr[i, 1], ctr[i, 2], nc, prm)
        cell_of[i] = c
        m = ccnt[c]
        if m >= cmem.shape[1]:
            ok = False
        else:
            cmem[c, m] = i
            cslot[i] = m
            ccnt[c] = m + 1
        nn[i] = 0
    if not ok:
        return False
    for i in range(n):
        if not _fill_list(i, ctr, st, nbr, nn, ccnt, cmem, stencil, stencil_n, cell_of[i], prm, True):
            ok = False
    if not ok:
        return False
    for i in range(n):
        _predict(i, 0.0, st, ctr, nbr, nn, ccount, ev_time, ev_partner, ev_pcount, scratch, prm)
    _cal_build(ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)
    return True


@njit(**_JIT)
def _rebase(t0, st, ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm):
    """Shift the kernel clock by -t0 (particles synchronised at t0) and rebuild the calendar."""
    for i in range(st.shape[0]):
        st[i, _T] -= t0
        ev_time[i] -= t0
    _cal_build(ev_time, where, cnx, cpv, ring, sh, shpos, cst, prm)


@njit(**_JIT)
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
    check : if True refuse overlaps deeper than OVERLAP_TOLERANCE * max sigma (ValueError naming
        the pair (i, j, gap)),
        positions that are NaN/inf or outside [0, box) (ValueError naming the index i),
        non-positive diameters and non-finite velocities.
    T, seed : temperature and seed for the velocities drawn when ``velocities`` is None
    shell : neighbour-shell radius delta (sigma_A); lists hold pairs within sigma_ij + 2 delta.
        Default: (0.2 - 0.625 (eta - 0.5)) * max sigma, clipped to [0.12, 0.3] * max sigma.

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
            # tuned at N = 2000: 0.2 at eta = 0.50, 0.15 at eta = 0.58 (fewer rebuilds vs longer lists)
            eta = np.pi / 6.0 * np.sum(diam ** 3) / np.prod(box)
            shell = float(np.clip(0.2 - 0.625 * (eta - 0.5), 0.12, 0.3)) * float(diam.max())
            # small boxes: shrink the shell so that max sigma + 2 shell stays below half the box
            shell = min(shell, 0.45 * (0.5 * float(box.min()) - float(diam.max())))
        self.shell = float(shell)
        maxd = float(diam.max())
        if not self.shell > 0 or 2.0 * (maxd + 2.0 * self.shell) >= box.min():
            raise ValueError(f"box {box} too small: every edge must exceed 2*(max sigma + 2 shell) = "
                             f"{2.0 * (maxd + 2.0 * self.shell):.4g}")
        # state: one row per particle (x, y, z, t_i, vx, vy, vz, radius)
        img = np.floor(pos / box).astype(np.int64)
        self._st = np.zeros((n, 8))
        self._st[:, 0:3] = pos - img * box
        self._st[:, 4:7] = vel
        self._st[:, 7] = 0.5 * diam
        self._img = img
        self._ctr = np.zeros((n, 3))
        # prm: box, shell, s0, gamma, half box, 1/bucket width, bucket width
        self._prm = np.array([box[0], box[1], box[2], self.shell, 1.0, 0.0,
                              0.5 * box[0], 0.5 * box[1], 0.5 * box[2], 1.0, 1.0, np.inf])
        self._tk = 0.0            # kernel clock (particles synchronised at _tk between runs)
        self._time = 0.0          # absolute time reported to the user
        self._ist = np.zeros(4, np.int64)
        self._fst = np.zeros(1)
        self._virial0 = 0.0
        self._ptime = 0.0
        self._ccount = np.zeros(n, np.int64)
        self._ev_time = np.zeros(n)
        self._ev_partner = np.zeros(n, np.int64)
        self._ev_pcount = np.zeros(n, np.int64)
        # event calendar (Paul 2007): ring of nb buckets + overflow list + small heap
        nb = 1 << int(np.ceil(np.log2(max(2 * n, 16))))
        self._where = np.zeros(n, np.int64)
        self._cnx = np.zeros(n, np.int64)
        self._cpv = np.zeros(n, np.int64)
        self._ring = -np.ones(nb + 1, np.int64)
        self._sh = np.zeros(n, np.int64)
        self._shpos = np.zeros(n, np.int64)
        self._cst = np.array([0, 0, nb - 1, 0], np.int64)
        # cells (binned by shell centre; edge >= max sigma + 2 shell)
        cut = maxd + 2.0 * self.shell
        nc = np.maximum(1, np.floor(box / cut).astype(np.int64))
        nc[nc < 3] = 1
        self._nc = nc
        self._stencil, self._stencil_n = _stencil_table(nc)
        # cell member arrays; capacity from the densest packing of spheres centred in a cell
        side = float(np.max(box / nc))
        ccap = int(0.7405 * (side + maxd) ** 3 / (np.pi / 6.0 * float(diam.min()) ** 3)) + 4
        self._chead = np.zeros(int(nc.prod()), np.int64)              # members per cell
        self._cnext = np.zeros((int(nc.prod()), min(ccap, n)), np.int64)  # members
        self._cprev = np.zeros(n, np.int64)                           # slot of i in its cell
        self._cell_of = np.zeros(n, np.int64)
        rho = n / box.prod()
        expect = rho * 4.0 / 3.0 * np.pi * cut ** 3
        self._cap = int(1.5 * expect) + 16
        self._nbr = np.zeros((n, self._cap), np.int64)
        self._scratch = np.zeros((8, self._cap))
        self._nn = np.zeros(n, np.int64)
        if check:
            g, i, j = _min_gap(self._st[:, 0:3], diam, box, 1.0)
            # contacts of a stored EDMD configuration may read as overlaps of a few ulp
            if g < -OVERLAP_TOLERANCE * maxd:
                raise ValueError(f"particles {i} and {j} overlap: gap {g:.6g} (pair ({i}, {j}, {g:.6g}))")
        self._ready = False

    # ---------------------------------------------------------------- internals
    def _cal_args(self):
        return (self._ev_time, self._ev_partner, self._ev_pcount, self._scratch, self._ccount, self._where, self._cnx,
                self._cpv, self._ring, self._sh, self._shpos, self._cst, self._prm)

    def _init(self):
        """Synchronised state (all t_i == _tk) -> kernel clock 0, fresh lists, events, calendar."""
        self._prm[4] += self._prm[5] * self._tk
        self._tk = 0.0
        while not _init_all(self._st, self._ctr, self._img, self._nbr, self._nn, self._chead, self._cnext,
                            self._cprev, self._cell_of, self._nc, self._stencil, self._stencil_n,
                            *self._cal_args()):
            self._grow()
        self._ready = True

    def _grow(self):
        """Double the neighbour-list and cell capacities (after an overflow)."""
        self._cap *= 2
        self._nbr = np.zeros((self.n, self._cap), np.int64)
        self._scratch = np.zeros((8, self._cap))
        self._cnext = np.zeros((self._cnext.shape[0], min(2 * self._cnext.shape[1], self.n)), np.int64)

    def _scale(self):
        """Current diameter scale s(t) (1 except during growth)."""
        return float(self._prm[4] + self._prm[5] * self._tk)

    _REBASE = 64.0   # kernel-clock span (tau) after which times are shifted back to 0

    def _advance(self, duration):
        """Advance by duration >= 0 in chunks of <= _REBASE; particles end synchronised."""
        if not self._ready:
            self._init()
        nchunk = max(1, int(math.ceil(duration / self._REBASE)))
        step = duration / nchunk
        for _ in range(nchunk):
            if self._tk > self._REBASE:
                self._prm[4] += self._prm[5] * self._tk
                _rebase(self._tk, self._st, self._ev_time, self._where, self._cnx, self._cpv, self._ring,
                        self._sh, self._shpos, self._cst, self._prm)
                self._tk = 0.0
            t_end = self._tk + step
            while True:
                status, t = _run_kernel(t_end, self._st, self._ctr, self._img, self._nbr, self._nn,
                                        self._chead, self._cnext, self._cprev, self._cell_of, self._nc,
                                        self._stencil, self._stencil_n, *self._cal_args(), self._ist,
                                        self._fst)
                _sync(t, self._st)
                self._tk = t
                if status == 0:
                    break
                if status == 2:
                    raise RuntimeError(
                        f"event budget exhausted at t = {t:.6g} (kernel clock): the system is jamming "
                        f"(growth too fast or packing fraction above the jamming point)")
                # neighbour-list overflow: restart from the synchronised state with larger lists
                self._grow()
                self._init()          # relabels the kernel clock t -> 0
                t_end -= t
            self._time += step

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
        r = self._st[:, 0:3]
        p = r - np.floor(r / self.box) * self.box
        p[p >= self.box] = 0.0
        return p

    @property
    def unwrapped_positions(self):
        return self._st[:, 0:3] + self._img * self.box

    @property
    def velocities(self):
        return self._st[:, 4:7].copy()

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
        return 0.5 * float(np.sum(self._st[:, 4:7] ** 2))

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
        return float(_min_gap(self._st[:, 0:3], self.diameters, self.box, self._scale())[0])

    def set_velocities(self, velocities):
        vel = np.array(velocities, dtype=np.float64)
        if vel.shape != (self.n, 3) or not np.all(np.isfinite(vel)):
            raise ValueError(f"velocities must be finite with shape ({self.n}, 3)")
        self._st[:, 4:7] = vel
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

    Returns HardSphereSystem.  Raises ValueError on invalid parameters, RuntimeError if the
    growth jams (more than 20000 N events in one rescale interval: eta above the jamming point
    reachable at this growth rate).
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
        while True:
            s = sysm._scale()
            dt = (1.0 - s) / growth_rate
            last = dt <= rescale_interval * (1.0 + 1e-9)
            # a jamming packing makes collisions pile up (Zeno): bound the work per chunk
            sysm._prm[11] = sysm._ist[1] + 20000.0 * n
            sysm._advance(dt if last else rescale_interval)
            # growth heats the system: back to T, which invalidates all events
            sysm._st[:, 4:7] *= math.sqrt(1.5 * (n - 1) * T / sysm.kinetic_energy)
            sysm._ready = False
            if last:
                break
        sysm._prm[4] = 1.0
        sysm._prm[5] = 0.0
        sysm._prm[11] = np.inf
        sysm._tk = 0.0
    sysm.set_velocities(maxwell_boltzmann(n, T, rng))
    sysm.run(equilibration_time)
    sysm.reset_counters()
    return sysm


# --------------------------------------------------------------------------------------
# the engine interface of the pipeline stages (same calls as glasshpc.md.lammps.LammpsEngine)
# --------------------------------------------------------------------------------------
class EdmdEngine:
    """Hard-sphere engine for the pipeline: the calls the stages make on ``LammpsEngine``.

    Parameters
    ----------
    model : glasshpc.models.hard_spheres.HardSphereModel (binary, species 0 large, sigma_A = 1)
    timestep : float (tau); EDMD has no timestep, the stages' integer read-out ``steps`` are
        converted to times ``steps * timestep`` (so YAML read-out times mean the same for all models)
    growth_rate : Lubachevsky–Stillinger growth rate ds/dt of :func:`prepare_snapshot`
    shell : neighbour-shell radius (None: density-dependent default of HardSphereSystem)

    Units: sigma_A, m = 1, k_B = 1, tau = sqrt(m sigma_A^2 / k_B T) at T = 1 (SCIENCE.md units).
    ``log`` records the protocol for the provenance record, like LammpsEngine.log.
    """

    def __init__(self, model, timestep, growth_rate=0.02, shell=None):
        self.model = model
        self.timestep = float(timestep)
        self.growth_rate = float(growth_rate)
        self.shell = shell
        self.log = []
        self.last_energies = None

    def close(self):
        """Nothing to free (kept for the LammpsEngine interface)."""

    def _diameters(self, types, n):
        types = np.asarray(types)
        if types.shape != (n,):
            raise ValueError(f"types must have shape ({n},), got {types.shape}")
        if types.min() < 0 or types.max() >= len(self.model.species):
            raise ValueError(f"species indices must lie in [0, {len(self.model.species) - 1}]")
        return self.model.particle_diameters(types)

    def prepare_snapshot(self, n, density, temperature, rng, melt_temperature=None, melt_time=None,
                         nvt_time=None, nve_time=0.0, tdamp=None):
        """Equilibrated hard-sphere snapshot (SCIENCE.md §1 preparation): random insertion at
        low density, Lubachevsky–Stillinger growth to the packing fraction of ``density``
        (η = (π/6) Σ σ_i³ ρ/N), then NVE for ``nve_time`` (tau). ``melt_*``, ``nvt_time`` and
        ``tdamp`` are LAMMPS protocol arguments, ignored here. ``rng`` numpy Generator (task
        stream). Returns (positions (N, 3) float64 in [0, box), types (N,) int32, box (3,))."""
        eta = self.model.packing_fraction(n, density)
        s = prepare_snapshot(n, self.model.fractions[0], self.model.diameters[1] /
                             self.model.diameters[0], eta, rng, float(nve_time), self.growth_rate,
                             T=float(temperature), shell=self.shell)
        if len(self.log) < 50:
            self.log.append(f"# EDMD snapshot: N = {n}, eta = {eta:.6g}, LS growth rate "
                            f"{self.growth_rate:g}, NVE equilibration {float(nve_time):g} tau, "
                            f"{s.n_collisions} collisions after growth")
        return s.positions, self.model.types(n), s.box.copy()

    def run_replica(self, positions, types, box, temperature, rng, steps):
        """One isoconfigurational replica (SCIENCE.md §2): Maxwell–Boltzmann velocities at
        ``temperature`` (zero momentum, KE = 3/2 (N-1) k_B T exactly, ``maxwell_boltzmann``),
        NVE EDMD, unwrapped r_i(t) - r_i(0) at t = steps * timestep.

        positions (N, 3) in [0, box), types (N,) species, box (3,), rng numpy Generator,
        steps increasing ints > 0. Returns (len(steps), N, 3) float64 (sigma_A).
        Kinetic energy at each read-out is kept in :attr:`last_energies` (conservation checks).
        Raises ValueError (naming the particle or pair) for overlapping or out-of-box particles."""
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size == 0 or steps[0] <= 0 or np.any(np.diff(steps) <= 0):
            raise ValueError("replica read-out steps must be positive and strictly increasing")
        positions = np.asarray(positions, dtype=np.float64)
        diam = self._diameters(types, len(positions))
        v = maxwell_boltzmann(len(positions), temperature, rng)
        s = HardSphereSystem(positions, diam, box, v, check=True, shell=self.shell)
        out = np.empty((steps.size, len(positions), 3))
        self.last_energies = np.empty(steps.size)
        t_prev = 0.0
        for k, t in enumerate(steps * self.timestep):
            s.run(t - t_prev)
            t_prev = t
            out[k] = s.unwrapped_positions - positions
            self.last_energies[k] = s.kinetic_energy
        return out

    def static_properties(self, positions, types, box):
        """Per-particle effective energy and net effective force (k_B T = 1 units) of the
        hard-sphere effective potential V_eff = -k_B T log(r - sigma_ij), shifted force at
        1.35 sigma_ij ([CAGE], SCIENCE.md §3; glasshpc.states.inherent)."""
        from ..states.inherent import hs_effective_energy_forces
        diam = self._diameters(types, len(positions))
        _, eper, f = hs_effective_energy_forces(positions, diam, box)
        return eper, f

    def inherent_state(self, positions, types, box, force_tolerance, max_iterations):
        """Inherent state of the effective potential by FIRE (glasshpc.states.inherent.
        fire_minimize). Returns (positions (N, 3) same images, energies (N,), max_force);
        RuntimeError if not converged within ``max_iterations``."""
        from ..states.inherent import fire_minimize
        diam = self._diameters(types, len(positions))
        r = fire_minimize(positions, diam, box, ftol=force_tolerance, max_steps=int(max_iterations))
        if not r["converged"]:
            raise RuntimeError(f"FIRE stopped at max |F| = {r['max_force']:.3g} > tolerance "
                               f"{force_tolerance:.3g} after {int(max_iterations)} iterations")
        return r["positions"], r["per_particle_energy"], r["max_force"]
