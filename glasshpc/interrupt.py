"""Graceful stop on SIGTERM (what SLURM sends before killing a job at its time limit) and SIGINT
(Ctrl-C, which mpiexec and srun forward to every rank).

The handler only sets a flag. Task loops (:func:`glasshpc.stages.run_tasks`) look at it after each
finished and committed task and stop taking new ones; the next collective stage boundary
(:meth:`glasshpc.store.Store.sync`) agrees across ranks with one Allreduce and raises
:class:`Interrupted` on every rank at once, so no rank is left waiting in a collective and every
finished task is already on disk. ``python -m glasshpc.run CONFIG --resume`` continues the run.
A second SIGINT (Ctrl-C pressed again, more than 2 s later) stops the rank at once; finished tasks
are still on disk. Repeated SIGTERMs (launchers may deliver one per process tree) are ignored.

Fault injection for the tests (real signals, real processes): ``GLASSHPC_KILL_AFTER=STAGE:K[:RANK]``
makes the rank (every rank, or only RANK) send itself SIGKILL right after committing its K-th task
of stage STAGE — a crash at a known point, with nothing cleaned up. ``finalize:STEP`` kills rank 0
at a step of the store's finalisation (``assembled``, ``synced``, ``renamed``, ``dir_synced``,
``trashed``; see :meth:`glasshpc.store.Store.finalize`).
``GLASSHPC_SLOW_TASK=STAGE:TASK:SECONDS`` makes task TASK (its first identity number) of STAGE
sleep SECONDS before it runs, wherever it runs: deliberately unequal tasks for scheduling tests.
"""
import os
import signal
import time

EXIT_INTERRUPTED = 3   # exit code of a run stopped by SIGTERM and resumable with --resume

_flag = {"stop": False, "signal": None, "at": 0.0}


class Interrupted(Exception):
    """Raised collectively at a stage boundary after a SIGTERM/SIGINT reached any rank."""


def _handler(signum, frame):  # noqa: ARG001 (signal handler signature)
    if _flag["stop"]:
        if signum == signal.SIGINT and time.monotonic() - _flag["at"] > 2.0:
            signal.signal(signum, signal.SIG_DFL)     # Ctrl-C twice: stop now
            os.kill(os.getpid(), signum)
        return
    _flag["stop"] = True
    _flag["signal"] = signal.Signals(signum).name
    _flag["at"] = time.monotonic()


def install(signals=(signal.SIGTERM, signal.SIGINT)):
    """Route ``signals`` to the stop flag (main thread only; returns the previous handlers)."""
    return {s: signal.signal(s, _handler) for s in signals}


def restore(previous):
    for s, h in previous.items():
        signal.signal(s, h)


def requested():
    """True once a stop signal reached this rank."""
    return _flag["stop"]


def signal_name():
    return _flag["signal"] or "SIGTERM"


def reset():
    _flag["stop"] = False
    _flag["signal"] = None


def check(comm):
    """Collective: raise :class:`Interrupted` on every rank if any rank was asked to stop."""
    from mpi4py import MPI
    if comm.allreduce(int(_flag["stop"]), op=MPI.MAX):
        raise Interrupted(signal_name())


def fault_point(stage, n_committed, rank):
    """Test hook (see module docstring): SIGKILL this process at the configured commit
    (``n_committed``: the count of committed tasks, or a finalisation step name)."""
    spec = os.environ.get("GLASSHPC_KILL_AFTER")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage or len(parts) < 2 or parts[1] != str(n_committed):
        return
    if len(parts) > 2 and int(parts[2]) != rank:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def slow_point(stage, task):
    """Test hook (see module docstring): delay the configured task."""
    spec = os.environ.get("GLASSHPC_SLOW_TASK")
    if not spec:
        return
    name, ident, seconds = spec.rsplit(":", 2)
    first = task[0] if isinstance(task, (tuple, list)) else task
    if name == stage and int(ident) == int(first):
        import time
        time.sleep(float(seconds))
