"""Inherent state (IS) of hard spheres: effective potential + FIRE ([CAGE] §II, SCIENCE.md §3).

Hard spheres have no potential energy landscape; following [CAGE] the inherent state is the
minimum of the effective (free-energy) pair potential

    V_eff(r) = -k_B T log(r - sigma_ij),      sigma_ij = (d_i + d_j) / 2,

used in the *shifted-force* form: energy AND force go continuously to zero at
r_c = 1.35 sigma_ij,

    V_sf(r) = V_eff(r) - V_eff(r_c) - (r - r_c) V_eff'(r_c)
            = -k_B T [ log((r - sigma_ij)/(r_c - sigma_ij)) - (r - r_c)/(r_c - sigma_ij) ]

for sigma_ij < r < r_c, zero for r >= r_c and +inf for overlapping pairs (r <= sigma_ij).
V_sf is purely repulsive (V_sf' < 0 for r < r_c), so the minimum pushes neighbours apart.

FIRE (Bitzek, Koskinen, Gähler, Moseler, Gumbsch, PRL 97, 170201 (2006)) with the standard
parameters N_min = 5, f_inc = 1.1, f_dec = 0.5, alpha_start = 0.1, f_alpha = 0.99,
dt_max = 10 dt_0, unit masses, semi-implicit Euler MD steps (as in ASE / LAMMPS 'fire'), and
two safeguards that do not change the minimum: (i) no particle moves more than ``dmax`` per
step (cf. LAMMPS ``min_modify dmax``); (ii) a step that would create an overlap (infinite
energy) is undone and treated like an uphill step (v = 0, dt *= f_dec, alpha = alpha_start).
Converged when max_i |F_i| < ftol.  The Kob-Andersen / harmonic inherent states are produced
with LAMMPS elsewhere.

Reduced units: lengths in d_A, energies in k_B T (the minimum does not depend on T; energies
and forces scale linearly with it).
"""
import numpy as np
from numba import njit

from ..structure.neighbors import _neighbor_list

RC_FACTOR = 1.35

# Bitzek et al. (2006) standard parameters
FIRE_NMIN = 5
FIRE_FINC = 1.1
FIRE_FDEC = 0.5
FIRE_ALPHA0 = 0.1
FIRE_FALPHA = 0.99


@njit(cache=True)
def _pairs(pos, box, cut, allpairs):
    """Pairs i < j within ``cut`` (all pairs if ``allpairs``)."""
    n = pos.shape[0]
    if allpairs:
        m = n * (n - 1) // 2
        pi = np.empty(m, np.int64)
        pj = np.empty(m, np.int64)
        k = 0
        for i in range(n):
            for j in range(i + 1, n):
                pi[k] = i
                pj[k] = j
                k += 1
        return pi, pj
    off, nb, _, _ = _neighbor_list(pos, box, cut)
    m = 0
    for i in range(n):
        for k in range(off[i], off[i + 1]):
            if nb[k] > i:
                m += 1
    pi = np.empty(m, np.int64)
    pj = np.empty(m, np.int64)
    m = 0
    for i in range(n):
        for k in range(off[i], off[i + 1]):
            if nb[k] > i:
                pi[m] = i
                pj[m] = nb[k]
                m += 1
    return pi, pj


@njit(cache=True)
def _hs_eff(pos, diam, box, pi, pj, T, eper, forces):
    """Total shifted-force effective energy; fills per-particle energies and forces.

    Returns +inf (and leaves the overlapping pairs out of the forces) if any pair overlaps."""
    n = pos.shape[0]
    eper[:] = 0.0
    forces[:, :] = 0.0
    etot = 0.0
    overlap = False
    for k in range(pi.shape[0]):
        i = pi[k]
        j = pj[k]
        dx = pos[i, 0] - pos[j, 0]
        dy = pos[i, 1] - pos[j, 1]
        dz = pos[i, 2] - pos[j, 2]
        dx -= box[0] * np.rint(dx / box[0])
        dy -= box[1] * np.rint(dy / box[1])
        dz -= box[2] * np.rint(dz / box[2])
        r2 = dx * dx + dy * dy + dz * dz
        s = 0.5 * (diam[i] + diam[j])
        rc = RC_FACTOR * s
        if r2 >= rc * rc:
            continue
        r = np.sqrt(r2)
        if r <= s:
            overlap = True
            eper[i] = np.inf
            eper[j] = np.inf
            continue
        g = rc - s
        e = -T * (np.log((r - s) / g) - (r - rc) / g)
        # -dV/dr = T (1/(r - s) - 1/g) > 0 : repulsive
        fr = T * (1.0 / (r - s) - 1.0 / g) / r
        etot += e
        eper[i] += 0.5 * e
        eper[j] += 0.5 * e
        forces[i, 0] += fr * dx
        forces[i, 1] += fr * dy
        forces[i, 2] += fr * dz
        forces[j, 0] -= fr * dx
        forces[j, 1] -= fr * dy
        forces[j, 2] -= fr * dz
    if overlap:
        return np.inf
    return etot


def _check(positions, diameters, box):
    positions = np.array(positions, dtype=np.float64, order="C")
    diameters = np.ascontiguousarray(diameters, dtype=np.float64)
    box = np.ascontiguousarray(box, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if diameters.shape != (positions.shape[0],):
        raise ValueError("diameters must have shape (N,)")
    if np.any(diameters <= 0):
        raise ValueError("diameters must be positive")
    rc = RC_FACTOR * float(diameters.max())
    if rc >= 0.5 * box.min():
        raise ValueError(f"cutoff 1.35 sigma_max = {rc:.4g} must be below half the box")
    return positions, diameters, box, rc


def hs_effective_energy_forces(positions, diameters, box, T=1.0):
    """Shifted-force effective hard-sphere potential.

    Returns (E_total, per_particle_E (N,), forces (N, 3)); per-particle energies split every pair
    half-half.  E_total = +inf if any pair overlaps (r <= sigma_ij).
    """
    positions, diameters, box, rc = _check(positions, diameters, box)
    allpairs = rc >= 0.5 * box.min() * 0.999
    pi, pj = _pairs(positions, box, rc, allpairs)
    eper = np.zeros(positions.shape[0])
    forces = np.zeros_like(positions)
    e = _hs_eff(positions, diameters, box, pi, pj, float(T), eper, forces)
    return float(e), eper, forces


@njit(cache=True)
def _fire(pos, diam, box, T, ftol, max_steps, dt0, dmax, cut, skin, allpairs):
    n = pos.shape[0]
    pi, pj = _pairs(pos, box, cut, allpairs)
    ref = pos.copy()
    eper = np.zeros(n)
    f = np.zeros((n, 3))
    e = _hs_eff(pos, diam, box, pi, pj, T, eper, f)
    v = np.zeros((n, 3))
    dt = dt0
    dtmax = 10.0 * dt0
    alpha = FIRE_ALPHA0
    npos = 0
    new = np.empty((n, 3))
    fnew = np.zeros((n, 3))
    enew_per = np.zeros(n)
    fmax = 0.0
    step = 0
    for step in range(max_steps + 1):
        fmax2 = 0.0
        for i in range(n):
            q = f[i, 0] ** 2 + f[i, 1] ** 2 + f[i, 2] ** 2
            if q > fmax2:
                fmax2 = q
        fmax = np.sqrt(fmax2)
        if fmax < ftol or step == max_steps:
            break
        p = 0.0
        vn = 0.0
        fn = 0.0
        for i in range(n):
            for d in range(3):
                p += f[i, d] * v[i, d]
                vn += v[i, d] * v[i, d]
                fn += f[i, d] * f[i, d]
        if p > 0.0:
            sc = alpha * np.sqrt(vn / fn) if fn > 0.0 else 0.0
            for i in range(n):
                for d in range(3):
                    v[i, d] = (1.0 - alpha) * v[i, d] + sc * f[i, d]
            if npos > FIRE_NMIN:
                dt = min(dt * FIRE_FINC, dtmax)
                alpha *= FIRE_FALPHA
            npos += 1
        else:
            v[:, :] = 0.0
            dt *= FIRE_FDEC
            alpha = FIRE_ALPHA0
            npos = 0
        # semi-implicit Euler with a per-particle displacement cap
        maxdisp2 = 0.0
        for i in range(n):
            dr2 = 0.0
            for d in range(3):
                v[i, d] += dt * f[i, d]
                dr2 += (dt * v[i, d]) ** 2
            sc = 1.0
            if dr2 > dmax * dmax:
                sc = dmax / np.sqrt(dr2)
            for d in range(3):
                new[i, d] = pos[i, d] + sc * dt * v[i, d]
            q = 0.0
            for d in range(3):
                q += (new[i, d] - ref[i, d]) ** 2
            if q > maxdisp2:
                maxdisp2 = q
        if maxdisp2 > 0.25 * skin * skin:
            pi, pj = _pairs(pos, box, cut, allpairs)
            ref[:, :] = pos
        enew = _hs_eff(new, diam, box, pi, pj, T, enew_per, fnew)
        if enew == np.inf:  # overlap: undo, treat as uphill
            v[:, :] = 0.0
            dt *= FIRE_FDEC
            alpha = FIRE_ALPHA0
            npos = 0
            continue
        pos[:, :] = new
        f[:, :] = fnew
        eper[:] = enew_per
        e = enew
    return pos, e, eper, fmax, step


def fire_minimize(positions, diameters, box, T=1.0, ftol=1e-8, max_steps=100000, dt0=None,
                  dmax=0.02, skin=0.3):
    """FIRE minimisation of the shifted-force effective hard-sphere potential.

    Parameters: positions (N, 3) overlap-free (any image; the output stays in the same images),
    diameters (N,), box (3,), T = k_B T (energy scale), ftol: stop when max_i |F_i| < ftol,
    max_steps, dt0 (default 0.005 d_min sqrt(1/T)), dmax: max displacement per particle per step
    (in d_A), skin: Verlet skin of the internal pair list (rebuilt when any particle moved more
    than skin/2 since the last build; exact).

    Returns dict(positions (N, 3), energy, per_particle_energy (N,), max_force, steps,
    converged, displacement (N,) = |r^IS - r^init|).
    """
    positions, diameters, box, rc = _check(positions, diameters, box)
    if not T > 0:
        raise ValueError("T must be positive")
    if not 0 < dmax < 0.5 * skin:
        raise ValueError("need 0 < dmax < skin/2")
    cut = rc + skin
    allpairs = cut >= 0.5 * box.min()
    if dt0 is None:
        dt0 = 0.005 * float(diameters.min()) / np.sqrt(T)
    e0, _, _ = hs_effective_energy_forces(positions, diameters, box, T)
    if not np.isfinite(e0):
        raise ValueError("initial configuration has overlapping spheres")
    pos, e, eper, fmax, steps = _fire(positions.copy(), diameters, box, float(T), float(ftol),
                                      int(max_steps), float(dt0), float(dmax), float(cut),
                                      float(skin), bool(allpairs))
    return dict(positions=pos, energy=float(e), per_particle_energy=eper, max_force=float(fmax),
                steps=int(steps), converged=bool(fmax < ftol), initial_energy=float(e0),
                displacement=np.linalg.norm(pos - positions, axis=1))


def inherent_state(positions, types, box, model="kob_andersen", force_tolerance=1e-8, max_iterations=100000):
    """Inherent state of one configuration of a registered model (library entry; the pipeline's inherent
    stage does the same through its engine).

    positions (N, 3) float64 (σ, any image); types (N,) int species indices (0 = A); box (3,) orthorhombic edges
    (σ); model : ``glasshpc.models`` name — kob_andersen, harmonic_spheres, bead_spring (LAMMPS ``min_style
    fire``, no bonds for bead_spring here) or hard_spheres (FIRE on the effective potential, :func:`fire_minimize`);
    force_tolerance : max |F_i| (ε/σ; hard spheres k_B T/σ) at convergence.

    Returns dict: ``positions`` (N, 3) r^IS in the images of ``positions``, ``displacement`` (N,) |r^IS − r|,
    ``energy`` (N,) per-particle potential energy, ``max_force`` float. Raises RuntimeError when FIRE does not
    converge within ``max_iterations``, KeyError for an unknown model, ValueError for bad shapes, overlaps or
    bead_spring (bonds: use the pipeline).
    """
    from ..models import get_model
    m = get_model(model)
    if model not in ("kob_andersen", "harmonic_spheres", "hard_spheres"):
        raise ValueError(f"inherent_state supports kob_andersen, harmonic_spheres, hard_spheres, not {model!r}")
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    if model == "hard_spheres":
        res = fire_minimize(positions, np.asarray(m.diameters)[types], box, 1.0, force_tolerance, max_iterations)
        if not res["converged"]:
            raise RuntimeError(f"FIRE stopped at max |F| = {res['max_force']:.3g} > {force_tolerance:.3g} after "
                               f"{res['steps']} steps")
        return {"positions": res["positions"], "displacement": res["displacement"],
                "energy": res["per_particle_energy"], "max_force": res["max_force"]}
    from ..md.lammps import LammpsEngine
    eng = LammpsEngine(m, 0.005)
    try:
        r_is, energy, fmax = eng.inherent_state(positions, types.astype(np.int32), box, force_tolerance,
                                                max_iterations)
    finally:
        eng.close()
    return {"positions": r_is, "displacement": np.linalg.norm(r_is - positions, axis=1), "energy": energy,
            "max_force": fmax}
