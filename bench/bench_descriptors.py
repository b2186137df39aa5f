"""Benchmark of glasshpc.structure.descriptors on a Kob–Andersen-like configuration (one core).

    /work/venv/bin/python bench/bench_descriptors.py [--n 4096] [--ref-n 2048] [--repeat 5] [--sweeps 200]

1. Builds an 80:20 KA liquid at ρ = 1.2 by Metropolis MC (numba, T = 1.0 from a random start; not an
   equilibrated glass, but dense and liquid-like, which is what sets the neighbour counts and hence the cost).
2. Times compute_descriptors with the ka_avg preset (200 radial + 192 angular per generation, n = 0, 1, 2:
   1176 features, neighbour cutoff 5.7) after JIT warm-up: best and median wall and CPU time per configuration,
   and the split neighbour list / radial / angular / generations.
3. Times a vectorised numpy/scipy implementation of the same descriptors (scipy cKDTree pairs, np.exp over all
   (pair, shell), scipy.special.sph_harm_y, BLAS, scipy.sparse for the generations) on the first --ref-n
   particles' worth of system (a separate KA-like box of ref-n particles at the same density, since the cost is
   linear in N), checks that both agree, and prints the speed-up scaled to N per particle.
4. Prints the second minimum of g_AA measured on the MC configuration (default r_c of the generations).

Single-threaded BLAS is forced so that "one core" holds for both implementations.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402
from scipy import sparse  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402
from scipy.special import sph_harm_y  # noqa: E402

from glasshpc.structure.descriptors import (  # noqa: E402
    angular_descriptors, compute_descriptors, preset, radial_descriptors, radial_distribution,
    second_minimum_gAA)
from glasshpc.structure.descriptors import _generations, _radial_direct, _run_table, _shell_runs  # noqa: E402,E501
from glasshpc.structure.neighbors import NeighborList  # noqa: E402

EPS = np.array([[1.0, 1.5], [1.5, 0.5]])
SIG = np.array([[1.0, 0.8], [0.8, 0.88]])


@njit(cache=True)
def _pair_energy(i, xi, pos, types, box, offsets, nbr):
    e = 0.0
    ti = types[i]
    for k in range(offsets[i], offsets[i + 1]):
        j = nbr[k]
        tj = types[j]
        d2 = 0.0
        for a in range(3):
            dx = pos[j, a] - xi[a]
            dx -= box[a] * np.rint(dx / box[a])
            d2 += dx * dx
        s = SIG[ti, tj]
        if d2 < (2.5 * s) ** 2:
            sr6 = (s * s / d2) ** 3
            rc6 = (1.0 / 2.5) ** 6
            e += 4.0 * EPS[ti, tj] * ((sr6 * sr6 - sr6) - (rc6 * rc6 - rc6))
    return e


@njit(cache=True)
def _mc_sweep(pos, types, box, offsets, nbr, T, step, seed):
    np.random.seed(seed)
    n = pos.shape[0]
    acc = 0
    xi = np.empty(3)
    for _ in range(n):
        i = np.random.randint(n)
        e0 = _pair_energy(i, pos[i], pos, types, box, offsets, nbr)
        for a in range(3):
            xi[a] = pos[i, a] + step * (2.0 * np.random.random() - 1.0)
        e1 = _pair_energy(i, xi, pos, types, box, offsets, nbr)
        if e1 <= e0 or np.random.random() < np.exp(-(e1 - e0) / T):
            pos[i] = xi
            acc += 1
    return acc / n


def ka_liquid(n, rho=1.2, T=1.0, sweeps=300, seed=0):
    """80:20 KA configuration at density rho after `sweeps` MC sweeps at T (random start). Returns pos, types, box."""
    rng = np.random.default_rng(seed)
    L = (n / rho) ** (1 / 3)
    box = np.full(3, L)
    pos = rng.random((n, 3)) * L
    types = np.zeros(n, np.int64)
    types[rng.permutation(n)[: n // 5]] = 1
    step = 0.08
    for s in range(sweeps):
        nl = NeighborList(pos, box, 2.5 + 0.7)  # skin 0.7 > twice the largest displacement in one sweep
        _mc_sweep(pos, types, box, nl.offsets, nl.neighbors, T, step, seed * 100003 + s)
        pos -= box * np.floor(pos / box)
    return pos, types, box


# ---------------------------------------------------------------------------------------------------------------------
# vectorised numpy / scipy reference implementation
# ---------------------------------------------------------------------------------------------------------------------

def numpy_descriptors(pos, types, box, spec, chunk=200_000):
    """Same definitions as compute_descriptors, with numpy/scipy vector operations only."""
    n = len(pos)
    wrapped = pos - box * np.floor(pos / box)
    tree = cKDTree(wrapped, boxsize=box)
    pairs = tree.query_pairs(spec.cutoff(), output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(i, kind="stable")
    i, j = i[order], j[order]
    vec = wrapped[j] - wrapped[i]
    vec -= box * np.rint(vec / box)
    d = np.sqrt(np.sum(vec * vec, axis=1))
    tr = spec.truncation

    # radial: (pair, shell) Gaussians, summed per (i, species of j) with a sparse incidence matrix
    n_rad = spec.radial_r.size
    radial = np.zeros((n, spec.n_species * n_rad))
    for a in range(0, len(d), chunk):
        sl = slice(a, a + chunk)
        u = d[sl, None] - spec.radial_r[None, :]
        w = np.exp(-u * u / (2 * spec.radial_delta ** 2))
        w[np.abs(u) > tr * spec.radial_delta] = 0.0
        for s in range(spec.n_species):
            m = types[j[sl]] == s
            inc = sparse.csr_matrix((np.ones(m.sum()), (i[sl][m], np.arange(m.sum()))), shape=(n, m.sum()))
            radial[:, s * n_rad:(s + 1) * n_rad] += inc @ w[m]

    # angular: Y_lm for m >= 0 (|Y_l,-m| = |Y_lm|), Q = Σ_j w_j Y_lm via a sparse incidence matrix
    ls = spec.angular_l
    n_ang = spec.angular_r.size
    sel = d <= spec.angular_cutoff()
    ia, da, va = i[sel], d[sel], vec[sel]
    theta = np.arccos(np.clip(va[:, 2] / da, -1, 1))
    phi = np.arctan2(va[:, 1], va[:, 0])
    lm = [(l, m) for l in ls for m in range(l + 1)]
    Q = {}
    Z = np.zeros((n, n_ang))
    for a in range(0, len(da), chunk // 4):
        sl = slice(a, a + chunk // 4)
        u = da[sl, None] - spec.angular_r[None, :]
        w = np.exp(-u * u / (2 * spec.angular_delta ** 2))
        w[np.abs(u) > tr * spec.angular_delta] = 0.0
        inc = sparse.csr_matrix((np.ones(len(w)), (ia[sl], np.arange(len(w)))), shape=(n, len(w)))
        Z += inc @ w
        ll = np.array([p[0] for p in lm])[:, None]
        mm = np.array([p[1] for p in lm])[:, None]
        Y = sph_harm_y(ll, mm, theta[sl][None, :], phi[sl][None, :])  # (n_lm, pairs)
        for s in range(n_ang):
            contrib = inc @ (w[:, s:s + 1] * Y.T)  # (n, n_lm) complex
            Q[s] = Q.get(s, 0) + contrib
    angular = np.zeros((n, n_ang * len(ls)))
    mult = np.array([1.0 if m == 0 else 2.0 for (_, m) in lm])
    lidx = np.array([ls.index(l) for (l, _) in lm])
    for s in range(n_ang):
        p2 = np.abs(Q[s]) ** 2 * mult
        acc = np.zeros((n, len(ls)))
        np.add.at(acc.T, lidx, p2.T)
        zz = Z[:, s:s + 1]
        lfac = 4 * np.pi / (2 * np.array(ls) + 1)
        angular[:, s * len(ls):(s + 1) * len(ls)] = np.where(
            zz > 0, np.sqrt(lfac * acc) / np.where(zz > 0, zz, 1), 0.0)

    # generations: x^(n) = D^-1 (I + A) x^(n-1)
    x = np.hstack([radial, angular])
    gsel = d < spec.r_generation
    A = sparse.csr_matrix((np.exp(-d[gsel] / spec.r_generation), (i[gsel], j[gsel])), shape=(n, n))
    A = A + sparse.identity(n, format="csr")
    norm = 1.0 / np.asarray(A.sum(axis=1)).ravel()
    out = [x]
    for _ in range(spec.generations):
        out.append(norm[:, None] * (A @ out[-1]))
    return np.hstack(out)


def _timed(f, repeat):
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return np.array(walls), np.array(cpus)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--ref-n", type=int, default=2048, help="system size of the numpy reference run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sweeps", type=int, default=200)
    args = ap.parse_args()

    spec = preset("ka_avg", n_species=2, generations=2, r_generation=2.1)
    print(f"spec: ka_avg preset, {spec.n_radial} radial + {spec.n_angular} angular per generation, "
          f"generations 0..{spec.generations}: {spec.n_features} features, neighbour cutoff {spec.cutoff():.2f}")
    t = time.perf_counter()
    pos, types, box = ka_liquid(args.n, sweeps=args.sweeps)
    print(f"KA liquid N = {args.n}, rho = 1.2, box {box[0]:.3f}: {args.sweeps} MC sweeps at T = 1.0 "
          f"in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    compute_descriptors(pos, types, box, spec)
    print(f"first call (JIT compile or cache load): {time.perf_counter() - t:.2f} s")
    walls, cpus = _timed(lambda: compute_descriptors(pos, types, box, spec), args.repeat)
    print(f"compute_descriptors N = {args.n}: wall best {walls.min():.3f} s, median {np.median(walls):.3f} s; "
          f"CPU best {cpus.min():.3f} s  (per configuration, one core)")

    nl_long = NeighborList(pos, box, spec.cutoff())
    short = max(spec.angular_cutoff(), spec.r_generation)
    nl = NeighborList(pos, box, short)
    print(f"  neighbours per particle: {nl_long.distances.size / args.n:.0f} within {spec.cutoff():.1f} (radial), "
          f"{nl.distances.size / args.n:.0f} within {short:.1f} (angular, generations)")
    run_start, run_dr = _shell_runs(spec.radial_r, spec.radial_delta)
    inv_h, tstart, idx = _run_table(spec.radial_r, spec.radial_delta, spec.truncation, spec.radial_cutoff(), run_start)
    base = np.hstack([radial_descriptors(nl_long, types, spec), angular_descriptors(nl, spec)])
    parts = {  # the path compute_descriptors takes
        "radial (fused cell list, r < 5.7)": lambda: _radial_direct(
            pos, box, spec.radial_cutoff(), types, spec.n_species, spec.radial_r, spec.radial_delta, spec.truncation,
            run_start, run_dr, inv_h, tstart, idx, len(pos)),
        f"NeighborList(r < {short:.1f})": lambda: NeighborList(pos, box, short),
        "angular": lambda: angular_descriptors(nl, spec),
        "generations": lambda: _generations(nl.offsets, nl.neighbors, nl.distances, base, spec.r_generation,
                                            spec.generations),
        # public NeighborList-based entry point, for reference
        "(NeighborList(r < 5.7))": lambda: NeighborList(pos, box, spec.cutoff()),
        "(radial_descriptors(nlist))": lambda: radial_descriptors(nl_long, types, spec),
    }
    for name, f in parts.items():
        w, c = _timed(f, args.repeat)
        print(f"  {name:36s} wall best {w.min():.3f} s   CPU best {c.min():.3f} s")
    del nl_long

    # numpy reference on a KA-like system of ref_n particles at the same density (cost is linear in N)
    rn = args.ref_n
    rpos, rtypes, rbox = (pos, types, box) if rn == args.n else ka_liquid(rn, sweeps=min(args.sweeps, 100), seed=1)
    t = time.perf_counter()
    ref = numpy_descriptors(rpos, rtypes, rbox, spec)
    t_np = time.perf_counter() - t
    ours = compute_descriptors(rpos, rtypes, rbox, spec)
    w_small, _ = _timed(lambda: compute_descriptors(rpos, rtypes, rbox, spec), args.repeat)
    err = np.max(np.abs(ours - ref))
    print(f"numpy/scipy reference N = {rn}: {t_np:.2f} s (numba {w_small.min():.3f} s on the same system, "
          f"speed-up {t_np / w_small.min():.0f}x); max |numba - numpy| = {err:.1e}")
    if rn != args.n:
        print(f"  numpy reference scaled to N = {args.n} (linear in N): {t_np * args.n / rn:.2f} s per configuration, "
              f"{t_np * args.n / rn / walls.min():.0f}x the numba time")

    # the other paper presets on the same configuration (generations as in the papers)
    for name in ("hs_cmp", "melt_dw", "softness_135"):
        sp = preset(name, n_species=2)
        if sp.cutoff() >= 0.5 * box.min():
            print(f"  preset {name}: cutoff {sp.cutoff():.2f} needs a larger box")
            continue
        compute_descriptors(pos, types, box, sp)
        w, c = _timed(lambda: compute_descriptors(pos, types, box, sp), args.repeat)
        print(f"  preset {name:13s} ({sp.n_features:4d} features, n <= {sp.generations}): wall best {w.min():.3f} s"
              f"   CPU best {c.min():.3f} s")

    # partycls' BoattiniDescriptor, if it can be imported (not a dependency; pip has only an sdist that needs
    # a Fortran compiler for its f2py neighbour kernels)
    try:
        from partycls.descriptors import BoattiniDescriptor  # noqa: F401
        print("partycls importable: compare BoattiniDescriptor by hand (not automated here)")
    except Exception as err:  # noqa: BLE001
        print(f"partycls BoattiniDescriptor: not available ({type(err).__name__}: {err})")

    r2 = second_minimum_gAA([pos], [types], [box])
    r, g = radial_distribution([pos], [types], [box], r_max=3.0)
    gs = gaussian_filter1d(g[(0, 0)], 3.0)
    k1 = int(np.argmax(gs))
    m1 = k1 + int(np.argmin(gs[k1:k1 + 60]))
    print(f"g_AA on the MC configuration: first peak {r[k1]:.2f}, first minimum {r[m1]:.2f}, "
          f"second minimum {r2:.3f} (second_minimum_gAA; spec.r_generation = {spec.r_generation})")


if __name__ == "__main__":
    main()
