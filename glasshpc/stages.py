"""The stages of a run, in the order run.execute calls them: snapshots → replicas → static
(energies, |F^net|) → inherent states → dynamics → cage states → descriptors → fits.

Reduced LJ units of species A. Every stage has the same contract (DESIGN.md): a task list that is a
pure function of the config; each task seeds itself from (config seed, stage, task identity) and
writes its result to its own slot of the store; ranks take tasks dynamically (run_tasks). Hence results do not
depend on the number of ranks. Collective operations happen only at stage boundaries
(``store.sync``) and inside the distributed fits.
"""
import numpy as np

from . import dynamics, interrupt
from .models import cage_potential, get_model
from .parallel import TaskQueue, lpt_order, task_rng
from .states.cage import cage_state, passes as cage_passes
from .states.chains import (average_chains, half_diagnostics, split_half_pearson,
                             split_rhat)
from .store import task_key
from .structure.descriptors import (DescriptorSpec, compute_descriptors, gr_range, pair_histogram,
                                    second_minimum, spec_from_config)
from .structure.voronoi import VORONOI_FEATURE_NAMES, voronoi_features

Q_EDGES = dynamics.q_grid()


class Point:
    """One state point of a run: its single-state ``cfg`` (config.state_point_configs), ``index``
    (None for a run without ``state_points:``), the ``prefix`` of its datasets in the store and the
    output ('' = the root layout, else ``state_points/<k>/``) and its task names (:meth:`key`)."""

    def __init__(self, cfg, index=None):
        self.cfg, self.index = cfg, index
        self.prefix = "" if index is None else f"state_points/{index}/"

    def key(self, *ident):
        """The task identity of ``ident`` at this state point: ``(k, *ident)`` in a sweep; as
        before sweeps existed otherwise (an int for a one-element identity): same journal, same
        resume."""
        if self.index is None:
            return ident[0] if len(ident) == 1 else tuple(ident)
        return (self.index,) + tuple(ident)

    def view(self, store):
        """The store as seen by this state point's single-state code (names prefixed)."""
        return store if self.index is None else StoreView(store, self.prefix)


class StoreView:
    """A :class:`glasshpc.store.Store` whose dataset names are relative to ``prefix`` (read, write;
    everything else is the store's)."""

    def __init__(self, store, prefix):
        self._store, self.prefix = store, prefix

    def read(self, name, slot=()):
        return self._store.read(self.prefix + name, slot)

    def write(self, name, slot, array):
        return self._store.write(self.prefix + name, slot, array)

    def __getattr__(self, name):
        return getattr(self._store, name)


def state_points(cfg):
    """[Point] of a run: one Point(cfg) without ``state_points:``, else one per state point."""
    if not getattr(cfg, "state_points", ()):
        return [Point(cfg)]
    from .config import state_point_configs
    return [Point(c, k) for k, c in enumerate(state_point_configs(cfg))]


def as_points(arg):
    """[Point] from a Config (:func:`state_points`) or a list of Points (unchanged)."""
    return list(arg) if isinstance(arg, (list, tuple)) else state_points(arg)


def run_layout(points, n_features):
    """The store layout of a run: :func:`layout` of every state point under its prefix."""
    return {p.prefix + k: v for p in points for k, v in layout(p.cfg, n_features).items()}


def run_transient(points):
    """:func:`transient` of every state point under its prefix."""
    return tuple(p.prefix + k for p in points for k in transient(p.cfg))


def pooled_part(name, points, tasks_of, work, cost=None):
    """One stage's share of a queue (:func:`run_stages`): the tasks of every state point,
    ``tasks_of(point)`` the point's task identities (ints or tuples), ``work(point, task)``,
    ``cost(point, task)`` (None: equal costs, order kept). The journal names a task
    :meth:`Point.key`. Returns (name, keys, work(key), cost(key) or None)."""
    keys, where = [], {}
    for p in points:
        for t in tasks_of(p):
            key = p.key(*(t if isinstance(t, tuple) else (t,)))
            keys.append(key)
            where[task_key(key)] = (p, t)
    costs = None if cost is None else {task_key(k): cost(*where[task_key(k)]) for k in keys}
    return (name, keys, lambda key: work(*where[task_key(key)]),
            None if costs is None else (lambda key: costs[task_key(key)]))


def run_pooled(ctx, name, points, tasks_of, work, store, cost=None, groups=None):
    """:func:`run_tasks` over the tasks of every state point in one queue (:func:`pooled_part`)."""
    _, keys, work_key, cost_key = pooled_part(name, points, tasks_of, work, cost)
    return run_tasks(ctx, name, keys, work_key, store, cost=cost_key, groups=groups)


def _sweep_cost(points, fn):
    """``fn`` as the cost of a pooled stage when the state points differ (sweeps), else None."""
    return fn if len(points) > 1 else None


def prep_steps(cfg):
    """MD steps of one snapshot's preparation (melt + NVT + NVE)."""
    md = cfg.md
    return sum(round(t / md.timestep) for t in (md.melt_time, md.nvt_time, md.nve_time))


def snapshot_layout(S, N, prefix=""):
    """Datasets of the snapshot stage (:func:`snapshots`) for S snapshots of N particles."""
    return {prefix + "snapshots/positions": ((S, N, 3), np.float64),
            prefix + "snapshots/types": ((S, N), np.int32),
            prefix + "snapshots/box": ((S, 3), np.float64),
            prefix + "snapshots/sq_AA": ((S, len(Q_EDGES) - 1), np.float64)}


def layout(cfg, n_features):
    """Datasets written by tasks: name → (shape, dtype). The leading axes are the task slots."""
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    T = len(cfg.replica_steps())
    n_species = len(get_model(cfg.model.name).species)
    out = {
        **snapshot_layout(S, N),
        "propensity": ((S, T, N), np.float64),
        "dynamics/fs": ((S, n_species, T), np.float64),
        "dynamics/msd": ((S, n_species, T), np.float64),
        "dynamics/fs_replicas": ((S, R, n_species, T), np.float64),
        "snapshots/energy": ((S, N), np.float64),
        "snapshots/net_force": ((S, N), np.float64),
        "dynamics/debye_waller": ((S, N), np.float64),
        "descriptors/init": ((S, N, n_features), np.float64),
    }
    for block in voronoi_blocks(cfg):      # volume, area, asphericity per particle
        out[f"descriptors/{block}"] = ((S, N, len(VORONOI_FEATURE_NAMES)), np.float64)
    if cfg.descriptors.r_generation == "auto":   # g_AA(r) summands of generation_radius
        out["snapshots/gAA_counts"] = ((S, GAA_BINS), np.float64)
        out["snapshots/gAA_norm"] = ((S,), np.float64)
    # written by the fit stage (learn/fits.py step 4): every particle by its species' model
    for name in cfg.fits.feature_sets:
        out[f"fits/{name}/prediction"] = ((S, T, N), np.float64)
    if cfg.iso.store_displacements:
        out["iso/displacements"] = ((S, R, T, N, 3), np.float32)
    else:   # per-replica sums instead (dynamics.replica_sums), working data only (transient)
        out.update({
            "replica_sums/propensity": ((S, R, T, N), np.float64),
            "replica_sums/debye_waller": ((S, R, N), np.float64),
            "replica_sums/fs": ((S, R, n_species, T), np.float64),
            "replica_sums/msd": ((S, R, n_species, T), np.float64),
        })
    if cfg.inherent.enabled:
        out.update({
            "states/inherent/positions": ((S, N, 3), np.float64),
            "states/inherent/displacement": ((S, N), np.float64),
            "states/inherent/energy": ((S, N), np.float64),
            "states/inherent/max_force": ((S,), np.float64),
            "descriptors/is": ((S, N, n_features), np.float64),
        })
    if cfg.cage.enabled:
        out.update({
            "states/cage/positions": ((S, N, 3), np.float64),
            "states/cage/displacement": ((S, N), np.float64),
            "states/cage/acceptance": ((S,), np.float64),
            "states/cage/step": ((S,), np.float64),
            "descriptors/cs": ((S, N, n_features), np.float64),
        })
        K = cfg.cage.chains
        # convergence diagnostics of every chain (states.chains.half_diagnostics, split_rhat)
        conv = "states/cage/convergence/"
        out.update({
            conv + "half_positions": ((S, K, 2, N, 3), np.float64),
            conv + "half_variance": ((S, K, 2, N), np.float64),
            conv + "half_displacement": ((S, K, 2, n_species), np.float64),
            conv + "half_pearson": ((S, K, n_species), np.float64),
            conv + "shift": ((S, K, n_species), np.float64),
            conv + "shift_se": ((S, K, n_species), np.float64),
            conv + "rhat": ((S, N), np.float64),
        })
        if K > 1:   # the independent chains behind the averaged r^CS (cage_stage)
            out.update({
                "states/cage/chains/positions": ((S, K, N, 3), np.float64),
                "states/cage/chains/acceptance": ((S, K), np.float64),
                "states/cage/chains/step": ((S, K), np.float64),
                "states/cage/chains/split_half_pearson": ((S, n_species), np.float64),
            })
    return out


def transient(cfg):
    """Layout names that are working data only (Store ``transient``): not in the output file."""
    out = ()
    if cfg.descriptors.r_generation == "auto":
        out += ("snapshots/gAA_counts", "snapshots/gAA_norm")
    if not cfg.iso.store_displacements:
        out += tuple(f"replica_sums/{k}" for k in dynamics.REPLICA_SUMS)
    return out


def descriptor_spec(cfg, r_generation):
    """DescriptorSpec from the config's shell blocks (r_generation resolved by the caller)."""
    d = cfg.descriptors
    if d.preset:  # a paper's named set (structure/descriptors.py preset())
        return spec_from_config(d, len(get_model(cfg.model.name).species), r_generation)

    def shells(blocks):
        r = np.concatenate([np.linspace(b.r_min, b.r_max, b.count) for b in blocks])
        delta = np.concatenate([np.full(b.count, b.delta) for b in blocks])
        return r, delta

    rr, rd = shells(d.radial)
    ar, ad = shells(d.angular)
    return DescriptorSpec(radial_r=rr, radial_delta=rd, angular_r=ar, angular_delta=ad,
                          angular_l=tuple(d.l), n_species=len(get_model(cfg.model.name).species),
                          generations=d.generations, r_generation=float(r_generation),
                          truncation=d.truncation)


def run_tasks(ctx, name, tasks, work, store, cost=None, groups=None):
    """Run ``work(task)`` for the unfinished ``tasks`` with dynamic scheduling and progress; then
    sync the store. Returns the stage wall time (s).

    Tasks recorded as finished (an earlier attempt of a resumed run) are skipped; the rest are
    sorted longest first by ``cost`` (callable task → relative cost; None = equal costs, task
    order kept) and every rank takes the next untaken one whenever it is free
    (:class:`glasshpc.parallel.TaskQueue`), which cannot change a result (every task seeds itself
    from its identity). Each finished task is committed (data fsync'ed + journal line) before the
    next is taken. After a SIGTERM the rank stops taking tasks (the others finish the stage); the
    :meth:`Store.sync` at the end raises :class:`glasshpc.interrupt.Interrupted` on every rank.

    ``groups`` (:class:`glasshpc.md.group.EngineGroups`): tasks go to engine groups instead of
    ranks; the leader of a group takes a task, broadcasts it to its group, every member runs
    ``work(task)`` (which writes only on the leader) and the leader commits. Ranks outside every
    group wait at the stage boundary."""
    return run_stages(ctx, name, [(name, tasks, work, cost)], store, groups=groups)


def run_stages(ctx, title, parts, store, groups=None):
    """:func:`run_tasks` for the tasks of several independent stages in one queue, so that the
    ranks left idle by one stage's last wave take the other's tasks (e.g. the cage chains in the
    tail of the replica stage: both need only the snapshots). ``parts``: [(name, tasks,
    work(task), cost(task) or None)]; each task is journalled under its stage's name, so a resumed
    run (or one with another plan) finds it. With several parts every cost must be given, in one
    unit (seconds, roughly). ``groups``: one part only. Returns the wall time (s)."""
    if groups is not None and len(parts) > 1:
        raise ValueError("engine groups run one stage at a time")
    todo, costs = [], []
    for name, tasks, work, cost in parts:
        done = store.completed(name)
        left = [t for t in tasks if task_key(t) not in done]
        if len(left) < len(tasks):
            ctx.log(f"  [{name}] resuming: {len(tasks) - len(left)} of {len(tasks)} tasks already "
                    "done")
        todo += [(name, t) for t in left]
        if cost is None and len(parts) > 1:
            raise ValueError(f"run_stages: stage {name!r} has no task costs")
        costs += [1.0 if cost is None else float(cost(t)) for t in left]
    single_cost = parts[0][3] if len(parts) == 1 else True
    todo, costs = lpt_order(todo, None if single_cost is None else costs)
    works = {name: work for name, _, work, _ in parts}
    committed = {name: 0 for name, _, _, _ in parts}
    queue = TaskQueue(ctx, title, todo, costs)
    if groups is None or groups.leader:
        for name, task in queue:
            if groups is not None:
                groups.comm.bcast(task, root=0)
            interrupt.slow_point(name, task)
            works[name](task)
            store.commit(name, task)
            committed[name] += 1
            interrupt.fault_point(name, committed[name], ctx.rank)
            if interrupt.requested():
                break
        if groups is not None:
            groups.comm.bcast(None, root=0)     # no more tasks for this group
    elif groups.comm is not None:
        name, work = parts[0][0], parts[0][2]
        while True:
            task = groups.comm.bcast(None, root=0)
            if task is None:
                break
            interrupt.slow_point(name, task)
            work(task)
    elapsed, stats = queue.close()
    LAST_STATS[title] = stats
    store.sync()
    return elapsed


LAST_STATS = {}   # stage → [(tasks taken, busy s, counter s) per rank] of the last run_tasks


class EngineCache:
    """One LAMMPS engine per rank, created on first use and reused by every task."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.engine = None

    def get(self):
        if self.engine is None:
            from .md import make_engine
            self.engine = make_engine(self.cfg)
        return self.engine


def snapshots(ctx, points, store, engines, rng=None):
    """Stage 1: independent equilibrated snapshots (one task per state point and snapshot), on
    engine groups of ``parallel.engine_ranks`` ranks when that is > 1 (glasshpc.md.group).
    ``points``: [Point] or a Config (every stage takes either). ``rng(point, s)``: the snapshot's
    Generator (default task_rng(point seed, 'snapshot', s); the softness stages keep theirs,
    softness_parts.snapshot_rng)."""
    points = as_points(points)
    cfg = points[0].cfg           # engine settings (model, timestep, skin, suffix) are the run's
    m, md = cfg.model, cfg.md
    K = int(cfg.parallel.engine_ranks)
    groups = engine = None
    if K > 1 and cfg.snapshots.source == "lammps":
        from .md.group import EngineGroups, GroupLammpsEngine
        groups = EngineGroups(ctx, K)
        ctx.log(f"  [snapshots] {groups.count} engine groups of {K} ranks"
                + (f" ({ctx.size - groups.count * K} ranks idle in this stage)"
                   if ctx.size % K else ""))
        if groups.comm is not None:
            engine = GroupLammpsEngine(get_model(m.name), md.timestep, md.skin, groups.comm,
                                       suffix=md.suffix)
    writer = groups is None or groups.leader

    def work(p, s):
        c = p.cfg
        if c.snapshots.source == "files":   # bring your own snapshots (checked before the run)
            from .cluster import snapshot_from_file
            pos, types, box = snapshot_from_file(c, s)
        else:
            mm, mdc = c.model, c.md
            pos, types, box = (engine or engines.get()).prepare_snapshot(
                mm.n_particles, mm.density, mm.temperature,
                task_rng(c.seed, "snapshot", s) if rng is None else rng(p, s),
                mdc.melt_temperature, mdc.melt_time, mdc.nvt_time, mdc.nve_time, mdc.tdamp)
        if not writer:
            return
        v = p.view(store)
        v.write("snapshots/positions", (s,), pos)
        v.write("snapshots/types", (s,), types)
        v.write("snapshots/box", (s,), box)
        v.write("snapshots/sq_AA", (s,), dynamics.structure_factor(pos[types == 0], box, Q_EDGES))

    try:
        return run_pooled(ctx, "snapshots", points, lambda p: range(p.cfg.snapshots.count), work,
                          store, cost=_sweep_cost(points, lambda p, s: prep_steps(p.cfg)),
                          groups=groups)
    finally:
        if engine is not None:
            engine.close()
        if groups is not None:
            groups.free()


def replicas(ctx, points, store, engines):
    """Stage 2: the isoconfigurational ensemble, one task per (state point, snapshot, replica):
    the float32 displacements, or with ``iso.store_displacements: false`` only their per-replica
    sums (dynamics.replica_sums of the same float32 array, so the dynamics stage gets the same
    numbers either way). Returns the stage wall time (s)."""
    points = as_points(points)
    return run_stages(ctx, "replicas", [replica_part(
        points, store, engines, _sweep_cost(points, lambda p, t: int(p.cfg.replica_steps()[-1])))],
        store)


# rough task costs (s per atom-step, per trial move) to order two stages' tasks in one queue
MD_SECONDS_PER_ATOM_STEP = 1e-6
MC_SECONDS_PER_MOVE = 2.5e-7   # KA, 4 moves per visit (bench/bench_cage.py)


def replicas_and_cage(ctx, points, store, engines):
    """The replica tasks and the cage-state chains in one queue (:func:`run_stages`): both need
    only the snapshots, and the chains (shorter) fill the ranks the replica stage's last wave
    leaves idle. The chain average (``cage.chains`` > 1) follows. Returns the wall time (s)."""
    points = as_points(points)
    rep = replica_part(points, store, engines, lambda p, t: MD_SECONDS_PER_ATOM_STEP
                       * p.cfg.model.n_particles * float(p.cfg.replica_steps()[-1]))
    chains, finish = cage_part(points, store, cost=True)
    wall = run_stages(ctx, "replicas + cage states", [rep, chains], store)
    return wall + (finish(ctx) if finish is not None else 0.0)


def replica_part(points, store, engines, cost=None):
    """The replica stage as a :func:`pooled_part` (``cost(point, task)`` or None)."""
    cache = {}
    sums = {}
    for p in points:
        if not p.cfg.iso.store_displacements:
            c = p.cfg
            sums[p.index] = (wave_number(c, p.view(store)),   # needs only S_AA of stage 1
                             dynamics.debye_waller_index(c.replica_times()),
                             len(get_model(c.model.name).species))

    def work(p, task):
        s, r = task
        c, v = p.cfg, p.view(store)
        if (p.index, s) not in cache:
            cache.clear()
            cache[p.index, s] = (v.read("snapshots/positions", (s,)),
                                 v.read("snapshots/types", (s,)), v.read("snapshots/box", (s,)))
        pos, types, box = cache[p.index, s]
        d = engines.get().run_replica(pos, types, box, c.model.temperature,
                                      task_rng(c.seed, "replica", s, r), c.replica_steps())
        d = d.astype(np.float32)
        if c.iso.store_displacements:
            v.write("iso/displacements", (s, r), d)
            return
        q, k_dw, n_species = sums[p.index]
        for key, value in dynamics.replica_sums(d, types, q, n_species, k_dw,
                                                c.dynamics.propensity).items():
            v.write(f"replica_sums/{key}", (s, r), value)

    def tasks(p):
        return [(s, r) for s in range(p.cfg.snapshots.count) for r in range(p.cfg.iso.replicas)]

    return pooled_part("replicas", points, tasks, work, cost)


def wave_number(cfg, store):
    """q of F_s: the config value, or the first peak of S_AA(q) averaged over snapshots."""
    if cfg.dynamics.q != "auto":
        return float(cfg.dynamics.q)
    # same box for every snapshot, hence the same empty (NaN) bins: a plain mean keeps them NaN
    sq = np.mean([store.read("snapshots/sq_AA", (s,)) for s in range(cfg.snapshots.count)], axis=0)
    return dynamics.first_peak(Q_EDGES, sq)


def dynamics_stage(ctx, points, store, q):
    """Stage 3: propensity, F_s(q,t), the MSD per species (for the end of the ballistic regime,
    dynamics.ballistic_end) and the local Debye–Waller factor ⟨|Δr_i(t≈1)|²⟩ ([DW]) per snapshot:
    per-replica sums (dynamics.replica_sums, of the stored displacements or as stored by the
    replica stage) added in replica order (dynamics.combine_replica_sums), one replica in memory
    at a time; also every replica's own F̂_s(q,t) (``dynamics/fs_replicas``, for χ₄ of F_s,
    dynamics.chi4_fs). Both paths give bitwise the same numbers. ``q``: the wave number, or one
    per state point (list)."""
    points = as_points(points)
    qs = list(q) if isinstance(q, (list, tuple)) else [q] * len(points)
    q_of = {p.index: float(qq) for p, qq in zip(points, qs)}

    def work(p, s):
        c, v = p.cfg, p.view(store)
        n_species = len(get_model(c.model.name).species)
        k_dw = dynamics.debye_waller_index(c.replica_times())
        kind = c.dynamics.propensity
        types = v.read("snapshots/types", (s,))
        if c.iso.store_displacements:
            parts = (dynamics.replica_sums(v.read("iso/displacements", (s, r)), types,
                                           q_of[p.index], n_species, k_dw, kind)
                     for r in range(c.iso.replicas))
        else:
            parts = ({k: v.read(f"replica_sums/{k}", (s, r)) for k in dynamics.REPLICA_SUMS}
                     for r in range(c.iso.replicas))
        res = dynamics.combine_replica_sums(parts, types, n_species)
        v.write("propensity", (s,), res["propensity"])
        v.write("dynamics/fs", (s,), res["fs"])
        v.write("dynamics/msd", (s,), res["msd"])
        v.write("dynamics/fs_replicas", (s,), res["fs_replicas"])
        v.write("dynamics/debye_waller", (s,), res["debye_waller"])

    return run_pooled(ctx, "dynamics", points, lambda p: range(p.cfg.snapshots.count), work,
                      store)


GAA_DR = 0.01                        # bin of g_AA(r) for r_generation: auto (σ_AA)
GAA_BINS = int(round(5.0 / GAA_DR))  # its widest range, 5 σ_AA (descriptors.gr_range)


def gaa_range(cfg, store):
    """(r_max, n_bins) of g_AA for r_generation: the range descriptors.gr_range gives for every
    snapshot's box (the same on every rank: boxes are written by stage 1)."""
    return gr_range([store.read("snapshots/box", (s,)) for s in range(cfg.snapshots.count)],
                    dr=GAA_DR)


def generation_radius(cfg, store):
    """r_c of generation averaging: the config value or the second minimum of g_AA over all
    snapshots (descriptors.second_minimum_gAA, Eq. 9 [CAGE]) from the per-snapshot histograms of the
    static stage, added in snapshot order (integer counts: exact)."""
    if cfg.descriptors.r_generation != "auto":
        return float(cfg.descriptors.r_generation)
    S = cfg.snapshots.count
    _, n_bins = gaa_range(cfg, store)
    counts = np.zeros(n_bins)
    norm = 0.0
    for s in range(S):
        counts += store.read("snapshots/gAA_counts", (s,))[:n_bins]
        norm += float(store.read("snapshots/gAA_norm", (s,)))
    edges = np.arange(n_bins + 1) * GAA_DR
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (norm * shell) if norm > 0 else np.zeros(n_bins)
    return second_minimum(0.5 * (edges[1:] + edges[:-1]), g, GAA_DR)


def static_stage(ctx, points, store, engines):
    """Per-particle potential energy and |F^net| at t = 0 ([CAGE] Fig. 5), and with
    ``r_generation: auto`` the snapshot's g_AA pair histogram (descriptors.pair_histogram), one task
    per state point and snapshot, whatever the snapshots' source (MD, files, imported data)."""
    points = as_points(points)
    bins = {p.index: gaa_range(p.cfg, p.view(store))[1] for p in points
            if p.cfg.descriptors.r_generation == "auto"}

    def work(p, s):
        v = p.view(store)
        if p.index in bins:
            n_bins = bins[p.index]
            counts, norm = pair_histogram(v.read("snapshots/positions", (s,)),
                                          v.read("snapshots/types", (s,)),
                                          v.read("snapshots/box", (s,)), ((0, 0),), n_bins,
                                          GAA_DR)
            padded = np.zeros(GAA_BINS)
            padded[:n_bins] = counts[0, 0]
            v.write("snapshots/gAA_counts", (s,), padded)
            v.write("snapshots/gAA_norm", (s,), np.array(norm[0, 0]))
        energy, force = engines.get().static_properties(v.read("snapshots/positions", (s,)),
                                                        v.read("snapshots/types", (s,)),
                                                        v.read("snapshots/box", (s,)))
        v.write("snapshots/energy", (s,), energy)
        v.write("snapshots/net_force", (s,), np.linalg.norm(force, axis=1))

    return run_pooled(ctx, "static", points, lambda p: range(p.cfg.snapshots.count), work, store)


def inherent_stage(ctx, points, store, engines):
    """Inherent states r^IS by FIRE through LAMMPS (SCIENCE.md §3), one task per state point and
    snapshot: positions in the image of r^init, |r^IS − r^init|, per-particle energy E_IS, final
    max |F|."""
    points = as_points(points)

    def work(p, s):
        inh, v = p.cfg.inherent, p.view(store)
        pos = v.read("snapshots/positions", (s,))
        r_is, energy, fmax = engines.get().inherent_state(
            pos, v.read("snapshots/types", (s,)), v.read("snapshots/box", (s,)),
            inh.force_tolerance, inh.max_iterations)
        v.write("states/inherent/positions", (s,), r_is)
        v.write("states/inherent/displacement", (s,), np.linalg.norm(r_is - pos, axis=1))
        v.write("states/inherent/energy", (s,), energy)
        v.write("states/inherent/max_force", (s,), np.array(fmax))

    return run_pooled(ctx, "inherent states", points, lambda p: range(p.cfg.snapshots.count),
                      work, store)


def cage_seed(cfg, s, k=0):
    """Seed (int) of cage-MC chain ``k`` of snapshot ``s``: from task_rng(seed, 'cage', s) for
    chain 0 — the single-chain seed, so a ``cage.chains: 1`` run and chain 0 of any run agree — and
    from task_rng(seed, 'cage', s, k) for k ≥ 1. A function of the task identity only."""
    ident = (s,) if k == 0 else (s, k)
    return int(task_rng(cfg.seed, "cage", *ident).integers(2 ** 62))


def cage_stage(ctx, points, store):
    """Cage states r^CS by constrained canonical MC at the snapshot temperature ([CAGE] Eq. 10,
    SCIENCE.md §3). One task per (state point, snapshot, chain), seeded by :func:`cage_seed` of
    the state point's config.

    With ``cage.chains`` = K > 1 every chain is stored (``states/cage/chains/*``) and a second pass
    (one task per snapshot) writes r^CS = the mean of the K chain averages (summed in chain order:
    rank-count independent), Δr^CS = |r^CS − r^init|, acceptance and step = their means over the
    chains, and the per-species split-half Pearson of Δr^CS (states.chains.split_half_pearson).

    Convergence diagnostics (any K, ``states/cage/convergence/*``): every chain task writes its
    half-measurement means and variances (cage_state's half_positions / half_variance) and
    states.chains.half_diagnostics (⟨Δr^CS⟩ per half, Pearson of the halves, mean shift and its
    standard error); the per-snapshot task writes the per-particle split-R̂ across the 2K
    half-chains (states.chains.split_rhat). Returns the stage wall time (s)."""
    part, finish = cage_part(points, store)
    wall = run_stages(ctx, part[0], [part], store)
    return wall + (finish(ctx) if finish is not None else 0.0)


def cage_part(points, store, cost=None):
    """The chain tasks of :func:`cage_stage` as a :func:`pooled_part`, and ``finish(ctx)`` (the
    chain-average pass, returning its wall time) or None (one chain: nothing to average).
    ``cost=True``: task costs in seconds (:data:`MC_SECONDS_PER_MOVE`), for a shared queue."""
    points = as_points(points)
    cfg = points[0].cfg
    c = cfg.cage                      # cage settings are the run's (not overridable)
    K = c.chains
    model = get_model(cfg.model.name)
    potential = cage_potential(cfg.model.name)
    sigma = model.sigma_self()
    n_species = len(model.species)
    conv = "states/cage/convergence/"

    def snap_tasks(p):
        return range(p.cfg.snapshots.count)

    sweeps = c.equilibration_sweeps + c.measurement_sweeps
    chain_cost = None if not cost else (
        lambda p, t: MC_SECONDS_PER_MOVE * sweeps * p.cfg.model.n_particles)

    def chain(p, s, k):
        v = p.view(store)
        pos = v.read("snapshots/positions", (s,))
        return cage_state(pos, v.read("snapshots/types", (s,)),
                          v.read("snapshots/box", (s,)), potential, p.cfg.model.temperature,
                          c.equilibration_sweeps, c.measurement_sweeps, cage_seed(p.cfg, s, k),
                          cage=c.cage, cage_radius=c.radius * sigma, cage_sigma=sigma,
                          target_acceptance=c.target_acceptance, moves_per_visit=c.moves_per_visit)

    def write_halves(v, s, k, res, init, types):
        v.write(conv + "half_positions", (s, k), res["half_positions"])
        v.write(conv + "half_variance", (s, k), res["half_variance"])
        d = half_diagnostics(res["half_positions"], init, types, n_species)
        v.write(conv + "half_displacement", (s, k), d["displacement"])
        for name in ("half_pearson", "shift", "shift_se"):
            v.write(conv + name, (s, k), d[name.replace("half_", "")])

    samples = cage_passes(c.measurement_sweeps, c.moves_per_visit)   # one sample per pass

    def write_rhat(v, s, halves, variances):   # half lengths h, P − h: mean P / 2 samples
        v.write(conv + "rhat", (s,), split_rhat(halves, variances, samples / 2))

    def write_state(v, s, positions, displacement, acceptance, step):
        v.write("states/cage/positions", (s,), positions)
        v.write("states/cage/displacement", (s,), displacement)
        v.write("states/cage/acceptance", (s,), np.array(acceptance))
        v.write("states/cage/step", (s,), np.array(step))

    if K == 1:
        def work(p, s):
            v = p.view(store)
            res = chain(p, s, 0)
            write_state(v, s, res["positions"], res["displacement"], res["acceptance"],
                        res["step"])
            write_halves(v, s, 0, res, v.read("snapshots/positions", (s,)),
                         v.read("snapshots/types", (s,)))
            write_rhat(v, s, res["half_positions"][None], res["half_variance"][None])

        return pooled_part("cage states", points, snap_tasks, work, chain_cost), None

    def work_chain(p, task):
        s, k = task
        v = p.view(store)
        res = chain(p, s, k)
        v.write("states/cage/chains/positions", (s, k), res["positions"])
        v.write("states/cage/chains/acceptance", (s, k), np.array(res["acceptance"]))
        v.write("states/cage/chains/step", (s, k), np.array(res["step"]))
        write_halves(v, s, k, res, v.read("snapshots/positions", (s,)),
                     v.read("snapshots/types", (s,)))

    def work_mean(p, s):
        v = p.view(store)
        init = v.read("snapshots/positions", (s,))
        per_chain = np.stack([v.read("states/cage/chains/positions", (s, k))
                              for k in range(K)])
        r_cs = average_chains(per_chain)
        acceptance, step = (np.mean([v.read(f"states/cage/chains/{name}", (s, k))
                                     for k in range(K)]) for name in ("acceptance", "step"))
        write_state(v, s, r_cs, np.linalg.norm(r_cs - init, axis=1), acceptance, step)
        v.write("states/cage/chains/split_half_pearson", (s,),
                split_half_pearson(per_chain, init, v.read("snapshots/types", (s,)),
                                   len(model.species)))
        write_rhat(v, s, np.stack([v.read(conv + "half_positions", (s, k)) for k in range(K)]),
                   np.stack([v.read(conv + "half_variance", (s, k)) for k in range(K)]))

    part = pooled_part("cage states", points,
                       lambda p: [(s, k) for s in snap_tasks(p) for k in range(K)], work_chain,
                       chain_cost)
    return part, lambda ctx: run_pooled(ctx, "cage chain average", points, snap_tasks, work_mean,
                                        store)


def descriptor_states(cfg):
    """{state name: dataset of its coordinates} for the states this run computes."""
    states = {"init": "snapshots/positions"}
    if cfg.inherent.enabled:
        states["is"] = "states/inherent/positions"
    if cfg.cage.enabled:
        states["cs"] = "states/cage/positions"
    return states


def voronoi_blocks(cfg):
    """{Voronoi block: dataset of its coordinates} for the blocks some feature set names
    (config.VORONOI_BLOCKS; only those are computed: they need the optional freud)."""
    from .config import VORONOI_BLOCKS
    states = descriptor_states(cfg)
    used = {b for fs in cfg.fits.feature_sets.values() for b in fs.blocks}
    return {b: states[st] for b, st in VORONOI_BLOCKS.items() if b in used}


def descriptors_stage(ctx, points, store, spec):
    """Descriptors X^init, X^IS, X^CS on the same grid (SCIENCE.md §3–4), and the Voronoi blocks
    the feature sets name (structure/voronoi.py), one task per state point and snapshot.
    ``spec``: the DescriptorSpec, or one per state point (list: r_c of the generation averaging is
    a state point's own)."""
    points = as_points(points)
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec] * len(points)
    spec_of = {p.index: sp for p, sp in zip(points, specs)}

    def work(p, s):
        v = p.view(store)
        types = v.read("snapshots/types", (s,))
        box = v.read("snapshots/box", (s,))
        for state, source in descriptor_states(p.cfg).items():
            v.write(f"descriptors/{state}", (s,),
                    compute_descriptors(v.read(source, (s,)), types, box, spec_of[p.index]))
        for block, source in voronoi_blocks(p.cfg).items():
            v.write(f"descriptors/{block}", (s,), voronoi_features(v.read(source, (s,)), box))

    return run_pooled(ctx, "descriptors", points, lambda p: range(p.cfg.snapshots.count), work,
                      store)
