"""Benchmark: GroupedRidgeCV vs scikit-learn RidgeCV(cv=GroupKFold(5)) on a large correlated problem.

    /work/venv/bin/python bench/bench_ridge.py                       # 200 000 x 1 000, serial
    /work/venv/bin/python bench/bench_ridge.py --n 50000 --features 300
    mpiexec -n 2 /work/venv/bin/python bench/bench_ridge.py          # GroupedRidgeCV over MPI only

Synthetic data: rows are particles of ``--snapshots`` snapshots; features follow a factor model
(40 shared factors + independent noise, so they are strongly correlated), are shifted/scaled per feature and then
standardised over all rows (scikit-learn's RidgeCV does not standardise, GroupedRidgeCV does, per fold: on a
globally standardised X both solve the same final problem).  The target is a sparse linear signal plus noise.
Each snapshot's rows are drawn from a generator seeded by (seed, snapshot), so the data set does not depend on the
number of ranks.

scikit-learn's RidgeCV with a ``cv`` splitter refits Ridge for every (α, fold): 5 x 49 Cholesky solves, each
forming a Gram matrix.  When that is estimated (from one timed Ridge fit) to exceed ``--sklearn-budget`` seconds,
the comparison is made on a smaller number of snapshots and the full-size sklearn time is reported as an estimate.
"""

import argparse
import sys
import time

import numpy as np

from glasshpc.learn.ridge import DEFAULT_ALPHAS, GroupedRidgeCV


def make_snapshots(snaps, per_snap, F, n_factors, seed, T=1):
    rng0 = np.random.default_rng(seed)
    load = rng0.standard_normal((n_factors, F)) / np.sqrt(n_factors)
    shift = rng0.normal(0.0, 5.0, F)
    scale = rng0.uniform(0.2, 5.0, F)
    w = rng0.standard_normal((F, T)) * (rng0.uniform(size=(F, 1)) < 0.1) * 0.1
    X = np.empty((len(snaps) * per_snap, F))
    Y = np.empty((len(snaps) * per_snap, T))
    for i, s in enumerate(snaps):
        rng = np.random.default_rng([seed, int(s)])
        sl = slice(i * per_snap, (i + 1) * per_snap)
        xs = rng.standard_normal((per_snap, n_factors)) @ load
        xs += rng.standard_normal((per_snap, F))
        Y[sl] = xs @ w + rng.standard_normal((per_snap, T)) * np.linspace(1.0, 3.0, T)
        X[sl] = xs * scale + shift
    groups = np.repeat(np.asarray(snaps), per_snap)
    return X, Y, groups


def standardise_inplace(X, comm=None):
    n = np.array([X.shape[0]], float)
    s = X.sum(0)
    if comm is not None:
        from mpi4py import MPI
        comm.Allreduce(MPI.IN_PLACE, n)
        comm.Allreduce(MPI.IN_PLACE, s)
    mean = s / n[0]
    X -= mean
    ss = np.einsum("ij,ij->j", X, X)
    if comm is not None:
        comm.Allreduce(MPI.IN_PLACE, ss)
    X /= np.sqrt(ss / n[0])
    return X


def time_ours(X, Y, g, alphas, comm=None):
    t0 = time.perf_counter()
    model = GroupedRidgeCV(alphas=alphas, n_splits=5, seed=0, comm=comm).fit(X, Y, g)
    return time.perf_counter() - t0, model


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="rows (particles), default 200000")
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--snapshots", type=int, default=100, help="snapshots (groups); n must be a multiple")
    ap.add_argument("--factors", type=int, default=40)
    ap.add_argument("--targets", type=int, default=8, help="targets for the extra multi-target timing (0 = skip)")
    ap.add_argument("--sklearn-budget", type=float, default=300.0,
                    help="seconds; above this (estimated) the sklearn comparison uses fewer snapshots")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    comm, rank, size = None, 0, 1
    if "mpi4py" in sys.modules or _launched_by_mpi():
        from mpi4py import MPI
        if MPI.COMM_WORLD.Get_size() > 1:
            comm = MPI.COMM_WORLD
            rank, size = comm.Get_rank(), comm.Get_size()

    def say(*a):
        if rank == 0:
            print(*a, flush=True)

    if args.n % args.snapshots:
        raise SystemExit("--n must be a multiple of --snapshots")
    per_snap = args.n // args.snapshots
    F, alphas = args.features, DEFAULT_ALPHAS
    import threadpoolctl  # noqa: F401  (sklearn dependency; reports BLAS threads)
    from threadpoolctl import threadpool_info
    blas = [(d.get("internal_api"), d.get("num_threads")) for d in threadpool_info()]
    say(f"# bench_ridge: n={args.n} F={F} snapshots={args.snapshots} alphas={alphas.size} "
        f"[{alphas[0]:.0e}, {alphas[-1]:.0e}] ranks={size} BLAS={blas}")

    snaps = np.arange(args.snapshots)
    mine = snaps[snaps % size == rank]
    t0 = time.perf_counter()
    X, Y, g = make_snapshots(mine, per_snap, F, args.factors, args.seed, T=max(args.targets, 1))
    standardise_inplace(X, comm)
    say(f"data generated in {time.perf_counter() - t0:.1f} s ({X.nbytes / 1e9:.2f} GB per rank)")

    y = Y[:, 0].copy()
    t_ours, ours = time_ours(X, y, g, alphas, comm)
    say(f"GroupedRidgeCV  n={args.n:>7d}  1 target : {t_ours:8.2f} s   alpha={ours.alpha_:.4g}"
        f"   grid_extended={ours.grid_extended_}")
    if args.targets > 1:
        t_multi, multi = time_ours(X, Y, g, alphas, comm)
        say(f"GroupedRidgeCV  n={args.n:>7d}  {args.targets} targets: {t_multi:8.2f} s   "
            f"alpha={np.array2string(multi.alpha_, precision=3)}")
    if comm is not None:
        say("(MPI run: the scikit-learn comparison is serial-only; run without mpiexec for it)")
        return

    # ------------------------------------------------------------------ scikit-learn
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import GroupKFold

    n_fit = int(round(0.8 * args.n))
    t0 = time.perf_counter()
    Ridge(alpha=1.0).fit(X[:n_fit], y[:n_fit])
    t_one = time.perf_counter() - t0
    est_full = t_one * (5 * alphas.size + 1.25)  # 5 folds x A fits on 4/5 of the rows + refit on all rows
    say(f"sklearn Ridge, one fit on {n_fit} rows: {t_one:.2f} s -> RidgeCV(cv=GroupKFold(5)) estimated "
        f"{est_full:.0f} s at n={args.n}")

    n_snap_cmp = args.snapshots
    if est_full > args.sklearn_budget:
        n_snap_cmp = int(args.snapshots * 0.8 * args.sklearn_budget / est_full)
        n_snap_cmp = max(5, min(args.snapshots, n_snap_cmp))  # 5 folds need >= 5 snapshots
        say(f"NOTE: the full-size sklearn RidgeCV would take ~{est_full / 60:.0f} min (> "
            f"{args.sklearn_budget:.0f} s budget): comparing on the first {n_snap_cmp} snapshots "
            f"(n={n_snap_cmp * per_snap}, sklearn est. ~{est_full * n_snap_cmp / args.snapshots:.0f} s) instead; "
            f"full-size sklearn time is the estimate above.")
    n_cmp = n_snap_cmp * per_snap
    Xc, yc, gc = X[:n_cmp], y[:n_cmp], g[:n_cmp]
    if n_cmp == args.n:
        t_ours_c, ours_c = t_ours, ours
    else:
        Xc = standardise_inplace(Xc.copy())
        t_ours_c, ours_c = time_ours(Xc, yc, gc, alphas)
        say(f"GroupedRidgeCV  n={n_cmp:>7d}  1 target : {t_ours_c:8.2f} s   alpha={ours_c.alpha_:.4g}")

    splits = list(GroupKFold(n_splits=5).split(Xc, yc, gc))
    t0 = time.perf_counter()
    sk = RidgeCV(alphas=alphas, cv=splits, scoring="neg_mean_squared_error").fit(Xc, yc)
    t_sk = time.perf_counter() - t0
    say(f"sklearn RidgeCV n={n_cmp:>7d}  1 target : {t_sk:8.2f} s   alpha={sk.alpha_:.4g}")

    # coefficients: sklearn on the globally standardised X vs ours mapped to those (standardised) units
    same_alpha = np.isclose(sk.alpha_, ours_c.alpha_, rtol=1e-12)
    if same_alpha:
        cmp_model = ours_c
        say("same alpha chosen (folds differ: GroupKFold balances sizes, ours permutes snapshots by seed)")
    else:
        cmp_model = GroupedRidgeCV(alphas=[sk.alpha_], seed=0).fit(Xc, yc, gc)
        say(f"alpha differs (different fold assignment: GroupKFold vs seeded permutation); "
            f"comparing our refit at sklearn's alpha={sk.alpha_:.4g}")
    d_coef = rel(cmp_model.coef_, sk.coef_)
    d_pred = rel(cmp_model.predict(Xc[:5000]), sk.predict(Xc[:5000]))
    say(f"coefficients: max relative difference {d_coef:.2e}; predictions {d_pred:.2e}  "
        f"[{'OK' if d_coef < 1e-6 else 'MISMATCH'}]")

    ratio = t_sk / t_ours_c
    say(f"speed ratio sklearn/ours at n={n_cmp}: {ratio:.1f}x  (goal >= 2x: {'met' if ratio >= 2 else 'NOT met'})")
    if n_cmp != args.n:
        say(f"speed ratio at n={args.n} (sklearn estimated): {est_full / t_ours:.0f}x")


def _launched_by_mpi():
    import os
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))


if __name__ == "__main__":
    main()
