"""One writer per output: the advisory lock a run holds on ``OUTPUT.partial/lock`` for its life.

Rank 0 of a run takes the lock before it creates or changes anything in ``OUTPUT.partial/`` and
keeps it until the output is finished (or the process dies). The lock file records the holder
(host, PID, start time, SLURM job id, command) so that a refused second run can name it.

Two mechanisms, chosen per file system:

* ``flock`` (default): ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the open lock file. The kernel (or a
  cluster file system mounted with ``flock``) releases it when the holder dies however it dies, so a
  stale lock from a killed run never blocks ``--resume``.
* ``file`` (fallback where ``flock`` is refused, e.g. Lustre mounted ``noflock``, or forced with
  ``GLASSHPC_LOCK=file``): the lock is the file ``lock.held`` created with ``O_EXCL``; its holder
  refreshes its mtime at every committed task (:meth:`RunLock.heartbeat`). A lock whose holder is on
  this host and no longer alive, or whose heartbeat is older than ``GLASSHPC_LOCK_STALE`` seconds
  (default 21600 = 6 h; set it above your longest single task), is stale and taken over.
"""
import datetime
import errno
import fcntl
import json
import os
import platform
import socket
import sys
import time

LOCK_NAME = "lock"
HELD_NAME = "lock.held"       # the 'file' mechanism's lock
_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class LockHeld(RuntimeError):
    """Another live run holds the output; the message names it (refused input: exit 2)."""


def holder_record():
    """{host, pid, started, job, command} of this process (JSON-able)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname() or platform.node(), "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "job": job or os.environ.get("PBS_JOBID") or None,
            "command": " ".join(sys.argv)[:300]}


def describe_holder(record):
    """One line naming the run in ``record`` (or saying it is unknown)."""
    if not isinstance(record, dict) or "pid" not in record:
        return "another glasshpc run (holder not recorded yet)"
    job = f", job {record['job']}" if record.get("job") else ""
    return (f"glasshpc run PID {record['pid']} on host {record.get('host', '?')}{job}, started "
            f"{record.get('started', '?')}")


def _read_record(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.read(4096) or "null")
    except (OSError, ValueError):
        return None


def _mechanism():
    forced = os.environ.get("GLASSHPC_LOCK", "").strip().lower()
    if forced and forced not in ("flock", "file"):
        raise LockHeld(f"GLASSHPC_LOCK must be 'flock' or 'file', got {forced[:40]!r}")
    return forced or "flock"


def _stale_seconds():
    try:
        return float(os.environ.get("GLASSHPC_LOCK_STALE", 21600))
    except ValueError:
        return 21600.0


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _in_use(folder):
    """The :class:`LockHeld` of a folder whose flock another process holds."""
    return LockHeld(f"{folder} is in use by "
                    f"{describe_holder(_read_record(os.path.join(folder, LOCK_NAME)))}; wait for "
                    "it to finish (or stop it) before starting, resuming or overwriting this "
                    "output")


def _refuse_live_file_lock(folder, held):
    """'file' mechanism: raise :class:`LockHeld` if the lock file ``held`` belongs to a live holder
    (alive on this host, or another host's with a heartbeat younger than GLASSHPC_LOCK_STALE).
    Returns False if the file is gone, True if it is stale."""
    rec = _read_record(held)
    try:
        age = time.time() - os.stat(held).st_mtime
    except FileNotFoundError:
        return False
    here = isinstance(rec, dict) and rec.get("host") == socket.gethostname()
    dead = here and not _alive(rec.get("pid", -1))
    if not (dead or age > _stale_seconds()):
        raise LockHeld(
            f"{folder} is in use by {describe_holder(rec)} (lock file {held}, last heartbeat "
            f"{age:.0f} s ago; taken as stale after GLASSHPC_LOCK_STALE = "
            f"{_stale_seconds():.0f} s)")
    return True


class RunLock:
    """The held lock of one folder (``OUTPUT.partial`` or a folder about to become it).

    Use :meth:`acquire`; the lock lasts until :meth:`release` or the end of the process. It stays
    valid when the folder is renamed (it belongs to the open file, not to the name)."""

    def __init__(self, folder, fd, mechanism):
        self.folder, self.fd, self.mechanism = folder, fd, mechanism

    @classmethod
    def acquire(cls, folder, create=True):
        """Lock ``folder`` or raise :class:`LockHeld` naming the live holder.

        ``create``: create the lock file if missing (False: a folder without one is taken as
        unlocked and ``None`` is returned, leaving the folder untouched)."""
        mech = _mechanism()
        path = os.path.join(folder, LOCK_NAME)
        if mech == "flock":
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(folder, fd, "flock")
            except BlockingIOError:
                os.close(fd)
                raise _in_use(folder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _FLOCK_UNSUPPORTED:
                    raise
                # this file system refuses flock: fall back to the O_EXCL lock file below
        return cls._acquire_file(folder, create)

    @classmethod
    def check(cls, folder):
        """Raise :class:`LockHeld` if a live run holds ``folder``; create, take and change nothing
        (a stale 'file' lock is left for the next :meth:`acquire` to remove)."""
        if _mechanism() == "flock":
            try:
                fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return                 # free (closing the descriptor below releases it)
            except BlockingIOError:
                raise _in_use(folder) from None
            except OSError as exc:
                if exc.errno not in _FLOCK_UNSUPPORTED:
                    raise
            finally:
                os.close(fd)
        _refuse_live_file_lock(folder, os.path.join(folder, HELD_NAME))

    @classmethod
    def _acquire_file(cls, folder, create):
        held = os.path.join(folder, HELD_NAME)
        for _ in range(3):
            try:
                fd = os.open(held, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return cls(folder, fd, "file")
            except FileExistsError:
                if not _refuse_live_file_lock(folder, held):
                    continue
                try:
                    os.remove(held)     # stale: its holder is dead or silent for too long
                except FileNotFoundError:
                    pass
            except FileNotFoundError:
                if not create:
                    return None
                raise
        raise LockHeld(f"{folder}: could not take the lock {held} (contended)")

    def write_holder(self):
        """Record this process as the holder (after every check passed)."""
        data = json.dumps(holder_record()).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def heartbeat(self):
        """'file' mechanism: refresh the lock's mtime (cheap; called at every commit on rank 0)."""
        if self.mechanism == "file":
            try:
                os.utime(self.fd)
            except OSError:
                pass

    def release(self):
        if self.fd is None:
            return
        if self.mechanism == "file":
            try:
                os.remove(os.path.join(self.folder, HELD_NAME))
            except OSError:
                pass
        try:
            os.close(self.fd)      # closing the descriptor releases a flock
        except OSError:
            pass
        self.fd = None

    def moved(self, folder):
        """The locked folder was renamed to ``folder`` (the lock itself moves with the file)."""
        self.folder = folder
