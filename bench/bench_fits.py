"""Benchmark: the fit stage (glasshpc.learn.fits) on 1 vs 2 MPI ranks — parallel efficiency.

    /work/venv/bin/python bench/bench_fits.py                 # realistic size, best of 3, 1 and 2 ranks
    /work/venv/bin/python bench/bench_fits.py --repeats 5 --snapshots 40 --particles 2000

The data set is synthetic but shaped like a run's store: per snapshot, particle types (80 % A), the descriptor
blocks ``init`` and ``cs`` (the columns of the config's descriptor spec, correlated by a factor model), the
per-particle scalars and a propensity linear in a few features plus noise, each snapshot drawn from
(seed, snapshot) so the data do not depend on the rank count.  It is written to a real Store (shards) by the
ranks of each run, then ``fit_propensity`` + ``single_variable_pearson`` are timed between two barriers.

Efficiency = t(1 rank) / (2 · t(2 ranks)), best of ``--repeats`` alternated runs each, next to the same ratio
for a reference measured in the same run: the fits' kind of BLAS work (syrk, eigh) in 1 process vs 2 concurrent
independent processes — what this machine gives two ranks at best right now; also the CPU-time
efficiency (1-rank CPU seconds / 2-rank CPU seconds summed over ranks; MPICH busy-waits, so idle ranks and
duplicated work count, time taken by other processes on a shared machine does not).  The script also checks
that the results of both rank counts are bitwise equal.  ``--worker OUT.npz`` is one run (used by the
subprocesses and by tests/test_fits_ranks.py with ``--tiny``).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIG = """
output: {output}
seed: 11
model: {{name: kob_andersen, n_particles: {N}, density: 1.2, temperature: 0.8}}
snapshots: {{count: {S}}}
iso:
  replicas: 3
  times: {{start: 0.01, stop: 50.0, count: {T}}}
descriptors:
  radial: [{{r_min: 0.8, r_max: {rmax}, count: {radial}, delta: 0.1}}]
  angular: [{{r_min: 1.0, r_max: {amax}, count: {angular}, delta: 0.12}}]
  l: [2, 4, 6]
  generations: {gen}
  r_generation: 1.5
inherent: {{enabled: true}}
cage: {{enabled: true}}
fits:
  cv_folds: {K}
  cv_score: {cv_score}
  test_fraction: 0.25
  feature_sets:
    init: {{features: init, generations: {gen}}}
    cs: {{features: cs, generations: {gen}}}
    init+cs+drcs: {{features: init+cs+drcs, generations: {gen}}}
    g0: {{features: fnet+drcs+cs, generations: 0}}
  selection: {{method: {selection}, max_features: 6}}
  mlp: {{layers: {mlp}, width: 8, max_iter: 20, max_rows: 2000}}
"""

SIZES = {
    # tests: seconds on 3 oversubscribed ranks; selection and MLP on
    "tiny": dict(N=250, rmax=1.5, amax=1.4, S=8, T=4, radial=5, angular=2, gen=1, K=3, selection="forward", mlp=1,
                 cv_score="mse"),
    # bench default: F = 168 .. 337 per set, 2 species, 4 folds: 32 CV + 8 refit tasks
    "realistic": dict(N=2000, rmax=3.0, amax=2.0, S=40, T=20, radial=40, angular=8, gen=2, K=4, selection="none", mlp=0,
                      cv_score="mse"),
}


def make_config(folder, size, **over):
    from glasshpc import config as config_mod

    params = dict(SIZES[size], **over)
    path = os.path.join(folder, "fits.yaml")
    with open(path, "w") as fh:
        fh.write(CONFIG.format(output=os.path.join(folder, "fits.h5"), **params))
    return config_mod.load(path)[0]


def synthetic_snapshot(cfg, s, n_features):
    """{dataset: array} of snapshot ``s`` (float64 unless stated), drawn from (cfg.seed, s)."""
    N, T = cfg.model.n_particles, cfg.replica_steps().size
    rng0 = np.random.default_rng([cfg.seed, 12345])            # the shared "physics"
    load = rng0.standard_normal((12, n_features)) / np.sqrt(12)
    shift = rng0.normal(0.0, 3.0, n_features)
    scale = rng0.uniform(0.1, 4.0, n_features)
    w = rng0.standard_normal((n_features, T)) * (rng0.uniform(size=(n_features, 1)) < 0.15) * 0.05
    rng = np.random.default_rng([cfg.seed, int(s)])
    types = (rng.uniform(size=N) > 0.8).astype(np.int32)
    out = {"snapshots/types": types}
    z = {}
    for block in ("init", "is", "cs"):
        x = rng.standard_normal((N, 12)) @ load + 0.7 * rng.standard_normal((N, n_features))
        z[block] = x
        out[f"descriptors/{block}"] = x * scale + shift
    drcs = np.abs(0.1 + 0.05 * z["cs"][:, 0] + 0.02 * rng.standard_normal(N))
    out.update({"states/cage/displacement": drcs,
                "states/inherent/displacement": np.abs(0.1 * rng.standard_normal(N)),
                "snapshots/net_force": np.abs(rng.normal(20.0, 5.0, N)),
                "snapshots/energy": rng.normal(-6.0, 0.5, N),
                "dynamics/debye_waller": np.abs(rng.normal(0.05, 0.01, N))})
    grow = np.linspace(0.2, 2.0, T)
    prop = (z["cs"] @ w + 2.0 * drcs[:, None]) * grow + rng.standard_normal((N, T)) * grow * 0.5
    out["propensity"] = np.ascontiguousarray(prop.T) + 0.5 * (1 + types[None, :])
    return out


def worker(out, size, over, check=False):
    from mpi4py import MPI

    from glasshpc import stages
    from glasshpc.learn.fits import fit_propensity, single_variable_pearson
    from glasshpc.parallel import Context
    from glasshpc.store import Store

    ctx = Context(MPI.COMM_WORLD)
    folder = ctx.comm.bcast(tempfile.mkdtemp(prefix="bench_fits_") if ctx.root else None, root=0)
    cfg = make_config(folder, size, **over) if ctx.root else None
    ctx.comm.Barrier()
    if not ctx.root:
        from glasshpc import config as config_mod
        cfg = config_mod.load(os.path.join(folder, "fits.yaml"))[0]
    spec = stages.descriptor_spec(cfg, 1.5)
    store = Store(cfg.output, ctx, stages.layout(cfg, spec.n_features), mode="shards")
    try:
        for s in ctx.mine(list(range(cfg.snapshots.count))):
            for name, value in synthetic_snapshot(cfg, s, spec.n_features).items():
                store.write(name, (s,), value)
        store.sync()
        ctx.comm.Barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        phases = {}
        fits, train, test = fit_propensity(ctx, cfg, store, spec.feature_names(("A", "B")), 2, phases)
        single = single_variable_pearson(ctx, cfg, store, 2)
        cpu = time.process_time() - c0   # before the barrier: MPICH busy-waits in it
        ctx.comm.Barrier()
        wall = time.perf_counter() - t0
        cpu = ctx.comm.gather(cpu, root=0)
        store.sync()   # the predictions every rank wrote become readable
        if ctx.root:
            phases["cpu"] = np.array(cpu)
            phases["predictions"] = {name: np.stack([store.read(f"fits/{name}/prediction", (s,))
                                                     for s in range(cfg.snapshots.count)])
                                     for name in fits}
            _save(out, cfg, store, fits, train, test, single, wall, check, ctx, phases)
    finally:
        store.close()
    if ctx.root:
        shutil.rmtree(folder, ignore_errors=True)


def serial_reference(cfg, store, fits, train, test):
    """{key: array}: GroupedRidgeCV(comm=None) on all training rows of each (set, species), read from
    the store, with its held-out ρ from :func:`pearson` (serial)."""
    from glasshpc.learn.fits import feature_rows, feature_layout
    from glasshpc.learn.ridge import GroupedRidgeCV, pearson

    g = cfg.fits.alphas
    alphas = np.logspace(np.log10(g.min), np.log10(g.max), g.count)
    out = {}
    for name, fset in cfg.fits.feature_sets.items():
        layout, _ = feature_layout(fset, _names(cfg))
        for sp in range(2):
            Xtr, Ytr, Gtr = feature_rows(layout, {}, train, sp, cfg.replica_steps().size, store)
            Xte, Yte, Gte = feature_rows(layout, {}, test, sp, cfg.replica_steps().size, store)
            m = GroupedRidgeCV(alphas=alphas, n_splits=cfg.fits.cv_folds, seed=cfg.seed).fit(Xtr, Ytr, Gtr)
            out[f"ref/{name}/{sp}/coef"] = m.coef_
            out[f"ref/{name}/{sp}/intercept"] = m.intercept_
            out[f"ref/{name}/{sp}/alpha"] = m.alpha_
            pred = np.concatenate([m.predict(Xte[Gte == s]) for s in np.unique(Gte)])   # per snapshot
            out[f"ref/{name}/{sp}/pearson"] = pearson(Yte, pred, groups=Gte)
    return out


def _names(cfg):
    from glasshpc import stages
    return stages.descriptor_spec(cfg, 1.5).feature_names(("A", "B"))


def _save(out, cfg, store, fits, train, test, single, wall, check, ctx, phases):
    cpu = phases.pop("cpu")
    predictions = phases.pop("predictions")
    arrays = {"wall": np.array(wall), "train": train, "test": test, "cpu": cpu,
              "phases": np.array([[v for v in phases.values()]]), "phase_names": np.array(list(phases))}
    for name, res in fits.items():
        for key in ("pearson", "r2", "alpha", "coef", "intercept", "grid_extended", "mlp_pearson",
                    "mlp_r2", "pearson_per_snapshot", "pearson_snapshot_mean", "pearson_snapshot_std"):
            if getattr(res, key) is not None:
                arrays[f"{name}/{key}"] = getattr(res, key)
        arrays[f"{name}/prediction"] = predictions[name]
        for sp, sel in enumerate(res.selection):
            for key in ("order", "rho", "r2", "train_rho", "alpha"):
                arrays[f"{name}/selection/{sp}/{key}"] = getattr(sel, key)
    for name, rho in single.items():
        arrays[f"single/{name}"] = rho
    if check:   # the library estimator, serial, on every training row: must give the same bits
        arrays.update(serial_reference(cfg, store, fits, train, test))
    np.savez(out, **arrays)
    print(f"fit stage: {wall:.3f} s on {ctx.size} rank(s), F = "
          f"{[len(r.feature_names) for r in fits.values()]}", flush=True)


def ceiling_worker(out):
    """The same kind of BLAS work as the fits (Gram syrk of one snapshot, eigh), no communication: what two
    independent processes get from this machine right now."""
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.Get_rank())
    a = rng.standard_normal((1600, 400))
    comm.Barrier()
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(24):   # ≈ 3 s: long enough to see the machine's load like a fits run does
            g = a.T @ a
            np.linalg.eigh(g)
    wall = comm.reduce(time.perf_counter() - t0, op=MPI.MAX, root=0)
    if comm.Get_rank() == 0:
        np.savez(out, wall=np.array(wall))


def launch(ranks, out, size, over, timeout=1800, check=False, ceiling=False):
    """Run one worker on ``ranks`` ranks; returns the loaded results (dict of arrays)."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [sys.executable, os.path.abspath(__file__), "--ceiling" if ceiling else "--worker", out,
           "--size", size]
    for k, v in over.items():
        cmd += ["--set", f"{k}={v}"]
    if check:
        cmd.append("--check-serial")
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, timeout=timeout, env=env, capture_output=True, text=True)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", metavar="OUT.npz", help="run once under the current MPI launch")
    ap.add_argument("--ceiling", metavar="OUT.npz", help="run the BLAS reference once (no communication)")
    ap.add_argument("--size", default="realistic", choices=sorted(SIZES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a size parameter ({', '.join(SIZES['realistic'])})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-serial", action="store_true",
                    help="worker: also store the serial GroupedRidgeCV reference (ref/...)")
    args = ap.parse_args(argv)
    over = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = v if k in ("selection", "cv_score") else int(v)
    if args.worker:
        worker(args.worker, args.size, over, args.check_serial)
        return
    if args.ceiling:
        ceiling_worker(args.ceiling)
        return
    params = dict(SIZES[args.size], **over)
    print(f"# bench_fits: {params}, best of {args.repeats} (machine shared: quote the ratio)", flush=True)
    best = {1: np.inf, 2: np.inf}
    best_cpu = {1: np.inf, 2: np.inf}
    best_ref = {1: np.inf, 2: np.inf}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for ranks in (1, 2):
                r = launch(ranks, os.path.join(tmp, f"c{ranks}.npz"), args.size, {}, ceiling=True)
                best_ref[ranks] = min(best_ref[ranks], float(r["wall"]))
            for ranks in (1, 2):
                r = launch(ranks, os.path.join(tmp, f"r{ranks}.npz"), args.size, over)
                best[ranks] = min(best[ranks], float(r["wall"]))
                best_cpu[ranks] = min(best_cpu[ranks], float(r["cpu"].sum()))
                res[ranks] = r
                ph = ", ".join(f"{n} {v:.2f}" for n, v in zip(r["phase_names"], r["phases"][0]))
                print(f"  repeat {rep}: {ranks} rank(s) {float(r['wall']):8.2f} s  (rank 0: {ph})", flush=True)
    same = all(np.array_equal(res[1][k], res[2][k]) for k in res[1] if k not in ("wall", "phases", "cpu"))
    print(f"fit stage best: 1 rank {best[1]:.2f} s, 2 ranks {best[2]:.2f} s, speed-up {best[1] / best[2]:.2f}, "
          f"efficiency {best[1] / (2 * best[2]):.2f}; results bitwise equal: {same}")
    ceil = best_ref[1] / best_ref[2]
    print(f"reference (same BLAS work per process, no communication): 1 process {best_ref[1]:.2f} s, "
          f"2 concurrent {best_ref[2]:.2f} s -> this machine's ceiling for 2 ranks: efficiency {ceil:.2f}; "
          f"fit stage relative to it: {best[1] / (2 * best[2]) / ceil:.2f}")
    # CPU seconds summed over ranks (MPICH busy-waits, so waiting counts as work): duplicated work and
    # idle ranks lower this ratio, time lost to other processes on a shared machine does not
    print(f"CPU-time efficiency (1-rank CPU / 2-rank total CPU, best of each): "
          f"{best_cpu[1] / best_cpu[2]:.2f}")


if __name__ == "__main__":
    main()
