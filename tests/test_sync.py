"""Context.sync: the timed barrier before the collectives that follow uneven work (the fits' waves,
the final assembly). A rank that never arrives makes the waiting rank abort the job within the limit,
instead of holding every rank until the wall-time limit; ranks that arrive in time pass."""
import os
import subprocess
import sys
import time

import pytest

MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")

SCRIPT = """
import sys, time
from glasshpc.parallel import Context
ctx = Context()
t0 = time.perf_counter()
if ctx.rank == 1:
    time.sleep(float(sys.argv[1]))     # a rank busy (or hung) before the collective
waited = ctx.sync("test point", since=t0)
print(f"rank {ctx.rank} passed after {waited:.2f} s", flush=True)
"""


def _launch(sleep, stall):
    env = dict(os.environ, PYTHONPATH=ROOT, GLASSHPC_STALL_SECONDS=str(stall))
    t0 = time.perf_counter()
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", SCRIPT, str(sleep)],
                       capture_output=True, text=True, env=env, timeout=120)
    return p, time.perf_counter() - t0


def test_a_rank_that_never_arrives_aborts_the_job():
    p, wall = _launch(sleep=60, stall=2)
    assert p.returncode != 0
    assert "waited" in p.stderr and "'test point'" in p.stderr and "--resume" in p.stderr
    assert "passed" not in p.stdout
    assert wall < 45, wall          # aborted after ≈ 2 s, not after the 60 s sleep


def test_ranks_arriving_within_the_limit_pass():
    p, _ = _launch(sleep=1, stall=20)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "rank 0 passed" in p.stdout and "rank 1 passed" in p.stdout
