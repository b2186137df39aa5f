#!/usr/bin/env python
"""Engine-group efficiency: one snapshot task on a K-rank LAMMPS group against K single-rank tasks
run side by side, the figure glasshpc.schedule assumes (GROUP_EFFICIENCY) for ``engine_ranks``.

    mpiexec -n 2 python bench/bench_groups.py [--n 2000] [--time 10] [--repeat 3]

Every rank first runs one snapshot task of its own (KA, ρ = 1.2, T = 0.55, reduced LJ units:
lattice start, melt, NVT, NVE for ``--time`` τ in all) on COMM_SELF — the cores are all busy, as
in a stage without groups — then all ranks run the same task together on one GroupLammpsEngine
(domain decomposition over the K = launch-size ranks). Alternated ``--repeat`` times; best of
each. Prints atoms per rank, t_1, t_K and the group efficiency e = t_1 / (K · t_K) with the value
the schedule assumes for that many atoms per rank.
"""
import argparse
import time

import numpy as np

from glasshpc.md.group import GroupLammpsEngine
from glasshpc.md.lammps import LammpsEngine
from glasshpc.models import get_model
from glasshpc.parallel import MPI, task_rng
from glasshpc.schedule import GROUP_EFFICIENCY


def task(engine, n, total_time, seed):
    """One snapshot task; returns its wall time (s)."""
    third = total_time / 3.0
    t0 = time.perf_counter()
    engine.prepare_snapshot(n, 1.2, 0.55, task_rng(seed, "snapshot", 0), 2.0, third, third,
                            third, 0.5)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--time", type=float, default=10.0, help="MD time of one task (τ)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    K = comm.Get_size()
    model = get_model("kob_andersen")
    alone = LammpsEngine(model, 0.005, comm=MPI.COMM_SELF)
    group = GroupLammpsEngine(model, 0.005, 0.3, comm)
    t1, tk = [], []
    for r in range(args.repeat):
        comm.Barrier()
        t1.append(comm.allreduce(task(alone, args.n, args.time, r), op=MPI.MAX))
        comm.Barrier()
        tk.append(comm.allreduce(task(group, args.n, args.time, r), op=MPI.MAX))
    alone.close()
    group.close()
    if comm.Get_rank() == 0:
        per_rank = args.n / K
        assumed = next(e for atoms, e in GROUP_EFFICIENCY if per_rank >= atoms)
        b1, bk = min(t1), min(tk)
        print(f"KA N = {args.n}, {args.time:g} τ per task, K = {K} ({per_rank:.0f} atoms per rank), "
              f"best of {args.repeat}: t_1 = {b1:.2f} s (every rank its own task), "
              f"t_K = {bk:.2f} s; group efficiency t_1 / (K t_K) = {b1 / (K * bk):.2f} "
              f"(glasshpc.schedule assumes {assumed:.2f}); all t_1 {np.round(t1, 2).tolist()}, "
              f"t_K {np.round(tk, 2).tolist()}")


if __name__ == "__main__":
    main()
