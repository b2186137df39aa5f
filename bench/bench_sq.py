"""Benchmark: S_AA(q) by the non-uniform FFT (glasshpc.structure.structure_factor.structure_factor, the
pipeline's) vs the direct sum over particles (structure_factor_direct, the previous implementation).

    /work/venv/bin/python bench/bench_sq.py              # N = 4096 KA at ρ = 1.2 (3277 A particles), q_max = 12
    /work/venv/bin/python bench/bench_sq.py --n 1000 --repeats 5

Positions are uniform random in the box (the cost does not depend on the structure). Prints best-of-N wall and CPU
times, the ratio new/old and the largest relative deviation over the non-empty bins. Reduced LJ units.
"""
import argparse
import time

import numpy as np

from glasshpc.dynamics import q_grid
from glasshpc.structure.structure_factor import structure_factor, structure_factor_direct


def best(f, reps):
    """(best wall s, best CPU s of this process, result): on a shared machine the CPU time is the cleaner figure."""
    ts, cs, r = [], [], None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        r = f()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return min(ts), min(cs), r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096, help="particles of the KA system (80 %% are A)")
    ap.add_argument("--density", type=float, default=1.2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    L = (args.n / args.density) ** (1 / 3)
    box = np.full(3, L)
    pos = np.random.default_rng(0).uniform(0, L, size=(int(0.8 * args.n), 3))
    edges = q_grid()
    structure_factor(pos[:50], box, edges)            # numba compilation (cache) outside the timing
    t_new, c_new, new = best(lambda: structure_factor(pos, box, edges), args.repeats)
    t_old, c_old, old = best(lambda: structure_factor_direct(pos, box, edges), args.repeats)
    ok = np.isfinite(old)
    dev = float(np.max(np.abs(new[ok] - old[ok]) / np.abs(old[ok])))
    print(f"S_AA(q), N = {args.n} ({len(pos)} A), L = {L:.3f} σ, q_max = {edges[-1]:g}, {len(edges) - 1} bins "
          f"({int((~ok).sum())} empty), best of {args.repeats}:")
    print(f"  direct sum {t_old:8.3f} s wall, {c_old:8.3f} s CPU")
    print(f"  NUFFT      {t_new:8.3f} s wall, {c_new:8.3f} s CPU")
    print(f"  ratio new/old = {t_new / t_old:.4f} wall, {c_new / c_old:.4f} CPU ({c_old / c_new:.0f}x faster); "
          f"max relative deviation {dev:.2e}")


if __name__ == "__main__":
    main()
