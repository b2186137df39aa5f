"""What made an output file: the source code (git commit and a hash of the package) and the launch (command
line, MPI launcher, batch-system job). Written to ``/provenance`` by :func:`glasshpc.run.write_provenance`.

Nothing here forks a process (a fork under some MPI libraries is unsafe): the git commit is read from the
repository's files (``HEAD``, loose refs, ``packed-refs``; worktrees through their ``commondir``) and the
launcher's command line from ``/proc`` (Linux; absent elsewhere).
"""
import hashlib
import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# environment variables that say how and where the job was launched (batch systems, MPI launchers, threads)
LAUNCH_ENV = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME", "SLURM_NNODES",
              "SLURM_NTASKS", "SLURM_CPUS_PER_TASK", "SLURM_JOB_NODELIST", "SLURM_STEP_ID", "PBS_JOBID",
              "PBS_JOBNAME", "PBS_QUEUE", "LSB_JOBID", "LSB_JOBNAME", "COBALT_JOBID", "FLUX_JOB_ID", "JOB_ID",
              "PMI_SIZE", "PMIX_NAMESPACE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "OMP_NUM_THREADS",
              "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GLASSHPC_CACHE_DIR", "GLASSHPC_STORE_MODE",
              "NUMBA_CACHE_DIR", "HDF5_USE_FILE_LOCKING")
LAUNCHERS = ("mpiexec", "mpirun", "mpiexec.hydra", "srun", "aprun", "jsrun", "prun", "orterun", "flux",
             "ibrun", "mpiexec_mpt", "charmrun")


def package_sha256(root=PACKAGE_DIR):
    """SHA-256 (hex) over the package's .py files: their paths relative to ``root`` and contents, in sorted
    order (the same code gives the same hash wherever it is installed)."""
    h = hashlib.sha256()
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, "rb") as fh:
            data = fh.read()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _git_dir(start):
    """(git dir, common dir) of the work tree holding ``start``, or None."""
    d = start
    while True:
        dot = os.path.join(d, ".git")
        if os.path.isdir(dot):
            return dot, dot
        if os.path.isfile(dot):                  # a worktree or submodule: "gitdir: <path>"
            with open(dot, encoding="utf-8") as fh:
                line = fh.read().strip()
            if line.startswith("gitdir:"):
                gd = os.path.normpath(os.path.join(d, line[len("gitdir:"):].strip()))
                common = gd
                cd = os.path.join(gd, "commondir")
                if os.path.isfile(cd):
                    with open(cd, encoding="utf-8") as fh:
                        common = os.path.normpath(os.path.join(gd, fh.read().strip()))
                return gd, common
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _resolve_ref(git_dir, common, ref):
    for base in (git_dir, common):
        path = os.path.join(base, ref)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
    packed = os.path.join(common, "packed-refs")
    if os.path.isfile(packed):
        with open(packed, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    return None


def git_commit(start=PACKAGE_DIR):
    """(commit sha, branch or '') of the git work tree holding ``start``, or (None, None) outside git."""
    try:
        found = _git_dir(start)
        if found is None:
            return None, None
        git_dir, common = found
        with open(os.path.join(git_dir, "HEAD"), encoding="utf-8") as fh:
            head = fh.read().strip()
        if head.startswith("ref:"):
            ref = head[4:].strip()
            sha = _resolve_ref(git_dir, common, ref)
            return sha, ref.rsplit("/", 1)[-1]
        return head, ""                          # detached HEAD
    except (OSError, UnicodeDecodeError):
        return None, None


def source_record():
    """dict: ``package_dir``, ``package_sha256`` (:func:`package_sha256`), and inside a git work tree
    ``git_commit`` / ``git_branch`` (uncommitted edits are not in the commit: compare the package hash)."""
    out = {"package_dir": PACKAGE_DIR, "package_sha256": package_sha256()}
    sha, branch = git_commit()
    if sha:
        out["git_commit"], out["git_branch"] = sha, branch
    return out


def _proc_cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]


def _proc_parent(pid):
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read().decode("utf-8", "replace")
    return int(stat[stat.rindex(")") + 2:].split()[1])


def launcher_command(max_depth=8):
    """The command line (list of str) of the nearest ancestor process that is an MPI or batch launcher
    (``LAUNCHERS``: mpiexec, srun, …), or None (no launcher, or no /proc)."""
    try:
        pid = os.getppid()
        for _ in range(max_depth):
            if pid <= 1:
                return None
            cmd = _proc_cmdline(pid)
            if cmd and os.path.basename(cmd[0]) in LAUNCHERS:
                return cmd
            pid = _proc_parent(pid)
    except (OSError, ValueError, IndexError):
        return None
    return None


def launch_record(ranks):
    """dict: ``argv`` (sys.argv), ``executable``, ``cwd``, ``ranks`` (MPI size), ``launcher`` (the launcher's
    command line, or None for a run without one), ``env`` (the set variables of ``LAUNCH_ENV``)."""
    return {"argv": list(sys.argv), "executable": sys.executable, "cwd": os.getcwd(), "ranks": int(ranks),
            "launcher": launcher_command(),
            "env": {k: os.environ[k] for k in LAUNCH_ENV if k in os.environ}}
