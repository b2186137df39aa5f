"""Benchmark of the cage-state Monte Carlo kernel (glasshpc.states.cage) on one core.

Goals (issue 15): >= 4e6 trial moves/s per core for Kob-Andersen N = 2000 (rho = 1.2) and
>= 2e7 for binary hard spheres (sigma_B/sigma_A = 0.85, x_A = 0.3, eta = 0.58, N = 2000).
Every case also runs the kernel as it was before issue 15 (bench/cage_reference.py, a frozen
copy), alternating with the current one in the same process, and prints the ratio new / old of
the best rates: on a shared machine the ratio is the figure to quote.

Cases (all N = 2000, equilibrated liquid snapshots, prepared here unless --snapshots is given):
  KA T = 0.55 (and 0.44), Voronoi cage (the paper's, [CAGE] Eq. 10) and sphere cage
      (radius 0.5 sigma_ii), truncated-and-shifted LJ as in the pipeline (stages.cage_potential);
  HS eta = 0.58, Voronoi and sphere cage.
Each repetition is one complete ``cage_state`` call (SANN + list set-up included) of
``--moves`` trial moves (half equilibration, half measurement sweeps), target acceptance 0.3,
``--moves-per-visit`` trial moves per particle visit (default the kernel's, 4; the old kernel
has one);
a short warm-up call compiles the numba kernels first.  The rate is trial moves per second of
wall time and per CPU second of this process (best of ``--repeats``): the machine is shared, so
the CPU figure is the fairer one; the load average is printed next to the figures.

usage: python bench/bench_cage.py [--moves 4e6] [--repeats 3] [--snapshots DIR] [--quick]
                                  [--no-reference] [--moves-per-visit K]
"""
import argparse
import os
import sys
import time

import numpy as np

from glasshpc.states import cage as current
from glasshpc.states.cage import PairPotential

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cage_reference as reference  # noqa: E402  (the kernel before issue 15)

GOAL_KA = 4e6
GOAL_HS = 2e7


def ka_snapshot(T, path):
    f = os.path.join(path, f"ka2000_T{T}.npz") if path else None
    if f and os.path.exists(f):
        d = np.load(f)
        return d["pos"], d["types"].astype(np.int64), d["box"]
    from mpi4py import MPI  # noqa: F401  (liblammps finds libmpi only after mpi4py)
    from glasshpc.md.lammps import LammpsEngine
    from glasshpc.models import get_model
    eng = LammpsEngine(get_model("kob_andersen"), 0.005)
    pos, types, box = eng.prepare_snapshot(2000, 1.2, T, np.random.default_rng(1), 2.0, 5, 50, 10, 0.5)
    eng.close()
    if f:
        np.savez(f, pos=pos, types=types, box=box)
    return pos, np.asarray(types, np.int64), box


def hs_snapshot(path):
    f = os.path.join(path, "hs2000.npz") if path else None
    if f and os.path.exists(f):
        d = np.load(f)
        return d["pos"], d["types"].astype(np.int64), d["box"]
    from glasshpc.md.edmd import prepare_snapshot
    s = prepare_snapshot(2000, 0.3, 0.85, 0.58, seed=1, equilibration_time=20.0)
    types = (s.diameters < 0.99).astype(np.int64)  # species 0 = large (sigma 1), 1 = small
    if f:
        np.savez(f, pos=s.positions, types=types, box=s.box)
    return s.positions, types, s.box


def ka_potential():
    from glasshpc.models import get_model
    m = get_model("kob_andersen")
    return PairPotential("lj", m.epsilon, m.sigma, m.cutoff, shift=m.shifted), m.sigma_self()


def _as(module, pot):
    """The same potential as a PairPotential of ``module`` (current or reference)."""
    return module.PairPotential(pot.kind, pot.epsilon, pot.sigma, pot.cutoff, pot.shift)


def run_case(name, pos, types, box, pot, T, sigma, cage, moves, repeats, goal, skin=None,
             compare=True, visit=current.MOVES_PER_VISIT):
    n = len(pos)
    kw = dict(cage=cage, cage_radius=0.5 * sigma, cage_sigma=sigma, target_acceptance=0.3,
              skin=skin)
    kernels = (("new", current),) + ((("old", reference),) if compare else ())
    extra_kw = {"new": dict(moves_per_visit=visit), "old": {}}
    for lab, mod in kernels:
        mod.cage_state(pos, types, box, _as(mod, pot), T, 8, 8, seed=99, **kw,
                       **extra_kw[lab])  # compile / warm
    sweeps = max(2 * visit, visit * int(round(moves / n / visit)))   # whole passes
    n_eq = sweeps // (2 * visit) * visit
    n_meas = sweeps - n_eq
    best = {lab: [0.0, 0.0] for lab, _ in kernels}
    res = {}
    for rep in range(repeats):  # alternate the kernels: both see the same machine load
        for lab, mod in kernels:
            w0, p0 = time.perf_counter(), time.process_time()
            res[lab] = mod.cage_state(pos, types, box, _as(mod, pot), T, n_eq, n_meas,
                                      seed=rep + 1, **kw, **extra_kw[lab])
            dw, dp = time.perf_counter() - w0, time.process_time() - p0
            best[lab][0] = max(best[lab][0], sweeps * n / dw)
            best[lab][1] = max(best[lab][1], sweeps * n / dp)
    r = res["new"]
    bw, bc = best["new"]
    extra = f"  re-centred/sweep {r['n_recentred'] / sweeps:.1f}  rebuilds {r['n_rebuilds']}"
    print(f"{name:34s} {bw / 1e6:7.2f} M/s wall  {bc / 1e6:7.2f} M/s CPU  "
          f"ratio to goal {bc / goal:5.2f} (CPU) {bw / goal:5.2f} (wall)  "
          f"[k = {visit}, {sweeps} sweeps, acc {r['acceptance']:.3f}, step {r['step']:.4f}, "
          f"<dr_CS> {r['displacement'].mean():.4f}{extra}, load {os.getloadavg()[0]:.2f}]",
          flush=True)
    if compare:
        ow, oc = best["old"]
        o = res["old"]
        print(f"{'  pre-issue-15 kernel':34s} {ow / 1e6:7.2f} M/s wall  {oc / 1e6:7.2f} M/s CPU  "
              f"new/old {bc / oc:5.2f} (CPU) {bw / ow:5.2f} (wall)  "
              f"[acc {o['acceptance']:.3f}, <dr_CS> {o['displacement'].mean():.4f}]", flush=True)
    return bc


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=float, default=4e6, help="trial moves per repetition")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--snapshots", default=None, help="directory caching the prepared snapshots")
    ap.add_argument("--quick", action="store_true", help="only KA T=0.55 Voronoi and HS Voronoi")
    ap.add_argument("--skin", type=float, default=None, help="Verlet skin (default: cage_state's)")
    ap.add_argument("--moves-per-visit", type=int, default=current.MOVES_PER_VISIT,
                    help="trial moves per particle visit of the current kernel")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the pre-issue-15 kernel (no new/old ratio)")
    args = ap.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    pot, sig = ka_potential()
    hs = PairPotential.hard_spheres(0.85)
    cases = []
    for T in ((0.55,) if args.quick else (0.55, 0.44)):
        p, t, b = ka_snapshot(T, args.snapshots)
        for cage in (("voronoi",) if args.quick else ("voronoi", "sphere")):
            cases.append((f"KA N=2000 T={T} {cage}", p, t, b, pot, T, sig, cage, GOAL_KA))
    p, t, b = hs_snapshot(args.snapshots)
    for cage in (("voronoi",) if args.quick else ("voronoi", "sphere")):
        cases.append((f"HS N=2000 eta=0.58 {cage}", p, t, b, hs, 1.0, np.array([1.0, 0.85]),
                      cage, GOAL_HS))
    for name, p, t, b, pt, T, s, cage, goal in cases:
        run_case(name, p, t, b, pt, T, s, cage, args.moves, args.repeats, goal, args.skin,
                 not args.no_reference, args.moves_per_visit)
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
