"""The HDF5 store of a run: one output file, written in parallel, that appears only when complete,
and a journal of finished tasks that lets a killed run resume without redoing them.

While a run is in progress everything lives in ``<output>.partial/``:

* ``lock`` — held by rank 0 for the run's whole life (:mod:`glasshpc.runlock`): one writer per
  output; a second run, resume or overwrite is refused naming the holder. The folder is built as
  ``<output>.partial.new-PID`` (locked, with its ``run.json``) and renamed into place, so it never
  exists unlocked and half-made.
* ``run.json`` — format tag, run id, attempt counter, store mode, the layout and the normalised
  config with its SHA-256 (a resume with a different config is refused, naming the keys that
  differ).
* **shard mode** (serial h5py, e.g. the pip wheel): each rank appends the raw bytes of the slots it
  writes to its own ``data-aAAA-rRRRRR.bin`` (AAA = attempt). Bytes once written are never
  modified, so a SIGKILL at any moment cannot damage finished work; HDF5 is written only at
  finalisation. (HDF5 files killed while open can have inconsistent metadata, which is why the
  working shards are plain append-only files.)
* **mpio mode** (h5py built with MPI): one ``data.h5`` opened by all ranks with ``driver='mpio'``;
  datasets are created collectively from the declared layout (parallel HDF5 allocates their space
  at creation, so later task writes touch raw data only) and each rank writes its own slots.
  Finalisation adds the results to a copy of it, never to ``data.h5`` itself.
* **transient** datasets (``Store(transient=...)``, working data that the output does not keep)
  always go to the per-rank ``data-*.bin``, in both modes.
* ``journal-aAAA-rRRRRR.jsonl`` — one line per finished task, appended by :meth:`Store.commit`
  **after** the task's data is flushed and fsync'ed: stage, task identity and for every slot its
  location and CRC-32, and a CRC-32 of all of that. A task is finished iff its line is complete. A
  torn last line (kill during the append) is ignored; a complete line that fails its checksum, points
  outside its rank's data file or at a slot outside the layout, or whose data is missing or fails
  its checksum cannot come from a kill and is refused as corruption, naming the file and line.

Finalisation (:meth:`Store.finalize`) checks that every declared slot was written, builds the final
file inside ``.partial/``, fsyncs it, renames it to ``<output>`` (atomic on POSIX), fsyncs the
directory, then retires the folder; a file under the final name is always complete. Reduced LJ
units for every stored quantity (the store itself is unit-agnostic).
"""
import errno
import gc
import glob
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import zlib

import h5py
import numpy as np

from . import interrupt
from .parallel import MPI  # noqa: F401  (mpi4py imported before h5py opens an mpio file)
from .runlock import LOCK_NAME, LockHeld, RunLock

FORMAT = "glasshpc-partial-2"   # 2: run_id, lock file, checksummed journal records


class ResumeError(RuntimeError):
    """``--resume`` (or a fresh start) refused: the message names the file and the problem."""


class AlreadyFinished(RuntimeError):
    """``--resume`` of a run whose output is already complete (exit 0: nothing left to do)."""


class DiskFull(OSError):
    """No space left while writing ``where``; ``needed`` bytes are still to be written.

    ``collective``: raised on every rank at once (finalisation) rather than on one rank only."""

    def __init__(self, where, needed, collective=False):
        self.where, self.needed, self.collective = where, int(needed), collective
        free = _free_bytes(where)
        super().__init__(errno.ENOSPC, f"disk full writing {where}: the rest of the run needs "
                                       f"≈ {_gib(needed)} there (free now: {_gib(free)}); free "
                                       "space, then continue with --resume")

    def __reduce__(self):
        return (DiskFull, (self.where, self.needed, self.collective))


# refusals that cross ranks by name (Store.__init__): input errors, exit 2 — or 0 (AlreadyFinished)
_REFUSALS = (FileExistsError, ResumeError, PermissionError, LockHeld, AlreadyFinished)


def check_output_path(path):
    """The output must be a file name in an existing, writable directory (PermissionError or
    FileExistsError naming it otherwise); called before any plan or work."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise PermissionError(f"output directory {parent} does not exist")
    if not _writable(parent):
        raise PermissionError(f"output directory {parent} is not writable")
    if os.path.isdir(path):
        raise FileExistsError(f"output {path} is a directory; 'output' must name a file "
                              "(e.g. run.h5) in an existing directory")


def h5py_has_mpi():
    """True when h5py was built against parallel HDF5 (``driver='mpio'`` available)."""
    return bool(h5py.get_config().mpi)


MODE_ENV = "GLASSHPC_STORE_MODE"


class StoreModeError(ValueError):
    """Unknown store mode, or 'mpio' without a parallel h5py (refused input)."""


def resolve_mode(mode="auto"):
    """The store mode a run uses: ``mode`` unless 'auto'; then the environment variable
    ``GLASSHPC_STORE_MODE`` (shards | mpio | auto) if set, e.g. to force shards with a parallel
    h5py; 'auto' = 'mpio' when h5py has MPI, else 'shards'. Raises :class:`StoreModeError` for an
    unknown mode or for 'mpio' without a parallel h5py."""
    if mode == "auto":
        mode = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
        if mode not in ("auto", "mpio", "shards"):
            raise StoreModeError(f"{MODE_ENV}={os.environ[MODE_ENV]!r}: allowed values are "
                                 "shards, mpio, auto")
    if mode == "auto":
        mode = "mpio" if h5py_has_mpi() else "shards"
    if mode not in ("mpio", "shards"):
        raise StoreModeError(f"store mode must be auto, mpio or shards, got {mode!r}")
    if mode == "mpio" and not h5py_has_mpi():
        raise StoreModeError("store mode 'mpio' needs h5py built against parallel HDF5 "
                             "(h5py.get_config().mpi is False); see README 'Parallel HDF5'")
    return mode


def config_fingerprint(normalised):
    """SHA-256 hex digest of a JSON-able normalised config (key order irrelevant)."""
    text = json.dumps(normalised, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def task_key(task):
    """Hashable, JSON-round-trippable identity of a task: a tuple of ints/strings."""
    items = task if isinstance(task, (tuple, list)) else (task,)
    return tuple(int(t) if isinstance(t, (int, np.integer)) else str(t) for t in items)


class Store:
    """Parallel working storage with a declared layout, a task journal and resume.

    Parameters
    ----------
    path : str, final output file name
    ctx : glasshpc.parallel.Context
    layout : dict name → (shape tuple, numpy dtype); ``shape[:k]`` indexes task slots
    mode : 'auto' | 'mpio' | 'shards' (:func:`resolve_mode`; 'auto' honours GLASSHPC_STORE_MODE)
    resume : continue the run recorded in ``<path>.partial/`` (finished tasks are kept)
    overwrite : discard an existing ``.partial`` and replace an existing output when finished
    config : JSON-able normalised config; its SHA-256 is stored and checked on resume
    transient : layout names that are working data only: journaled and resumable like the rest,
        always kept in the per-rank ``data-*.bin`` (also in mpio mode), never put into the output
        (e.g. the per-replica sums of ``iso.store_displacements: false``)

    Raises (collectively, before anything is created or changed) FileExistsError when the output or
    ``.partial`` exist and neither ``resume`` nor ``overwrite`` is given; :class:`ResumeError` when
    there is nothing to resume, the folder is foreign or corrupted, or ``config`` differs;
    PermissionError when the output directory is missing or not writable.
    """

    def __init__(self, path, ctx, layout, mode="auto", resume=False, overwrite=False,
                 config=None, transient=()):
        self.path = os.path.abspath(path)
        self.ctx = ctx
        self.layout = {k: (tuple(int(x) for x in s), np.dtype(d)) for k, (s, d) in layout.items()}
        self.transient = frozenset(transient)
        if not self.transient <= set(self.layout):
            raise ValueError(f"transient datasets {sorted(self.transient - set(self.layout))} "
                             "are not in the layout")
        self.mode = resolve_mode(mode)
        self.partial = self.path + ".partial"
        # JSON round trip: tuples become lists, so a stored config compares equal to a new one
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self._lock = None
        res = None
        if ctx.root:
            try:
                res = ("ok", self._prepare(resume, overwrite))
            except _REFUSALS as exc:
                res = (type(exc).__name__, str(exc))
            except OSError as exc:
                res = ("PermissionError", f"cannot create {self.partial}: {exc}")
        kind, value = ctx.comm.bcast(res, root=0)
        if kind != "ok":
            raise {c.__name__: c for c in _REFUSALS}[kind](value)
        self.attempt, record = value
        self.owner = {name: {} for name in self.layout}   # name → {slot: location}
        self.completed_tasks = {}                         # stage → set of task keys
        self.segment = 0
        self._new = {name: {} for name in self.layout}
        self._pending = []                                # (name, slot, location) not committed
        self._fds = {}
        self._fh = None
        self._mpio_fd = None
        self._data = None
        self._journal = None
        tag = f"a{self.attempt:03d}-r{ctx.rank:05d}"
        self._journal_path = os.path.join(self.partial, f"journal-{tag}.jsonl")
        self._data_name = f"data-{tag}.bin"
        if self.mode == "mpio":
            h5 = os.path.join(self.partial, "data.h5")
            fresh = not os.path.exists(h5) if ctx.root else None
            fresh = ctx.comm.bcast(fresh, root=0)
            self._fh = h5py.File(h5, "w" if fresh else "r+", driver="mpio", comm=ctx.comm)
            if fresh:
                for name, (shape, dtype) in self._output_layout().items():
                    self._fh.create_dataset(name, shape=shape, dtype=dtype,
                                            chunks=_chunks(shape, dtype), fillvalue=_fill(dtype))
                # metadata on disk now: a rank killed before the first sync leaves a readable file
                # (space is allocated at creation, so task writes never change metadata)
                self._fh.flush()
            # fsync'ed at commit: parallel HDF5 bypasses its chunk cache when writing, so a task's
            # raw data has gone to the file (MPI-IO) when write() returns
            self._mpio_fd = os.open(h5, os.O_RDONLY)
        if resume:
            self._load_journals()
            if ctx.root:   # only now, after every check passed, does the folder change
                _atomic_json(os.path.join(self.partial, "run.json"), record)
                self._lock.write_holder()
            ctx.comm.Barrier()
        self._journal = open(self._journal_path, "a", encoding="utf-8")

    # -- opening -------------------------------------------------------------------------------
    def _prepare(self, resume, overwrite):
        """Rank 0: take the output's lock, make every check, then create ``.partial`` (fresh
        start, atomically: built as ``.partial.new-PID`` and renamed) or reopen it (resume).
        Returns (attempt, run record); on resume the caller writes the record once the journals
        are verified. Nothing is created or changed when this raises (a lock file created for the
        check is removed again)."""
        check_output_path(self.path)
        parent = os.path.dirname(self.path)
        _clean_leftovers(self.partial)
        lock = created = None
        if os.path.isdir(self.partial):
            had_lock_file = os.path.exists(os.path.join(self.partial, LOCK_NAME))
            lock = RunLock.acquire(self.partial, create=resume or overwrite)  # LockHeld if live
            created = lock is not None and not had_lock_file
        try:
            if lock is not None or os.path.isdir(self.partial):
                if self._finished_remnant():
                    # a finished run was killed after renaming the output, before its cleanup
                    _discard(self.partial, lock)
                    lock = created = None
                    if resume:
                        raise AlreadyFinished(f"output {self.path} is complete (its run had "
                                              "finished; the leftover .partial/ was removed)")
            if resume:
                if os.path.exists(self.path) and not os.path.isdir(self.partial) \
                        and self._matching_output():
                    raise AlreadyFinished(f"output {self.path} is complete: it was written by "
                                          "this config; nothing to resume")
                attempt, record = self._check_resume()
                self._lock = lock
                return attempt, record
            if not overwrite:
                _refuse_fresh_start(self.path, self.partial)
        except BaseException:
            if lock is not None:
                if created:
                    _remove_quietly(os.path.join(self.partial, LOCK_NAME))
                lock.release()
            raise
        # fresh start: the new folder is complete and locked before it appears under its name
        new = f"{self.partial}.new-{os.getpid()}"
        os.makedirs(new)
        new_lock = RunLock.acquire(new)
        new_lock.write_holder()
        # an existing output stays valid until the new one replaces it atomically
        record = {"format": FORMAT, "attempt": 1, "mode": self.mode, "run_id": uuid.uuid4().hex,
                  "config_sha256": config_fingerprint(self.config), "config": self.config,
                  "layout": _layout_json(self.layout), "replaces_output": os.path.exists(self.path)}
        _atomic_json(os.path.join(new, "run.json"), record)
        _fsync_dir(new)
        if lock is not None or os.path.lexists(self.partial):   # --overwrite: retire the old one
            if os.path.isdir(self.partial):
                _discard(self.partial, lock)
            else:
                os.remove(self.partial)
        try:
            os.rename(new, self.partial)
        except OSError:    # another run created .partial between our check and now
            new_lock.release()
            shutil.rmtree(new, ignore_errors=True)
            other = RunLock.acquire(self.partial, create=False)
            if other is not None:
                other.release()
            raise FileExistsError(f"{self.partial} was created by another run just now; "
                                  "only one run may write an output") from None
        new_lock.moved(self.partial)
        _fsync_dir(parent)
        self._lock = new_lock
        return 1, record

    def _check_resume(self):
        """Rank 0, locked: the checks of ``--resume`` on ``.partial/run.json``. Returns
        (attempt, updated run record)."""
        run_json = os.path.join(self.partial, "run.json")
        if not os.path.isdir(self.partial):
            if os.path.exists(self.partial):
                raise ResumeError(f"cannot resume: {self.partial} is a file, not the folder of "
                                  "an unfinished glasshpc run")
            if os.path.exists(self.path):
                raise FileExistsError(_describe_existing(self.path) + "; nothing to resume")
            raise ResumeError(f"cannot resume: {self.partial} does not exist (no unfinished "
                              "run for this output); start without --resume")
        if not os.path.exists(run_json):
            raise ResumeError(f"cannot resume: {self.partial} has no run.json, so it was not "
                              "written by glasshpc (or is left over from a finished run); "
                              "delete it or use --overwrite")
        try:
            with open(run_json, encoding="utf-8") as fh:
                run = json.load(fh)
            if not isinstance(run, dict) or run.get("format") != FORMAT:
                tag = run.get("format") if isinstance(run, dict) else None
                if isinstance(tag, str) and tag.startswith("glasshpc-partial-"):
                    raise ResumeError(f"cannot resume: {self.partial} was written by another "
                                      f"version of glasshpc (format {tag[:40]!r}, this version "
                                      f"reads {FORMAT!r}); finish it with that version, or "
                                      "start again with --overwrite")
                raise ValueError(f"format tag {str(tag)[:40]!r}")
            attempt = int(run["attempt"]) + 1
            old_mode, old_hash = run["mode"], run["config_sha256"]
            old_layout = run["layout"]
            run_id = str(run["run_id"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ResumeError(f"cannot resume: {run_json} is corrupted or not a glasshpc run "
                              f"record ({str(exc)[:200]}); delete {self.partial} or use "
                              "--overwrite") from None
        if self.config is not None and old_hash != config_fingerprint(self.config):
            diff = _diff(run.get("config", {}), self.config)
            raise ResumeError("cannot resume with a different config: "
                              + (", ".join(diff[:6]) if diff else "config hash differs")
                              + f" (run in {self.partial}); use the original config, or "
                              "--overwrite to start again")
        if old_layout != _layout_json(self.layout):
            raise ResumeError(f"cannot resume: the dataset layout recorded in {run_json} "
                              "differs from this version of glasshpc")
        if old_mode != self.mode:
            raise ResumeError(f"cannot resume: the run was written in '{old_mode}' mode but "
                              f"this h5py gives '{self.mode}'")
        if os.path.exists(self.path) and not run.get("replaces_output"):
            raise FileExistsError(_describe_existing(self.path) + f" next to {self.partial}; "
                                  "move one of them away")
        record = {"format": FORMAT, "attempt": attempt, "mode": self.mode, "run_id": run_id,
                  "config_sha256": config_fingerprint(self.config), "config": self.config,
                  "layout": _layout_json(self.layout),
                  "replaces_output": bool(run.get("replaces_output"))}
        return attempt, record

    def _output_attrs(self):
        """(run_id, config_sha256) recorded in the output file, or (None, None)."""
        try:
            with h5py.File(self.path, "r") as fh:
                return (_attr_str(fh.attrs.get("run_id")),
                        _attr_str(fh.attrs.get("config_sha256")))
        except (OSError, ValueError):
            return None, None

    def _finished_remnant(self):
        """True if ``.partial/`` belongs to the run that wrote the (complete) output."""
        if not os.path.isfile(self.path):
            return False
        try:
            with open(os.path.join(self.partial, "run.json"), encoding="utf-8") as fh:
                run_id = json.load(fh).get("run_id")
        except (OSError, ValueError, AttributeError):
            return False
        return run_id is not None and self._output_attrs()[0] == run_id

    def _matching_output(self):
        """True if the output was written by a run of this very config."""
        return self._output_attrs()[1] == config_fingerprint(self.config)

    def _load_journals(self):
        """Collective: read every earlier journal, verify each slot's checksum (ranks share the
        work), and rebuild the slot owners and the finished tasks. Raises ResumeError on
        corruption (a complete journal line whose data is missing or differs)."""
        names = None
        if self.ctx.root:
            names = sorted(n for n in os.listdir(self.partial)
                           if n.startswith("journal-") and n.endswith(".jsonl"))
        names = self.ctx.comm.bcast(names, root=0)
        records, error = [], None
        for name in names[self.ctx.rank::self.ctx.size]:
            try:
                records.extend(self._verify_journal(name))
            except ResumeError as exc:
                error = str(exc)
                break
        gathered = self.ctx.comm.allgather((records, error))
        errors = [e for _, e in gathered if e]
        if errors:
            self.close()
            raise ResumeError(errors[0])
        allrec = sorted((r for part, _ in gathered for r in part), key=lambda r: r[0])
        for _, stage, task, slots in allrec:
            for name, slot, loc in slots:
                self.owner[name][slot] = loc
            self.completed_tasks.setdefault(stage, set()).add(task)

    def _verify_journal(self, name):
        path = os.path.join(self.partial, name)
        tag = name[len("journal-"):-len(".jsonl")]
        attempt = int(tag.split("-")[0][1:])
        data_name = f"data-{tag}.bin"
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
        out = []
        # the last element is b"" after a final newline, or a torn line left by a kill: skip it
        for lineno, raw in enumerate(lines[:-1]):
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict) or set(rec) != {"stage", "task", "slots", "crc"}:
                    raise ValueError("not a journal record")
                if _record_crc(rec) != rec["crc"]:
                    raise ValueError("the line fails its checksum (its stage, task, dataset "
                                     "names or slot locations were changed)")
                stage, task = rec["stage"], task_key(rec["task"])
                slots = []
                for name_, slot, loc, crc in rec["slots"]:
                    if name_ not in self.layout:
                        raise KeyError(f"unknown dataset {str(name_)[:80]!r}")
                    slot = tuple(int(i) for i in slot)
                    shape = self.layout[name_][0]
                    if len(slot) >= len(shape) + 1 or any(not 0 <= i < n
                                                         for i, n in zip(slot, shape)):
                        raise ValueError(f"slot {list(slot)} is outside {name_} {list(shape)}")
                    if loc != "mpio":
                        if not (isinstance(loc, list) and len(loc) == 3 and loc[0] == data_name):
                            raise ValueError(f"{name_}{list(slot)}: location {str(loc)[:80]} is "
                                             f"not in this rank's data file {data_name}")
                        loc = tuple(loc)
                    data = self._read_loc(name_, slot, loc)
                    if zlib.crc32(np.ascontiguousarray(data).tobytes()) != crc:
                        raise ValueError(f"{name_}{list(slot)} fails its checksum")
                    slots.append((name_, slot, loc))
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise ResumeError(f"cannot resume: {path} line {lineno + 1}: {str(exc)[:300]} — "
                                  "the record of a finished task is damaged; delete "
                                  f"{name} to recompute that rank's tasks, or start again with "
                                  "--overwrite") from None
            out.append(((attempt, name, lineno), stage, task, slots))
        return out

    # -- locations -----------------------------------------------------------------------------
    def _slot_shape(self, name, slot):
        return self.layout[name][0][len(slot):]

    def _read_loc(self, name, slot, loc, raw=False):
        """The slot's data (array; with ``raw`` a shard slot's bytes, size checked)."""
        shape, dtype = self._slot_shape(name, slot), self.layout[name][1]
        if loc == "mpio":
            return self._fh[name][slot]
        fname, offset, nbytes = loc
        fd = self._fds.get(fname)
        if fd is None:
            try:
                fd = self._fds[fname] = os.open(os.path.join(self.partial, fname), os.O_RDONLY)
            except FileNotFoundError:
                raise ValueError(f"data file {os.path.join(self.partial, fname)} is missing") \
                    from None
        buf = os.pread(fd, int(nbytes), int(offset))
        if len(buf) != nbytes or nbytes != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{name}{list(slot)}: {fname} holds {len(buf)} of {nbytes} bytes")
        if raw:
            return buf
        return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()

    # -- public --------------------------------------------------------------------------------
    def write(self, name, slot, array):
        """Write ``array`` to ``name[slot]`` (slot: tuple of leading indices). Independent I/O;
        durable once the task is committed (:meth:`commit`). Raises :class:`DiskFull`."""
        slot = tuple(int(i) for i in np.atleast_1d(slot))
        shape, dtype = self._slot_shape(name, slot), self.layout[name][1]
        arr = np.ascontiguousarray(np.broadcast_to(np.asarray(array, dtype=dtype), shape))
        try:
            if self.mode == "mpio" and name not in self.transient:
                self._fh[name][slot] = arr
                loc = "mpio"
            else:
                if self._data is None:
                    self._data = open(os.path.join(self.partial, self._data_name), "ab")
                offset = self._data.tell()
                self._data.write(arr.tobytes())
                loc = (self._data_name, offset, arr.nbytes)
        except OSError as exc:
            self._raise_if_full(exc, self.partial)
            raise
        self._pending.append((name, slot, loc, zlib.crc32(arr.tobytes())))

    def commit(self, stage, task):
        """Record that ``task`` of ``stage`` finished: flush and fsync its data, then append and
        fsync one journal line whose checksum covers the stage, the task identity, the dataset
        names, slots and locations, and every slot's CRC-32. After this returns, a kill cannot lose
        the task. Raises :class:`DiskFull` (the task then counts as unfinished)."""
        rec = {"stage": stage, "task": list(task_key(task)),
               "slots": [[n, list(s), loc, crc] for n, s, loc, crc in self._pending]}
        rec["crc"] = _record_crc(rec)
        try:
            if self._data is not None:
                self._data.flush()
                os.fsync(self._data.fileno())
            if self._mpio_fd is not None and self._pending:
                os.fsync(self._mpio_fd)
            self._journal.write(json.dumps(rec) + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except OSError as exc:
            self._raise_if_full(exc, self.partial)
            raise
        if self._lock is not None:
            self._lock.heartbeat()
        for name, slot, loc, _ in self._pending:
            self._new[name][slot] = loc
        self._pending = []
        self.completed_tasks.setdefault(stage, set()).add(task_key(task))

    def bytes_remaining(self):
        """Bytes the rest of the run still has to write here: the slots not yet written and, in
        shard mode, the final file (assembled beside the shards)."""
        left = 0
        for name, (shape, dtype) in self.layout.items():
            done = self.owner[name].keys() | self._new[name].keys()
            n_lead = max((len(k) for k in done), default=1)
            per_slot = int(np.prod(shape[n_lead:])) * dtype.itemsize
            left += (int(np.prod(shape[:n_lead])) - len(done)) * per_slot
        if self.mode == "shards":
            left += layout_bytes(self._output_layout())
        return left

    def _check_room_for_final(self):
        """Refuse (DiskFull) before assembling a final file the disk cannot hold; HDF5 recovers
        badly from a failed write (``GLASSHPC_FINAL_SPACE_CHECK=0``: skip, for tests)."""
        if os.environ.get("GLASSHPC_FINAL_SPACE_CHECK", "1") == "0":
            return
        need = layout_bytes(self._output_layout())
        need = int(need * 1.02) + 4 * 2**20          # HDF5 metadata, results and provenance
        if _free_bytes(self.partial) < need:
            raise DiskFull(self.partial, need)

    def _raise_if_full(self, exc, where):
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(where, self.bytes_remaining()) from None

    def completed(self, stage):
        """Set of task keys (:func:`task_key`) of ``stage`` recorded as finished (this run and, on
        resume, earlier attempts)."""
        return set(self.completed_tasks.get(stage, ()))

    def flush(self):
        if self._data is not None:
            self._data.flush()

    def sync(self):
        """Collective stage boundary: every slot written anywhere becomes readable everywhere.
        Raises :class:`glasshpc.interrupt.Interrupted` on every rank if any rank got SIGTERM."""
        if self._pending:   # writes outside run_tasks: keep them as one record of this segment
            self.commit(f"_segment{self.segment}", (self.segment,))
        if self.mode == "mpio":
            self._fh.flush()
        gathered = self.ctx.comm.allgather(self._new)
        for part in gathered:
            for name, slots in part.items():
                self.owner[name].update(slots)
        self._new = {name: {} for name in self.layout}
        self.segment += 1
        interrupt.check(self.ctx.comm)

    def read(self, name, slot=()):
        """Read ``name[slot]`` written before the last :meth:`sync` (KeyError if never written)."""
        slot = tuple(int(i) for i in slot)
        if not slot and self.mode == "mpio":
            return self._fh[name][()]
        if slot not in self.owner[name]:
            raise KeyError(f"{name}{list(slot)} was never written")
        return self._read_loc(name, slot, self.owner[name][slot])

    def missing(self, name, n_lead):
        """Slots (tuples over the first ``n_lead`` axes) of ``name`` never written."""
        shape = self.layout[name][0][:n_lead]
        return [s for s in np.ndindex(*shape) if s not in self.owner[name]]

    def finalize(self, write_extra):
        """Collective. Check completeness, build the final file inside ``.partial/``, call
        ``write_extra(h5file)`` on rank 0 to add results and provenance, and make it durable:
        fsync the file, rename it to the output, fsync the directory, and only then retire
        ``.partial/`` (renamed to ``.partial.trash-PID``, then removed). A kill at any step leaves
        either a resumable ``.partial/`` or a finished output (whose leftover folder the next run
        removes). The output's root attrs ``run_id`` and ``config_sha256`` tie it to its run.

        Raises RuntimeError (and leaves ``.partial`` in place) if a slot is missing, or
        :class:`DiskFull` (temporary file removed; resumable once space is freed)."""
        self.sync()
        missing = {}
        for name, (shape, _) in self.layout.items():
            n_lead = max(len(k) for k in self.owner[name]) if self.owner[name] else 1
            m = self.missing(name, n_lead)
            if m:
                missing[name] = m[:5]
        if missing:
            raise RuntimeError(f"incomplete run in {self.partial}, nothing finalised; missing "
                               f"slots (never written): {str(missing)[:400]}")
        tmp = os.path.join(self.partial, "final.h5.tmp")
        if self.mode == "mpio":
            self._fh.close()
            self._fh = None
            self.ctx.comm.Barrier()
        err = None
        if self.ctx.root:
            hooks = sys.unraisablehook, sys.excepthook
            # a failed HDF5 write is reported again by every h5py object it leaves behind (Cython
            # prints them through both hooks); keep the first report (the exception below) only
            sys.unraisablehook, sys.excepthook = (lambda _: None), (lambda *_: None)
            try:
                with open(os.path.join(self.partial, "run.json"), encoding="utf-8") as fh:
                    run = json.load(fh)
                self._check_room_for_final()
                if self.mode == "shards":
                    with h5py.File(tmp, "w") as out:
                        self._copy_slots(out)
                        _stamp(out, run)
                        write_extra(out)
                else:
                    # results go into a copy: a kill while HDF5 adds them could leave the file
                    # unreadable, and data.h5 holds every finished task of the run
                    _copy_file(os.path.join(self.partial, "data.h5"), tmp)
                    with h5py.File(tmp, "a") as out:
                        _strip_to_layout(out, self._output_layout())
                        _stamp(out, run)
                        write_extra(out)
                interrupt.fault_point("finalize", "assembled", 0)
                _fsync_file(tmp)
                interrupt.fault_point("finalize", "synced", 0)
                os.replace(tmp, self.path)
                interrupt.fault_point("finalize", "renamed", 0)
                _fsync_dir(os.path.dirname(self.path))
                interrupt.fault_point("finalize", "dir_synced", 0)
                self._close_files()
                _discard(self.partial, self._lock, stage_hook=True)
                self._lock = None
            except Exception as exc:  # noqa: BLE001  (report on every rank, keep the partial data)
                if _is_disk_full(exc):
                    _remove_quietly(tmp)
                    err = ("DiskFull", (self.partial, self.bytes_remaining()))
                else:
                    err = ("RuntimeError", f"finalisation of {self.path} failed: {exc!r}")
            finally:
                gc.collect()     # the echoes come from deallocation: let them happen muted
                sys.unraisablehook, sys.excepthook = hooks
        # the others wait while rank 0 copies: generous (1 MB/s of output), but not forever
        self.ctx.sync("final assembly of the output",
                      limit=layout_bytes(self._output_layout()) / 1e6)
        err = self.ctx.comm.bcast(err, root=0)
        if err:
            if err[0] == "DiskFull":
                raise DiskFull(*err[1], collective=True)
            raise RuntimeError(err[1])

    def _output_layout(self):
        """The layout without the transient datasets: what the output file holds."""
        return {k: v for k, v in self.layout.items() if k not in self.transient}

    def _copy_slots(self, out):
        """Shard mode: copy every slot into ``out``, one slot in memory at a time. A slot made of
        whole chunks (the big per-task datasets) goes in as raw chunk bytes
        (``write_direct_chunk``: no selection, conversion or copy; finalize went from 0.23 to 0.56
        of ``cp``'s throughput, bench/bench_assembly.py)."""
        for name, (shape, dtype) in self._output_layout().items():
            chunks = _chunks(shape, dtype)
            ds = out.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks,
                                    fillvalue=_fill(dtype))
            for slot, loc in sorted(self.owner[name].items()):
                tiles = _chunk_tiles(shape, chunks, len(slot))
                if tiles is None or loc == "mpio":
                    ds[slot] = self._read_loc(name, slot, loc)
                    continue
                raw = memoryview(self._read_loc(name, slot, loc, raw=True))   # native bytes
                step = len(raw) // len(tiles)
                for j, tile in enumerate(tiles):
                    ds.id.write_direct_chunk(slot + tile, raw[j * step:(j + 1) * step])

    def _close_files(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._mpio_fd is not None:
            os.close(self._mpio_fd)
            self._mpio_fd = None
        for attr in ("_data", "_journal"):
            fh = getattr(self, attr, None)
            if fh is not None:
                fh.close()
                setattr(self, attr, None)

    def close(self):
        """Close every file and release the output's lock (idempotent)."""
        self._close_files()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _is_disk_full(exc):
    """True for ENOSPC / EDQUOT, also as HDF5 reports them (a RuntimeError or OSError whose text
    carries 'errno = 28')."""
    if isinstance(exc, DiskFull) or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "quota exceeded" in text


def _record_crc(rec):
    """CRC-32 of a journal record's stage, task, dataset names, slots, locations and slot CRCs."""
    body = json.dumps([rec["stage"], rec["task"], rec["slots"]], sort_keys=True,
                      separators=(",", ":"))
    return zlib.crc32(body.encode())


def _stamp(h5, run):
    """Root attrs tying a finished file to its run (used to recognise a finished remnant)."""
    h5.attrs["run_id"] = str(run["run_id"])
    h5.attrs["config_sha256"] = str(run["config_sha256"])


def _attr_str(value):
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _copy_file(src, dst):
    """Copy ``src`` to ``dst`` in the kernel (copy_file_range: a reflink where the file system
    can, e.g. XFS, Btrfs, NFS 4.2, Lustre 2.16), falling back to a user-space copy."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        left = os.fstat(fi.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        except (AttributeError, OSError) as exc:
            if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise
            fi.seek(0)
            fo.seek(0)
            fo.truncate()
            shutil.copyfileobj(fi, fo, 1 << 24)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    """Make a rename or a new entry in ``path`` durable (POSIX: fsync the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:   # some file systems refuse fsync on directories; nothing more to do there
        pass
    finally:
        os.close(fd)


def _discard(folder, lock, stage_hook=False):
    """Retire ``folder`` atomically (rename to ``folder.trash-PID``, fsync the parent), then remove
    it and release ``lock``. A kill in between leaves only a ``.trash-`` folder, which
    :func:`_clean_leftovers` removes later."""
    trash = f"{folder}.trash-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.rename(folder, trash)
    if lock is not None:
        lock.moved(trash)
    _fsync_dir(os.path.dirname(folder))
    if stage_hook:
        interrupt.fault_point("finalize", "trashed", 0)
    shutil.rmtree(trash, ignore_errors=True)
    if lock is not None:
        lock.release()


def _refuse_fresh_start(path, partial):
    """FileExistsError if a fresh start (no --resume, no --overwrite) would replace something."""
    if os.path.exists(path):
        raise FileExistsError(f"output {path} exists; move it away, choose another output path, "
                              "or use --overwrite")
    if os.path.lexists(partial):
        raise FileExistsError(f"{partial} exists: an earlier run did not finish; continue it with "
                              "--resume, or start again with --overwrite")


def preflight(path, ctx, resume=False, overwrite=False):
    """Collective. The refusals of :class:`Store` that need no work — the output in use by a live
    run (:class:`LockHeld`), or a fresh start onto an existing output or ``.partial/``
    (FileExistsError) — made before a run spends anything (the LAMMPS suffix check, the engine
    group choice). Creates and changes nothing; the Store repeats every check under its lock."""
    path = os.path.abspath(path)
    partial = path + ".partial"
    res = None
    if ctx.root:
        try:
            if os.path.isdir(partial):
                RunLock.check(partial)
            if not (resume or overwrite):
                _refuse_fresh_start(path, partial)
        except (LockHeld, FileExistsError) as exc:
            res = (type(exc).__name__, str(exc))
    res = ctx.comm.bcast(res, root=0)
    if res is not None:
        raise {"LockHeld": LockHeld, "FileExistsError": FileExistsError}[res[0]](res[1])


def _clean_leftovers(partial, min_age=60.0):
    """Remove ``partial.trash-*`` folders (retired by a run killed before it removed them) and
    ``partial.new-*`` folders older than ``min_age`` s (a start killed before its rename), unless
    a live run holds them."""
    for folder in glob.glob(glob.escape(partial) + ".trash-*") + \
            glob.glob(glob.escape(partial) + ".new-*"):
        try:
            if ".new-" in folder and time.time() - os.stat(folder).st_mtime < min_age:
                continue
            lock = RunLock.acquire(folder, create=False)
        except (LockHeld, OSError):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if lock is not None:
            lock.release()


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def layout_bytes(layout):
    """Bytes of the datasets of ``layout`` ({name: (shape, dtype)}), as stored uncompressed."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in layout.values())


def _free_bytes(path):
    """Free bytes for an unprivileged writer on the file system holding ``path`` (or its parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or ".")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _gib(nbytes):
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.3g} MiB"


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


def _chunk_tiles(shape, chunks, k):
    """Chunk offsets (relative to the slot, over the axes after the first ``k``) of the chunks
    that tile a slot ``[i_0, …, i_{k-1}]`` in C order, each a contiguous run of the slot's bytes;
    None when a chunk is not inside one slot (:func:`_chunks`: leading chunk axes 1, rest whole)."""
    if chunks is None or any(c != 1 for c in chunks[:k]):
        return None
    m = k
    while m < len(shape) and tuple(chunks[m:]) != tuple(shape[m:]):
        if chunks[m] != 1:
            return None
        m += 1
    rest = (0,) * (len(shape) - m)
    return [tuple(int(i) for i in idx) + rest for idx in np.ndindex(*shape[k:m])]


def _strip_to_layout(h5, layout):
    """Delete from the mpio ``data.h5`` every object that is neither a layout dataset nor a group
    on the way to one: what an interrupted earlier finalisation's ``write_extra`` added (e.g.
    ``iso/times`` inside the layout group ``iso``), so that the retry can write it again."""
    keep = set(layout) | {"/".join(n.split("/")[:i]) for n in layout
                          for i in range(1, n.count("/") + 1)}
    extra = []
    h5.visit(lambda n: extra.append(n) if n not in keep else None)
    for name in extra:   # parents before children: a deleted group takes its members with it
        if name in h5:
            del h5[name]


def _layout_json(layout):
    return {k: [list(s), np.dtype(d).str] for k, (s, d) in sorted(layout.items())}


def _atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _writable(folder):
    """True if a file can be created in ``folder`` (tried for real: root ignores mode bits)."""
    import tempfile
    try:
        fd, probe = tempfile.mkstemp(prefix=".glasshpc-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def _describe_existing(path):
    """'output X is a complete glasshpc run' or says what else the file is."""
    try:
        with h5py.File(path, "r") as fh:
            ours = "provenance" in fh and "config_yaml" in fh["provenance"].attrs
    except OSError:
        return f"output {path} exists and is not an HDF5 file"
    if ours:
        return f"output {path} exists and is a finished glasshpc run"
    return f"output {path} exists and is an HDF5 file not written by glasshpc"


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def _diff(old, new):
    a, b = _flatten(old), _flatten(new or {})
    return [f"{k}: {a.get(k, '—')!r} → {b.get(k, '—')!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
