"""Benchmark: numba p_hop / CSD kernels vs a vectorised numpy reference (same definitions).

    /work/venv/bin/python bench/bench_phop.py                 # F = 2001 frames, N = 4096 (paper scale)
    /work/venv/bin/python bench/bench_phop.py --frames 301 --n 1000

The numpy reference builds the window means with cumulative sums over frames (O(F·N) memory
traffic per term) and the window variances from ⟨r²⟩ − 2⟨r⟩·m + m² — vectorised but several passes
over (F, N, 3) arrays. Prints best-of-3 wall times and the ratio; the results agree to ~1e-12.
Reduced LJ units (σ, τ); synthetic random-walk trajectories.
"""
import argparse
import time

import numpy as np

from glasshpc import rearrangements as rr


def p_hop_numpy(x, w):
    F = x.shape[0]
    c1 = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    c2 = np.concatenate([np.zeros((1,) + x.shape[1:2]), np.cumsum((x * x).sum(-1), axis=0)])
    t = np.arange(w, F - w)
    n = w + 1
    mA = (c1[t + 1] - c1[t - w]) / n            # frames t−w..t
    mB = (c1[t + w + 1] - c1[t]) / n            # frames t..t+w
    sA = (c2[t + 1] - c2[t - w]) / n            # ⟨r²⟩_A
    sB = (c2[t + w + 1] - c2[t]) / n
    a = sA - 2 * (mA * mB).sum(-1) + (mB * mB).sum(-1)
    b = sB - 2 * (mB * mA).sum(-1) + (mA * mA).sum(-1)
    out = np.full(x.shape[:2], np.nan)
    out[t] = np.sqrt(np.maximum(a * b, 0))
    return out


def best(f, reps=3):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2001)
    ap.add_argument("--n", type=int, default=4096)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = np.cumsum(0.1 * rng.standard_normal((a.frames, a.n, 3)), axis=0) + 5.0
    rr.p_hop(x[:20, :4])                          # compile
    tn, pn = best(lambda: rr.p_hop(x))
    tr, pr = best(lambda: p_hop_numpy(x, 5))
    err = np.nanmax(np.abs(pn - pr))
    print(f"p_hop F={a.frames} N={a.n}: numba {tn:.3f} s, numpy {tr:.3f} s, ratio {tr / tn:.2f}x, "
          f"max |diff| {err:.2e}")
    tc, _ = best(lambda: rr.csd(x))
    print(f"CSD: numba {tc:.3f} s ({a.frames * a.n / tc / 1e6:.1f} M particle-frames/s)")


if __name__ == "__main__":
    main()
