"""The HDF5 store of a run: one output file, written in parallel, that appears only when complete.

While a run is in progress everything lives in ``<output>.partial/``:

* **mpio mode** (h5py built with MPI): one file ``data.h5`` opened by all ranks with
  ``driver='mpio'``; datasets are created collectively from the declared layout and each rank writes
  the slots of its own tasks.
* **shard mode** (serial h5py, e.g. the pip wheel): between two :meth:`Store.sync` calls (a
  *segment*, i.e. a stage) each rank writes its own ``shard-rRRRRR-sSS.h5``; a shard is never opened
  for writing again once its segment ends, so any rank can read any slot of an earlier segment
  without racing a writer (HDF5 file locks). Slots are recorded with the shard that holds them.
  :meth:`Store.finalize` copies every slot into the final file and refuses to finish if a declared
  slot or a shard is missing.

Finalisation writes ``<output>.tmp`` and renames it to ``<output>`` (atomic on POSIX), so a file
under the final name is always complete. Reduced LJ units are used for every stored quantity.
"""
import os
import shutil

import h5py
import numpy as np

from .parallel import MPI


def h5py_has_mpi():
    """True when h5py was built against parallel HDF5 (``driver='mpio'`` available)."""
    return bool(h5py.get_config().mpi)


class Store:
    """Parallel working storage with a declared layout.

    Parameters
    ----------
    path : str, final output file name
    ctx : glasshpc.parallel.Context
    layout : dict name → (shape tuple, numpy dtype); ``shape[:k]`` indexes task slots
    mode : 'auto' | 'mpio' | 'shards'

    Raises FileExistsError when ``path`` or its ``.partial`` folder already exist (nothing is
    overwritten).
    """

    def __init__(self, path, ctx, layout, mode="auto"):
        self.path = os.path.abspath(path)
        self.ctx = ctx
        self.layout = {k: (tuple(int(x) for x in s), np.dtype(d)) for k, (s, d) in layout.items()}
        if mode == "auto":
            mode = "mpio" if h5py_has_mpi() else "shards"
        self.mode = mode
        self.partial = self.path + ".partial"
        err = None
        if ctx.root:
            if os.path.exists(self.path):
                err = f"output {self.path} exists; move it away or choose another output path"
            elif os.path.exists(self.partial):
                err = (f"{self.partial} exists: an earlier run did not finish; delete it to "
                       f"start again")
            else:
                os.makedirs(self.partial)
        err = ctx.comm.bcast(err, root=0)
        if err:
            raise FileExistsError(err)
        self.owner = {name: {} for name in self.layout}   # name → {slot: (rank, segment)}
        self.segment = 0
        self._new = {name: {} for name in self.layout}
        self._readers = {}
        self._fh = None
        if self.mode == "mpio":
            self._fh = h5py.File(os.path.join(self.partial, "data.h5"), "w", driver="mpio",
                                 comm=ctx.comm)
            for name, (shape, dtype) in self.layout.items():
                self._fh.create_dataset(name, shape=shape, dtype=dtype,
                                        chunks=_chunks(shape, dtype), fillvalue=_fill(dtype))

    # -- shard helpers -------------------------------------------------------------------------
    def _shard_path(self, shard):
        rank, segment = shard
        return os.path.join(self.partial, f"shard-r{rank:05d}-s{segment:02d}.h5")

    def _open_shard(self):
        if self._fh is None:
            self._fh = h5py.File(self._shard_path((self.ctx.rank, self.segment)), "w")

    def _dataset(self, name):
        shape, dtype = self.layout[name]
        if name not in self._fh:
            return self._fh.create_dataset(name, shape=shape, dtype=dtype,
                                           chunks=_chunks(shape, dtype), fillvalue=_fill(dtype))
        return self._fh[name]

    # -- public --------------------------------------------------------------------------------
    def write(self, name, slot, array):
        """Write ``array`` to ``name[slot]`` (slot: tuple of leading indices). Independent I/O."""
        slot = tuple(int(i) for i in np.atleast_1d(slot))
        if self.mode == "shards":
            self._open_shard()
        self._dataset(name)[slot] = array
        self._new[name][slot] = (self.ctx.rank, self.segment)

    def flush(self):
        if self._fh is not None:
            self._fh.flush()

    def sync(self):
        """Collective stage boundary: every slot written anywhere becomes readable everywhere."""
        if self.mode == "mpio":
            self._fh.flush()
        else:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            for fh in self._readers.values():
                fh.close()
            self._readers = {}
        gathered = self.ctx.comm.allgather(self._new)
        for part in gathered:
            for name, slots in part.items():
                self.owner[name].update(slots)
        self._new = {name: {} for name in self.layout}
        self.segment += 1
        self.ctx.comm.Barrier()

    def read(self, name, slot=()):
        """Read ``name[slot]`` written before the last :meth:`sync` (KeyError if never written)."""
        slot = tuple(int(i) for i in slot)
        if self.mode == "mpio":
            return self._fh[name][slot] if slot else self._fh[name][()]
        if slot not in self.owner[name]:
            raise KeyError(f"{name}{list(slot)} was never written")
        shard = self.owner[name][slot]
        fh = self._readers.get(shard)
        if fh is None:
            fh = self._readers[shard] = h5py.File(self._shard_path(shard), "r")
        return fh[name][slot]

    def missing(self, name, n_lead):
        """Slots (tuples over the first ``n_lead`` axes) of ``name`` never written."""
        shape = self.layout[name][0][:n_lead]
        return [s for s in np.ndindex(*shape) if s not in self.owner[name]]

    def finalize(self, write_extra):
        """Collective. Check completeness, copy into ``<output>.tmp`` (shard mode), call
        ``write_extra(h5file)`` on rank 0 to add results and provenance, rename to the output.

        Raises RuntimeError (and leaves ``.partial`` in place) if a slot or shard is missing."""
        self.sync()
        missing = {}
        for name, (shape, _) in self.layout.items():
            n_lead = max(len(k) for k in self.owner[name]) if self.owner[name] else 1
            m = self.missing(name, n_lead)
            if m:
                missing[name] = m[:5]
        if missing:
            raise RuntimeError(f"incomplete run, nothing finalised; missing slots: {missing}")
        tmp = self.path + ".tmp"
        if self.mode == "mpio":
            self._fh.close()
            self._fh = None
            self.ctx.comm.Barrier()
            if self.ctx.root:
                os.replace(os.path.join(self.partial, "data.h5"), tmp)
        err = None
        if self.ctx.root:
            try:
                with h5py.File(tmp, "a" if self.mode == "mpio" else "w") as out:
                    if self.mode == "shards":
                        self._copy_shards(out)
                    write_extra(out)
                os.replace(tmp, self.path)
                shutil.rmtree(self.partial, ignore_errors=True)
            except Exception as exc:  # report on every rank, keep the partial data
                err = f"finalisation failed: {exc!r}"
        err = self.ctx.comm.bcast(err, root=0)
        if err:
            raise RuntimeError(err)

    def _copy_shards(self, out):
        shards = sorted({r for slots in self.owner.values() for r in slots.values()})
        for r in shards:
            if not os.path.exists(self._shard_path(r)):
                raise RuntimeError(f"shard {self._shard_path(r)} is missing")
        handles = {r: h5py.File(self._shard_path(r), "r") for r in shards}
        try:
            for name, (shape, dtype) in self.layout.items():
                ds = out.create_dataset(name, shape=shape, dtype=dtype,
                                        chunks=_chunks(shape, dtype), fillvalue=_fill(dtype))
                for slot, r in sorted(self.owner[name].items()):
                    ds[slot] = handles[r][name][slot]
        finally:
            for fh in handles.values():
                fh.close()

    def close(self):
        for fh in self._readers.values():
            fh.close()
        self._readers = {}
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fill(dtype):
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _chunks(shape, dtype, target=1 << 20):
    """Chunk = trailing axes whole, leading axes 1, split further only if above ~1 MiB."""
    if not shape:
        return None
    chunk = list(shape)
    i = 0
    while np.prod(chunk) * np.dtype(dtype).itemsize > target and i < len(chunk) - 1:
        chunk[i] = 1
        i += 1
    return tuple(max(1, c) for c in chunk)
