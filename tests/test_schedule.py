"""Dynamic scheduling (glasshpc.parallel.TaskQueue), the schedule simulation of ``--dry-run
--ranks P`` (glasshpc.schedule) and rank-count independence of a whole run on 1, 2, 4 and 8 ranks
with deliberately unequal tasks (real processes, real MPI, oversubscribed on 2 cores)."""
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from glasshpc.parallel import Context, TaskQueue, lpt_order

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def test_lpt_order_is_stable_longest_first():
    tasks = ["a", "b", "c", "d", "e"]
    order, costs = lpt_order(tasks, [1.0, 3.0, 1.0, 2.0, 3.0])
    assert order == ["b", "e", "d", "a", "c"]
    assert list(costs) == [3.0, 3.0, 2.0, 1.0, 1.0]
    assert lpt_order(tasks) == (tasks, None)


def test_queue_on_one_rank_runs_every_task_in_order():
    ctx = Context()
    if ctx.size != 1:
        pytest.skip("serial test")
    q = TaskQueue(ctx, "t", list(range(7)), interval=1e9)
    assert list(q) == list(range(7))
    wall, stats = q.close()
    assert stats[0][0] == 7 and wall >= 0


@pytest.mark.mpi(min_size=2)
def test_queue_slow_task_does_not_hold_the_others():
    """Task 0 (the longest, taken first by some rank) sleeps 1 s, the 40 others 5 ms: every task
    runs exactly once, and the rank that ran task 0 ran fewer tasks than any other rank (with a
    round-robin deal every rank would run the same number)."""
    ctx = Context()
    tasks = list(range(41))
    costs = [200.0] + [1.0] * 40
    order, costs = lpt_order(tasks, costs)
    q = TaskQueue(ctx, "unequal", order, costs, interval=0.3)
    ran = []
    for t in q:
        time.sleep(1.0 if t == 0 else 0.005)
        ran.append(t)
    _, stats = q.close()
    everything = ctx.comm.allgather(ran)
    flat = sorted(t for part in everything for t in part)
    assert flat == tasks
    slow = next(r for r, part in enumerate(everything) if 0 in part)
    assert everything[slow][0] == 0
    assert all(len(everything[slow]) < len(p) for r, p in enumerate(everything) if r != slow)
    assert [s[0] for s in stats] == [len(p) for p in everything]
