"""The resource plan of a run: peak memory per rank and disk from the dataset layout, compared with
what the machine has before any work starts.

A run refused here exits with code 2 and changes nothing; ``--ignore-resources`` turns the refusal
into a warning for users who know better (e.g. a login node checking a compute node's job). The
estimates are upper bounds of the large arrays each stage holds at once (Python, numpy, numba and
LAMMPS themselves are counted as a fixed base); they are not a profiler. Sizes in bytes; reduced LJ
units of species A where lengths appear.
"""
import os

import numpy as np

from .store import _free_bytes, _gib, layout_bytes

BASE_BYTES = 400 * 2**20          # interpreter, numpy, numba, h5py, LAMMPS libraries per rank
LAMMPS_BYTES_PER_ATOM = 2048      # positions, velocities, forces, ghosts, neighbour lists
# freud/voro++ cells, their vertices and the face-candidate list of structure/voronoi.py (max RSS
# growth measured for N = 8000 KA: 18 kB per particle)
VORONOI_BYTES_PER_PARTICLE = 20000
SLOT_BOOK_BYTES = 300             # one slot's entry in the store's owner maps (every rank)
TASK_BOOK_BYTES = 200             # one task in a stage's task list (every rank)


class ResourceError(RuntimeError):
    """The run does not fit this machine (memory or disk); refused input, exit 2."""


def _slots(layout):
    """Slot count of every dataset: its leading (task) axes, as the stages write them."""
    n = 0
    for name, (shape, _) in layout.items():
        lead = 2 if name in ("iso/displacements", "states/cage/chains/positions",
                             "states/cage/chains/acceptance", "states/cage/chains/step") \
            or name.startswith("replica_sums/") else 1
        n += int(np.prod(shape[:lead])) if shape else 1
    return n


def plan(cfg, ranks, store_mode):
    """Resource plan of a run: :func:`plan_state_point`, or for a sweep (``state_points:``) the
    sum of every state point's output, work files and bookkeeping with the largest per-stage
    memory (the stages hold one task's arrays at a time, whichever state point it is of)."""
    if not getattr(cfg, "state_points", ()):
        return plan_state_point(cfg, ranks, store_mode)
    from .stages import state_points
    parts = [plan_state_point(p.cfg, ranks, store_mode) for p in state_points(cfg)]
    mem = {}
    for part in parts:
        for k, v in part["stages"].items():
            mem[k] = max(mem.get(k, 0), v)
    book = sum(part["bookkeeping"] for part in parts)
    out = {k: sum(part[k] for part in parts) for k in ("output", "partial", "disk")}
    out.update(memory=BASE_BYTES + book + max(mem.values()), stages=mem, bookkeeping=book)
    return out


def plan_state_point(cfg, ranks, store_mode):
    """Resource plan of a propensity run (:class:`glasshpc.config.Config`) on ``ranks`` ranks.

    Returns a dict: ``output`` (bytes of the final file's task datasets), ``partial`` (bytes in
    ``OUTPUT.partial/`` at the end of the work: the output's datasets plus the transient per-replica
    sums of ``iso.store_displacements: false``), ``disk`` (peak bytes on the output's file system:
    shard mode holds the shards and the final file at once, mpio mode renames its one file),
    ``memory`` (peak bytes per rank) and ``stages`` {stage: bytes per rank}."""
    from . import stages
    from .models import get_model
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    T = len(cfg.replica_steps())
    n_species = len(get_model(cfg.model.name).species)
    F = stages.descriptor_spec(cfg, 2.0).n_features
    layout = stages.layout(cfg, F)
    scratch = set(stages.transient(cfg))
    out = layout_bytes({k: v for k, v in layout.items() if k not in scratch})
    partial = layout_bytes(layout)
    # snapshots a rank holds in the fits: its share, or every training snapshot when it owns whole
    # (set, species) problems (learn/fits.py: at least two problems per rank, no feature selection)
    from .learn.fits import whole_problems
    whole = whole_problems(len(cfg.fits.feature_sets) * n_species, ranks,
                           cfg.fits.selection.method)
    per = S if whole else -(-S // max(1, ranks))
    states = len(stages.descriptor_states(cfg))
    L = cfg.box_length
    from .structure.structure_factor import memory_bytes as sq_bytes
    mem = {
        "snapshots": N * LAMMPS_BYTES_PER_ATOM + sq_bytes(np.full(3, L), stages.Q_EDGES[-1]),
        "replicas": N * LAMMPS_BYTES_PER_ATOM + T * N * 3 * 12,
        # one replica at a time (stages.dynamics_stage): f4 Δr, then |Δr|², |Δr|, sinc, the sums
        "dynamics": T * N * (3 * 4 + 6 * 8),
        "descriptors": N * F * 8 * 3 + N * 200 * 32
        + (VORONOI_BYTES_PER_PARTICLE * N if stages.voronoi_blocks(cfg) else 0),
        # rows of a rank's snapshots for one (set, species), the predictions of its snapshots
        # for one set (T·N each, written to the store set by set), plus the per-fold statistics
        # K·(F² + F·T) of every (set, species) a rank has a solve for (learn/fits.py)
        "fits": (per * N * (F * 8 * 2 + T * 8 * 2) + len(cfg.fits.feature_sets) * n_species
                 * (cfg.fits.cv_folds + 1) * (F * F + F * T) * 8
                 # cv_score pearson: a CV task holds its fold's validation rows, twice (centred)
                 + (2 * -(-S // cfg.fits.cv_folds) * N * (F + T) * 8
                    if cfg.fits.cv_score == "pearson" else 0)),
    }
    if getattr(cfg, "imported", None) is not None:   # one file read instead of the MD stages
        mem.pop("replicas")
        mem["import"] = mem.pop("snapshots") + R * T * N * 3 * (8 + 8 + 4)
    if cfg.cage.enabled:
        mem["cage"] = N * 1024 + cfg.cage.chains * N * 3 * 8
    if cfg.inherent.enabled:
        mem["inherent"] = N * LAMMPS_BYTES_PER_ATOM
    tasks = S * R + S * max(1, cfg.cage.chains)
    book = _slots(layout) * SLOT_BOOK_BYTES + tasks * TASK_BOOK_BYTES
    peak = BASE_BYTES + book + max(mem.values())
    return {"output": out, "partial": partial,
            "disk": partial + out,
            "memory": peak, "stages": mem, "bookkeeping": book}


def plan_softness(cfg, ranks, store_mode):
    """Resource plan of a softness run (layout of :class:`glasshpc.softness_parts.Plan`)."""
    from .softness_parts import Plan
    from .stages import state_points
    pl = Plan(cfg, state_points(cfg))
    layout = pl.layout()
    out = layout_bytes(layout)
    N = cfg.model.n_particles
    biggest = max(int(np.prod(shape[1:])) * np.dtype(d).itemsize
                  for shape, d in layout.values() if shape)
    peak = BASE_BYTES + _slots(layout) * SLOT_BOOK_BYTES + N * LAMMPS_BYTES_PER_ATOM + 4 * biggest
    return {"output": out, "partial": out, "disk": 2 * out,
            "memory": peak, "stages": {}, "bookkeeping": 0}


def available_memory():
    """Bytes this node can still give: MemAvailable, capped by a cgroup (v2 or v1) limit."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as fh:
                text = fh.read().strip()
            if text == "max":
                continue
            with open(usage, encoding="ascii") as fh:
                room = int(text) - int(fh.read().strip())
            if room > 0 and int(text) < 2**60:
                avail = room if avail is None else min(avail, room)
        except (OSError, ValueError):
            continue
    return avail


def written_bytes(partial):
    """Bytes already in ``partial`` (a resumed run needs only the rest)."""
    total = 0
    if os.path.isdir(partial):
        for name in os.listdir(partial):
            if name.startswith("data"):
                try:
                    total += os.path.getsize(os.path.join(partial, name))
                except OSError:
                    pass
    return total


def local_ranks(comm):
    """Ranks of this launch on this node (shared-memory split)."""
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


def text(p, ranks):
    """Lines of the plan for the run's log and ``--dry-run``."""
    if "memory" not in p:
        return "  resources: " + "; ".join(p["problems"])
    biggest = max(p["stages"], key=p["stages"].get) if p["stages"] else None
    return (f"  resources: peak memory ≈ {_gib(p['memory'])} per rank"
            + (f" (largest stage: {biggest})" if biggest else "")
            + f", {_gib(p['memory'] * ranks)} on {ranks} ranks; output ≈ {_gib(p['output'])}, "
            f"peak disk ≈ {_gib(p['disk'])} (work files + final file)")


def assess(cfg, ctx, store_mode, resume=False):
    """Collective. The plan (see :func:`plan`) compared with this node's memory and the output's
    free disk: the plan dict plus ``problems`` (list of str, empty if the run fits) and
    ``memory_fits`` (bool); the same on every rank."""
    make = plan_softness if cfg.softness is not None else plan
    p = None
    per_node = local_ranks(ctx.comm)
    if ctx.root:
        problems, memory_fits = [], True
        try:
            p = make(cfg, ctx.size, store_mode)
            out = os.path.abspath(cfg.output)
            need_disk = max(0, p["disk"] - (written_bytes(out + ".partial") if resume else 0))
            free = _free_bytes(os.path.dirname(out))
            mem = available_memory()
            if mem is not None and p["memory"] * per_node > mem:
                memory_fits = False
                problems.append(f"peak memory ≈ {_gib(p['memory'])} per rank × {per_node} ranks "
                                f"on this node = {_gib(p['memory'] * per_node)} exceeds the "
                                f"{_gib(mem)} available")
            if need_disk > free:
                problems.append(f"the run needs ≈ {_gib(need_disk)} of disk at "
                                f"{os.path.dirname(out)} (output ≈ {_gib(p['output'])}"
                                + ", built beside its work files"
                                + f") but {_gib(free)} is free")
        except (ValueError, OverflowError, MemoryError) as exc:
            p, memory_fits = {"stages": {}}, False
            problems.append(f"the layout is too large to plan ({str(exc)[:120]})")
        p.update(problems=problems, memory_fits=memory_fits)
    return ctx.comm.bcast(p, root=0)


def refusal(p):
    """The one-line refusal of a plan with problems."""
    return ("resource plan: " + "; ".join(p["problems"]) + ". Reduce model.n_particles, "
            "snapshots.count, iso.replicas or iso.times.count (or free space), or pass "
            "--ignore-resources if you know better")


def check(cfg, ctx, store_mode, resume=False, ignore=False):
    """Collective :func:`assess`; raises :class:`ResourceError` (every rank, same message) naming
    what does not fit and the override, unless ``ignore`` (then printed as a warning). Returns the
    plan."""
    p = assess(cfg, ctx, store_mode, resume)
    if p["problems"]:
        if not ignore:
            raise ResourceError(refusal(p))
        ctx.log(f"glasshpc: warning: {refusal(p)} (ignored: --ignore-resources)")
    return p
