"""Benchmark of the hard-sphere EDMD (glasshpc.md.edmd) on one core.

N = 2000: monodisperse eta = 0.50 and binary (sigma_B/sigma_A = 0.85, x_A = 0.3) eta = 0.58.
Each system is prepared (insertion + Lubachevsky-Stillinger growth + NVE equilibration),
warmed up, then timed over >= 2e6 collisions.  Prints collisions/s, the ratio to the
reference C implementation (1.19 M/s and 1.31 M/s, /work/shared/STACK.md), events per
collision and Z vs the BMCSL (Carnahan-Starling) equation of state.
Rates are given per wall-clock second and per CPU second of this process (best of the
repeats): on a shared, loaded machine the CPU figure is the fairer one; the load average is
printed too.  The binary eta = 0.58 state is a supercooled (glassy) state whose tau_alpha
(~1e4 tau) far exceeds the equilibration here, so its Z is that of a freshly compressed state
and lies above the BMCSL fluid branch.

usage: python bench/bench_edmd.py [--collisions 2e6] [--repeats 3] [--n 2000]
"""
import argparse
import os
import time

import numpy as np

from glasshpc.md.edmd import bmcsl_Z, prepare_snapshot

CASES = [
    # name, x_large, size_ratio, eta, reference collisions/s
    ("monodisperse eta=0.50", 1.0, 1.0, 0.50, 1.19e6),
    ("binary 0.85 x_A=0.3 eta=0.58", 0.3, 0.85, 0.58, 1.31e6),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collisions", type=float, default=2e6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--equilibration", type=float, default=20.0)
    args = ap.parse_args()
    for name, xa, ratio, eta, ref in CASES:
        t0 = time.perf_counter()
        s = prepare_snapshot(args.n, xa, ratio, eta, seed=args.seed, equilibration_time=args.equilibration)
        t_prep = time.perf_counter() - t0
        # warm-up and collision rate per unit time
        c0 = s.n_collisions
        s.run(1.0)
        rate_t = s.n_collisions - c0
        duration = args.collisions / rate_t
        s.reset_pressure()
        best_wall = best_cpu = 0.0
        ncoll = nev = 0
        for _ in range(args.repeats):
            c0, e0 = s.n_collisions, s.n_events
            w0, p0 = time.perf_counter(), time.process_time()
            s.run(duration)
            dw, dp = time.perf_counter() - w0, time.process_time() - p0
            ncoll += s.n_collisions - c0
            nev += s.n_events - e0
            best_wall = max(best_wall, (s.n_collisions - c0) / dw)
            best_cpu = max(best_cpu, (s.n_collisions - c0) / dp)
        z = s.pressure_Z
        zref = bmcsl_Z(eta, [xa, 1 - xa], [1.0, ratio])
        print(f"{name} N={args.n} (prep {t_prep:.1f} s, {args.repeats} x {ncoll / args.repeats:.3g} collisions, "
              f"load average {os.getloadavg()[0]:.2f})\n"
              f"    wall: {best_wall / 1e6:6.3f} M coll/s  ratio to reference C {best_wall / ref:5.2f}\n"
              f"    CPU : {best_cpu / 1e6:6.3f} M coll/s  ratio to reference C {best_cpu / ref:5.2f}\n"
              f"    events/collision {nev / ncoll:4.2f}  Z {z:8.4f}  BMCSL {zref:8.4f} ({100 * (z / zref - 1):+.2f} %)"
              f"  min gap {s.min_gap():.2e}", flush=True)


if __name__ == "__main__":
    main()
