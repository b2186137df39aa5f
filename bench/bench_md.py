#!/usr/bin/env python
"""Replica-stage throughput against a raw `lmp` run of the same trajectory (same machine, one run).

    python bench/bench_md.py [--n 1000] [--steps 20000] [--readouts 25] [--repeat 3]

Prepares one KA snapshot (ρ = 1.2, T = 0.55, reduced LJ units), then times
  (a) glasshpc: LammpsEngine.run_replica — restore positions, fresh velocities, NVE with
      log-spaced read-outs of unwrapped positions (what every replica task does);
  (b) the `lmp` executable on the same data file (positions and the same velocities), same pair
      style, neighbour settings and NVE steps, no read-outs, timed by LAMMPS's own "Loop time".
Prints M atom-steps/s of both (best of --repeat) and the ratio (a)/(b); goal ≥ 0.97.
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
    args = ap.parse_args()
    model = get_model("kob_andersen")
    T = 0.55
    eng = LammpsEngine(model, 0.005)
    pos, types, box = eng.prepare_snapshot(args.n, 1.2, T, task_rng(1, "snapshot", 0), 2.0, 10.0,
                                           20.0, 10.0, 0.5)
    steps = np.unique(np.round(np.logspace(np.log10(2), np.log10(args.steps),
                                           args.readouts)).astype(np.int64))
    ours = []
    for k in range(args.repeat):
        t0 = time.perf_counter()
        eng.run_replica(pos, types, box, T, task_rng(1, "replica", 0, k), steps)
        ours.append(time.perf_counter() - t0)
    ours_rate = args.n * args.steps / min(ours) / 1e6

    lmp = shutil.which("lmp") or os.path.join(os.path.dirname(sys.executable), "lmp")
    vel = maxwell_boltzmann(args.n, T, task_rng(1, "replica", 0, 0))
    raw = []
    with tempfile.TemporaryDirectory() as tmp:
        write_data(os.path.join(tmp, "snap.data"), pos, types, box, vel)
        script = "\n".join(["units lj", "atom_style atomic", "atom_modify map array sort 0 0.0",
                            "boundary p p p", "read_data snap.data",
                            *model.lammps_pair_commands(), "neighbor 0.3 bin",
                            "neigh_modify every 1 delay 0 check yes", "timestep 0.005",
                            "fix integrate all nve", "thermo 0", f"run {args.steps}"])
        with open(os.path.join(tmp, "in.bench"), "w") as fh:
            fh.write(script + "\n")
        for _ in range(args.repeat):
            proc = subprocess.run([lmp, "-in", "in.bench", "-log", "none", "-nocite"], cwd=tmp,
                                  capture_output=True, text=True, check=True)
            m = re.search(r"Loop time of ([0-9.eE+-]+) on", proc.stdout)
            raw.append(float(m.group(1)))
    raw_rate = args.n * args.steps / min(raw) / 1e6
    print(f"KA N = {args.n}, {args.steps} NVE steps, {len(steps)} read-outs, best of {args.repeat}")
    print(f"  glasshpc run_replica : {ours_rate:6.3f} M atom-steps/s ({min(ours):.2f} s)")
    print(f"  raw lmp (Loop time)  : {raw_rate:6.3f} M atom-steps/s ({min(raw):.2f} s)")
    print(f"  ratio glasshpc / lmp : {ours_rate / raw_rate:.3f}   (goal ≥ 0.97)")


if __name__ == "__main__":
    main()
