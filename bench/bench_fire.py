#!/usr/bin/env python
"""Inherent-state stage (FIRE through the LAMMPS module) against a raw `lmp` minimize of the same
snapshot (same machine, one run).

    python bench/bench_fire.py [--n 2000] [--ftol 1e-6] [--repeat 3]

Prepares one KA snapshot (ρ = 1.2, T = 0.55, reduced LJ units), then times
  (a) glasshpc: LammpsEngine.inherent_state — restore positions, ``min_style fire``,
      ``min_modify norm max``, minimize to max |F_i| < ftol, read back r^IS and E_i (what every
      inherent-state task does), wall time around the call;
  (b) the `lmp` executable on the same data file with the same pair style, neighbour settings and
      minimiser, timed by LAMMPS's own "Loop time" (no start-up, no file reading).
Prints both times (best of --repeat), the FIRE iteration counts, energies per particle, and the
ratio (b)/(a); goal ≥ 0.9 (within 10 %).
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

from bench_md import write_data
from glasshpc.md.lammps import LammpsEngine
from glasshpc.models import get_model
from glasshpc.parallel import task_rng


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--ftol", type=float, default=1e-6)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = get_model("kob_andersen")
    eng = LammpsEngine(model, 0.005)
    pos, types, box = eng.prepare_snapshot(args.n, 1.2, 0.55, task_rng(1, "snapshot", 0), 2.0,
                                           10.0, 50.0, 10.0, 0.5)
    ours = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        _, e_is, _ = eng.inherent_state(pos, types, box, args.ftol, 1000000)
        ours.append(time.perf_counter() - t0)
    iters_ours = int(eng.lmp.extract_global("ntimestep"))  # reset to 0 by every minimisation

    lmp = shutil.which("lmp") or os.path.join(os.path.dirname(sys.executable), "lmp")
    raw = []
    with tempfile.TemporaryDirectory() as tmp:
        write_data(os.path.join(tmp, "snap.data"), pos, types, box, np.zeros_like(pos))
        script = "\n".join(["units lj", "atom_style atomic", "atom_modify map array sort 0 0.0",
                            "boundary p p p", "read_data snap.data",
                            *model.lammps_pair_commands(), "neighbor 0.3 bin",
                            "neigh_modify every 1 delay 0 check yes", "timestep 0.005",
                            "thermo 0", "min_style fire", "min_modify norm max",
                            f"minimize 0 {args.ftol:g} 1000000 10000000",
                            'print "ITER $(step) PE $(pe:%.12f)"'])
        with open(os.path.join(tmp, "in.bench"), "w") as fh:
            fh.write(script + "\n")
        for _ in range(args.repeat):
            proc = subprocess.run([lmp, "-in", "in.bench", "-log", "none", "-nocite"], cwd=tmp,
                                  capture_output=True, text=True, check=True)
            raw.append(float(re.search(r"Loop time of ([0-9.eE+-]+) on", proc.stdout).group(1)))
            m = re.search(r"ITER (\d+) PE ([-0-9.eE+]+)", proc.stdout)
    print(f"KA N = {args.n}, FIRE to max|F| < {args.ftol:g}, best of {args.repeat}")
    print(f"  glasshpc inherent_state: {min(ours):.3f} s, {iters_ours} iterations, "
          f"E_IS/N = {e_is.mean():.8f}")
    print(f"  raw lmp minimize       : {min(raw):.3f} s, {m.group(1)} iterations, "
          f"E_IS/N = {float(m.group(2)):.8f}")
    print(f"  ratio lmp / glasshpc   : {min(raw) / min(ours):.3f}   (goal ≥ 0.9)")


if __name__ == "__main__":
    main()
