"""Graceful stop on SIGTERM (what SLURM sends before killing a job at its time limit).

The handler only sets a flag. Task loops (:func:`glasshpc.stages.run_tasks`) look at it after each
finished and committed task and stop taking new ones; the next collective stage boundary
(:meth:`glasshpc.store.Store.sync`) agrees across ranks with one Allreduce and raises
:class:`Interrupted` on every rank at once, so no rank is left waiting in a collective and every
finished task is already on disk. ``python -m glasshpc.run CONFIG --resume`` continues the run.

Fault injection for the tests (real signals, real processes): ``GLASSHPC_KILL_AFTER=STAGE:K[:RANK]``
makes the rank (every rank, or only RANK) send itself SIGKILL right after committing its K-th task
of stage STAGE — a crash at a known point, with nothing cleaned up.
"""
import os
import signal

EXIT_INTERRUPTED = 3   # exit code of a run stopped by SIGTERM and resumable with --resume

_flag = {"stop": False, "signal": None}


class Interrupted(Exception):
    """Raised collectively at a stage boundary after a SIGTERM/SIGINT reached any rank."""


def _handler(signum, frame):  # noqa: ARG001 (signal handler signature)
    _flag["stop"] = True
    _flag["signal"] = signal.Signals(signum).name


def install(signals=(signal.SIGTERM,)):
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
    """Test hook (see module docstring): SIGKILL this process at the configured commit."""
    spec = os.environ.get("GLASSHPC_KILL_AFTER")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage or int(parts[1]) != n_committed:
        return
    if len(parts) > 2 and int(parts[2]) != rank:
        return
    os.kill(os.getpid(), signal.SIGKILL)
