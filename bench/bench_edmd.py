"""Benchmark of the hard-sphere EDMD (glasshpc.md.edmd) on one core.

N = 2000: monodisperse eta = 0.50 and binary (sigma_B/sigma_A = 0.85, x_A = 0.3) eta = 0.58.
Each system is prepared (insertion + Lubachevsky-Stillinger growth + NVE equilibration),
warmed up, then timed over >= 2e6 collisions.  Prints collisions/s, the ratio to the
reference C implementation (1.19 M/s and 1.31 M/s, /work/shared/STACK.md), events per
collision and Z vs the BMCSL (Carnahan-Starling) equation of state.

usage: python bench/bench_edmd.py [--collisions 2e6] [--repeats 3] [--n 2000]
"""
import argparse
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
        best = 0.0
        ncoll = nev = 0
        for _ in range(args.repeats):
            c0, e0 = s.n_collisions, s.n_events
            t0 = time.perf_counter()
            s.run(duration)
            dt = time.perf_counter() - t0
            ncoll += s.n_collisions - c0
            nev += s.n_events - e0
            best = max(best, (s.n_collisions - c0) / dt)
        z = s.pressure_Z
        zref = bmcsl_Z(eta, [xa, 1 - xa], [1.0, ratio])
        print(f"{name:32s} N={args.n}  prep {t_prep:5.1f} s  "
              f"{best / 1e6:5.3f} M coll/s (best of {args.repeats} x {ncoll / args.repeats:.3g})  "
              f"ratio to reference C {best / ref:5.2f}  events/coll {nev / ncoll:4.2f}  "
              f"Z {z:8.4f}  BMCSL {zref:8.4f}  ({100 * (z / zref - 1):+.2f} %)  min gap {s.min_gap():.2e}",
              flush=True)


if __name__ == "__main__":
    main()
