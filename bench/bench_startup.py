"""Benchmark: start-up of a run on 2 ranks with an empty vs a warm numba cache.

    /work/venv/bin/python bench/bench_startup.py [--ranks 2] [--repeats 2]

Three ways of starting the same tiny Kob–Andersen run (N = 300: snapshots, replicas, inherent and
cage states, descriptors, fits) on ``--ranks`` ranks, each with a fresh cache folder:

* ``cold``: empty cache, every rank compiles the kernels it needs when it first needs them;
* ``compile+warm``: ``python -m glasshpc.compile`` once (serial, timed), then the run;
* ``warm``: the run again on the cache the previous case filled.

For every rank the time from the launch (``mpiexec`` started) to the start of its first task of
each stage is printed (the child wraps ``glasshpc.stages.run_tasks``), then the wall times and
their ratios against ``warm`` measured in the same session; best of ``--repeats``.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIG = """
output: {output}
seed: 7
model: {{name: kob_andersen, n_particles: 300, density: 1.2, temperature: 0.8}}
md: {{melt_time: 2, nvt_time: 5, nve_time: 5}}
snapshots: {{count: 4}}
iso:
  replicas: 2
  times: {{start: 0.01, stop: 1.0, count: 6}}
descriptors:
  radial: [{{r_min: 0.8, r_max: 2.2, count: 8, delta: 0.12}}]
  angular: [{{r_min: 1.0, r_max: 2.0, count: 3, delta: 0.12}}]
  l: [2, 4, 6]
  generations: 1
  r_generation: 1.5
inherent: {{enabled: true, force_tolerance: 1.0e-5}}
cage: {{enabled: true, equilibration_sweeps: 20, measurement_sweeps: 40}}
fits:
  cv_folds: 2
  test_fraction: 0.25
  feature_sets: {{g1: {{generations: 1}}, cs: {{features: init+cs+drcs, generations: 1}}}}
"""


def child(config):
    """Inside mpiexec: the run, printing (rank, stage, seconds since launch) at each stage's first
    task of this rank."""
    t_launch = float(os.environ["BENCH_LAUNCH"])
    from glasshpc import stages
    from glasshpc.parallel import MPI
    from glasshpc import run
    rank = MPI.COMM_WORLD.Get_rank()
    inner = stages.run_tasks

    def run_tasks(ctx, name, tasks, work, store, *args, **kw):
        first = []

        def timed(task):
            if not first:
                first.append(1)
                print("\nFIRST " + json.dumps([rank, name, time.time() - t_launch]), flush=True)
            work(task)
        return inner(ctx, name, tasks, timed, store, *args, **kw)

    stages.run_tasks = run_tasks
    code = run.main([config])
    print("END " + json.dumps([rank, time.time() - t_launch]), flush=True)
    return code


def launch(ranks, config, cache):
    env = dict(os.environ, GLASSHPC_CACHE_DIR=cache, BENCH_LAUNCH=repr(time.time()),
               PYTHONPATH=os.pathsep.join(p for p in [ROOT, os.environ.get("PYTHONPATH")] if p))
    env.pop("NUMBA_CACHE_DIR", None)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    t0 = time.perf_counter()
    r = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--child", config],
                       env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-3000:])
    first = {}
    for m in re.finditer(r"FIRST (\[[^\]]*\])", r.stdout):   # ranks' lines may interleave
        rank, stage, t = json.loads(m.group(1))
        first.setdefault(stage, {})[rank] = t
    return wall, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    work = tempfile.mkdtemp(prefix="bench-startup-")
    config = os.path.join(work, "tiny.yaml")
    best = {}
    firsts = {}
    try:
        for rep in range(args.repeats):
            cache = os.path.join(work, f"cache{rep}")
            for case in ("cold", "compile+warm", "warm"):
                out = os.path.join(work, "tiny.h5")
                if os.path.exists(out):
                    os.remove(out)
                with open(config, "w") as f:
                    f.write(CONFIG.format(output=out))
                if case == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                extra = 0.0
                if case == "compile+warm":
                    shutil.rmtree(cache, ignore_errors=True)
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "glasshpc.compile", "--cache-dir", cache,
                                    "-q"], check=True, cwd=ROOT)
                    extra = time.perf_counter() - t0
                    best["compile"] = min(best.get("compile", 1e30), extra)
                wall, first = launch(args.ranks, config, cache)
                print(f"repeat {rep} {case:13s}: " + (f"compile {extra:.1f} s + " if extra else "")
                      + f"run {wall:.1f} s; first task per stage (s after launch, per rank): "
                      + "; ".join(f"{st} " + "/".join(f"{first[st][r]:.1f}" for r in sorted(first[st]))
                                  for st in first), flush=True)
                if wall + extra < best.get(case, 1e30):
                    best[case] = wall + extra
                    firsts[case] = first
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ref = best["warm"]
    print(f"best of {args.repeats} on {args.ranks} ranks (wall incl. the compile command): "
          + ", ".join(f"{k} {v:.1f} s" + ("" if k == "compile" else f" ({v / ref:.2f}× warm)")
                      for k, v in best.items()))
    for case, first in firsts.items():
        stage0 = next(iter(first))
        print(f"  {case:13s}: launch → first task ({stage0}) {max(first[stage0].values()):.1f} s; "
              "launch → first task of every stage (slowest rank): "
              + ", ".join(f"{st} {max(v.values()):.1f}" for st, v in first.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
