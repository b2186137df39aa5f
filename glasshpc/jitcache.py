"""Where numba keeps the compiled kernels: chosen once, when ``glasshpc`` is imported.

numba fixes the cache directory of an ``@njit(cache=True)`` function when the decorator runs (its
cache locator: ``numba.config.CACHE_DIR`` if set, else the source's ``__pycache__``, else
``~/.cache/numba``; a directory counts only if a file can be created in it), so
``glasshpc/__init__.py`` calls :func:`configure` before any kernel module is imported.

Order: ``GLASSHPC_CACHE_DIR``, else ``NUMBA_CACHE_DIR``, else the install's own ``__pycache__``
folders (numba's default; ``python -m glasshpc.compile`` run by the installer warms them). If that
place is not writable (read-only install, read-only shared cache) the kernels go to a private cache
``$TMPDIR/glasshpc-numba-<uid>`` instead — numba loads only from a directory it can write to, so the
read-only cache's files are first copied there (a warm read-only cache is still used) — and one
line on stderr says so (MPI rank 0 only, once per process tree). Never raises: with no writable
directory at all the kernels are compiled in memory by every process (and that is said too).
"""
import hashlib
import os
import shutil
import sys
import tempfile

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# modules that define @njit(cache=True) kernels (tests/test_compile.py checks the list is complete)
KERNEL_MODULES = (
    "glasshpc.structure.neighbors",
    "glasshpc.structure.sann",
    "glasshpc.structure.descriptors",
    "glasshpc.structure.structure_factor",
    "glasshpc.structure.voronoi",
    "glasshpc.states.cage",
    "glasshpc.states.inherent",
    "glasshpc.md.edmd",
    "glasshpc.md.bead_spring",
    "glasshpc.rearrangements",
)
_NOTICE_ENV = "GLASSHPC_CACHE_NOTICE_SHOWN"     # children of a process that printed stay quiet
_RANK_ENV = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK",
             "ALPS_APP_PE", "SLURM_PROCID")

#: what :func:`configure` decided: path (None = numba's in-tree default), origin, notice (or None)
status = {"path": None, "origin": "default", "notice": None, "seeded": 0}


def writable(path):
    """True if ``path`` exists or can be created and a file can be created in it (numba's test)."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def kernel_dirs():
    """The package folders holding the modules of :data:`KERNEL_MODULES`."""
    return sorted({os.path.join(PACKAGE_DIR, *m.split(".")[1:-1]) for m in KERNEL_MODULES})


def cache_subdir(source_dir):
    """Sub-folder of a user cache directory for the kernels of modules in ``source_dir``: numba's
    ``_CacheLocator.get_suitable_cache_subpath`` (last folder name + SHA-1 of the folder path)."""
    return "_".join([os.path.basename(source_dir),
                     hashlib.sha1(source_dir.encode()).hexdigest()])


def _is_cache_file(name):
    return name.endswith((".nbi", ".nbc"))


def seed(pairs, dest_root):
    """Copy numba cache files (index ``.nbi``, data ``.nbc``) from each ``(source folder, sub-folder
    of dest_root)`` pair unless the destination copy is as new; data before index, each file
    through a temporary name and an atomic rename (ranks of one node may seed concurrently).
    Returns the number of files copied; unreadable files are skipped."""
    copied = 0
    for src, sub in pairs:
        try:
            names = sorted((n for n in os.listdir(src) if _is_cache_file(n)),
                           key=lambda n: n.endswith(".nbi"))
        except OSError:
            continue
        dest = os.path.join(dest_root, sub)
        for name in names:
            s, d = os.path.join(src, name), os.path.join(dest, name)
            try:
                st = os.stat(s)
                try:
                    if os.stat(d).st_mtime >= st.st_mtime:
                        continue
                except FileNotFoundError:
                    pass
                os.makedirs(dest, exist_ok=True)
                tmp = f"{d}.tmp.{os.getpid()}"
                shutil.copyfile(s, tmp)
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.replace(tmp, d)
                copied += 1
            except OSError:
                continue
    return copied


def _private_dir():
    """A writable folder of this user's only, under the temporary directory; None if none."""
    try:
        base = tempfile.gettempdir()          # TMPDIR, TEMP, TMP, /tmp, ... : first writable one
    except OSError:
        return None
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(base, f"glasshpc-numba-{uid}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if os.path.isdir(path) and not os.path.islink(path) and st.st_uid == uid \
                and writable(path):
            return path
    except OSError:
        pass
    try:   # the name is taken by someone else: a fresh folder of ours
        return tempfile.mkdtemp(prefix=f"glasshpc-numba-{uid}-")
    except OSError:
        return None


def _use(path):
    """Point numba at ``path`` (environment for numba's import and children; its config if numba
    is already imported)."""
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = path


def _rank_zero():
    for name in _RANK_ENV:
        value = os.environ.get(name)
        if value is not None:
            return value.strip() == "0"
    return True


def _say(message):
    status["notice"] = message
    if os.environ.get(_NOTICE_ENV) or not _rank_zero():
        return
    os.environ[_NOTICE_ENV] = "1"
    print(f"glasshpc: {message}", file=sys.stderr, flush=True)


def _no_cache():
    """Last resort: no writable directory anywhere. Keep ``cache=True`` from raising ("no locator
    available") by making numba's dispatchers skip caching: kernels compile in memory."""
    from numba.core import dispatcher
    dispatcher.Dispatcher.enable_caching = lambda self: None


def configure(cache_dir=None):
    """Choose the numba cache directory (see the module docstring) and return :data:`status`.

    ``cache_dir`` (e.g. ``python -m glasshpc.compile --cache-dir``) overrides the environment.
    Must run before any glasshpc kernel module is imported (later kernels keep their place)."""
    if cache_dir is not None:
        os.environ["GLASSHPC_CACHE_DIR"] = cache_dir
    requested, origin = None, "default"
    for name in ("GLASSHPC_CACHE_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(name):
            requested, origin = os.path.abspath(os.path.expanduser(os.environ[name])), name
            break
    status.update(path=requested, origin=origin, notice=None, seeded=0)
    if requested is not None:
        if writable(requested):
            _use(requested)
            return status
        where = f"{requested} ({origin})"
        warm = [(os.path.join(requested, e.name), e.name) for e in _scandir(requested)
                if e.is_dir()]
    else:
        dirs = kernel_dirs()
        if all(writable(os.path.join(d, "__pycache__")) for d in dirs):
            return status                       # numba's default: next to the sources
        where = f"{PACKAGE_DIR}/*/__pycache__ (the install's)"
        warm = [(os.path.join(d, "__pycache__"), cache_subdir(d)) for d in dirs]
    private = _private_dir()
    if private is None:
        _no_cache()
        status.update(path=None, origin="none")
        _say(f"numba cache {where} is not writable and no temporary directory is: kernels are "
             "compiled in memory by every process (set GLASSHPC_CACHE_DIR to a writable folder)")
        return status
    n = seed(warm, private)
    _use(private)
    status.update(path=private, origin="private", seeded=n)
    copied = f", {n} warm cache files copied from it" if n else ""
    _say(f"numba cache {where} is not writable: using the private cache {private}{copied} "
         "(set GLASSHPC_CACHE_DIR to a writable folder to keep compiled kernels)")
    return status


def _scandir(path):
    try:
        return list(os.scandir(path))
    except OSError:
        return []
