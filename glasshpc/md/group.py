"""Engine groups: K ranks sharing one LAMMPS instance (``parallel.engine_ranks``).

The ranks of the run are split into groups of K consecutive ranks (``MPI_Comm_split``); ranks
beyond the last whole group sit the stage out, so every task runs on exactly K ranks and its result
is a function of K, never of the launch size. One :class:`GroupLammpsEngine` per group runs LAMMPS
with domain decomposition on the group's communicator; every rank of the group issues the same
commands with the same numbers (every random stream comes from the task identity, so they agree
without communication). Per-atom arrays are read with ``gather_atoms`` (ordered by atom id, the
same on every rank of the group) instead of the local rows a single-rank instance reads.

Reduced LJ units of species A.
"""
import ctypes

import numpy as np

from ..parallel import MPI
from .lammps import LammpsEngine


class EngineGroups:
    """The split of ``ctx.comm`` into groups of ``k`` ranks. Collective (constructor, free).

    Attributes: ``k``; ``comm`` (this rank's group communicator, None for a rank left out);
    ``leader`` (True on rank 0 of a group: it takes the tasks and writes the results);
    ``count`` (number of groups). Raises ValueError when the run has fewer than ``k`` ranks."""

    def __init__(self, ctx, k):
        self.k = int(k)
        if ctx.size < self.k:
            raise ValueError(f"parallel.engine_ranks = {self.k} needs at least {self.k} ranks, "
                             f"the run has {ctx.size}")
        self.count = ctx.size // self.k
        inside = ctx.rank < self.count * self.k
        color = ctx.rank // self.k if inside else MPI.UNDEFINED
        comm = ctx.comm.Split(color, ctx.rank)
        self.comm = comm if comm != MPI.COMM_NULL else None
        self.leader = self.comm is not None and self.comm.Get_rank() == 0

    def free(self):
        if self.comm is not None:
            self.comm.Free()
            self.comm = None


class GroupLammpsEngine(LammpsEngine):
    """A :class:`LammpsEngine` on a group communicator (domain decomposition over its ranks).

    Same interface; ``positions``, ``velocities`` and ``forces`` gather every atom (ordered by
    particle index) on every rank of the group."""

    def __init__(self, model, timestep, skin, comm, suffix="none"):
        super().__init__(model, timestep, skin, comm=comm, suffix=suffix)

    def prepare_snapshot(self, *args, **kwargs):
        """As :meth:`LammpsEngine.prepare_snapshot`, on a freshly built system: with domain
        decomposition the order of the atoms on each rank depends on where earlier tasks moved
        them, and that order sets the order of the force sums, so reusing the atoms would make a
        task's result depend on which tasks its group ran before."""
        self._signature = None
        return super().prepare_snapshot(*args, **kwargs)

    def _gather(self, name, count):
        n = self.lmp.get_natoms()
        data = self.lmp.gather_atoms(name, 1, count)
        arr = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_double)),
                                    shape=(n * count,))
        return arr.reshape(n, count).copy()

    def positions(self):
        return self._gather("x", 3)

    def velocities(self):
        return self._gather("v", 3)

    def forces(self):
        return self._gather("f", 3)

    def unwrapped_positions(self):  # pragma: no cover - not used by group stages
        raise NotImplementedError("engine groups run the snapshot stage only")

    def energies(self):  # pragma: no cover - not used by group stages
        raise NotImplementedError("engine groups run the snapshot stage only")
