#!/usr/bin/env python
"""Strong scaling 1 → 2 ranks of a reduced demo, per stage, against the ``--dry-run`` prediction.

    python bench/bench_scaling.py [--config inputs/ka_demo.yaml] [--repeats 2] [--ranks 2]

Runs the reduced demo (the config with shorter MD, fewer sweeps and chains: ``reduce``) with
``python -m glasshpc.run`` on 1 rank and with ``mpiexec -n P``, alternated, ``--repeats`` times
each, and reads the wall time per stage the run logs. Prints per stage the best 1-rank and P-rank
times, the efficiency t₁ / (P · t_P), and the wall time glasshpc.schedule predicts for 1 and P ranks
from its calibration (best … worst of 3) with the measured / predicted ratio. The numba cache
must be warm (a first run compiles; it is not timed separately). The machine may be shared:
figures are best of N and the load average is printed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def reduce(data):
    """The reduced demo: same system, stages and task counts, far shorter MD and MC."""
    data = dict(data)
    md = dict(data.get("md", {}))
    md.update(melt_time=min(md.get("melt_time", 10), 2), nvt_time=min(md.get("nvt_time", 100), 10),
              nve_time=min(md.get("nve_time", 150), 10))
    data["md"] = md
    iso = dict(data["iso"])
    iso["times"] = {"start": 0.01, "stop": 3.0, "count": 12}
    data["iso"] = iso
    if "cage" in data:
        cage = dict(data["cage"])
        cage.update(equilibration_sweeps=100, measurement_sweeps=400, chains=2)
        data["cage"] = cage
    return data


def run(cfg_path, ranks):
    cmd = [sys.executable, "-m", "glasshpc.run", cfg_path, "--overwrite"]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(cfg_path))
    if p.returncode:
        sys.exit(p.stdout[-2000:] + p.stderr[-3000:])
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("wall time per stage"))
    pairs = (item.strip().rsplit(" ", 1) for item in line.split(":", 1)[1].split(","))
    return {k: float(v) for k, v in pairs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "inputs", "ka_demo.yaml"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--no-reduce", action="store_true", help="run the config as it is")
    args = ap.parse_args()
    with open(args.config, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not args.no_reduce:
        data = reduce(data)
    folder = tempfile.mkdtemp(prefix="glasshpc-scaling-")
    data["output"] = os.path.join(folder, "out.h5")
    cfg_path = os.path.join(folder, "reduced.yaml")
    with open(cfg_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh)

    sys.path.insert(0, ROOT)
    from glasshpc import config as config_mod
    from glasshpc import schedule
    from glasshpc.md.accel import resolve_suffix
    from glasshpc.parallel import Context
    from mpi4py import MPI
    cfg, _ = config_mod.load(cfg_path)
    cfg, _ = resolve_suffix(cfg, Context(MPI.COMM_SELF))   # what the runs will use ('auto' → …)
    t0 = time.perf_counter()
    cal = schedule.calibrate(cfg, 3)
    print(f"calibration {time.perf_counter() - t0:.0f} s: MD {cal['md'][1] / 1e6:.3g} … "
          f"{cal['md'][0] / 1e6:.3g} M atom-steps/s")
    P = args.ranks
    pred = {}
    for ranks in (1, P):
        for which in (0, 1):
            for name, wall, _, _ in schedule.predict(schedule.stage_models(cfg, cal, which), ranks):
                pred.setdefault((name, ranks), []).append(wall)

    best = {1: {}, P: {}}
    for rep in range(args.repeats):
        for ranks in (1, P):   # alternated: drifts of the machine's load hit both alike
            t = run(cfg_path, ranks)
            for k, v in t.items():
                best[ranks][k] = min(v, best[ranks].get(k, float("inf")))
            print(f"  repeat {rep + 1}, {ranks} rank(s): total {t.get('total', 0):.1f} s "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)

    alias = {"cage": "cage", "inherent": "inherent"}
    print(f"\nreduced demo {os.path.basename(args.config)}: N = {cfg.model.n_particles}, "
          f"{cfg.snapshots.count} snapshots × {cfg.iso.replicas} replicas; best of "
          f"{args.repeats}; machine shared (load average {os.getloadavg()[0]:.2f})")
    print(f"{'stage':15s} {'t1 (s)':>8s} {'t' + str(P) + ' (s)':>8s} {'eff':>6s}   "
          f"{'pred t1':>15s} {'meas/pred':>9s}   {'pred t' + str(P):>15s} {'meas/pred':>9s}")
    for k in best[1]:
        t1, tp = best[1][k], best[P].get(k, float("nan"))
        eff = t1 / (P * tp) if tp > 0 else float("nan")
        key = alias.get(k, k)
        cols = []
        for ranks, t in ((1, t1), (P, tp)):
            lo, hi = sorted(pred.get((key, ranks), [float("nan")] * 2))
            mid = 0.5 * (lo + hi)
            cols.append(f"{lo:6.3g} … {hi:<6.3g} {t / mid if mid > 0 else float('nan'):9.2f}")
        print(f"{k:15s} {t1:8.2f} {tp:8.2f} {eff:6.2f}   " + "   ".join(cols))
    print("(total = the run's wall incl. start-up; predictions exclude numba compilation and the "
          "final assembly)")


if __name__ == "__main__":
    main()
