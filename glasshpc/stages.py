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
from .states.cage import cage_state
from .states.chains import (average_chains, half_diagnostics, split_half_pearson,
                             split_rhat)
from .store import task_key
from .structure.descriptors import (DescriptorSpec, compute_descriptors, gr_range, pair_histogram,
                                    second_minimum, spec_from_config)

Q_EDGES = dynamics.q_grid()


def layout(cfg, n_features):
    """Datasets written by tasks: name → (shape, dtype). The leading axes are the task slots."""
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    T = len(cfg.replica_steps())
    n_species = len(get_model(cfg.model.name).species)
    out = {
        "snapshots/positions": ((S, N, 3), np.float64),
        "snapshots/types": ((S, N), np.int32),
        "snapshots/box": ((S, 3), np.float64),
        "snapshots/sq_AA": ((S, len(Q_EDGES) - 1), np.float64),
        "propensity": ((S, T, N), np.float64),
        "dynamics/fs": ((S, n_species, T), np.float64),
        "dynamics/msd": ((S, n_species, T), np.float64),
        "dynamics/fs_replicas": ((S, R, n_species, T), np.float64),
        "snapshots/energy": ((S, N), np.float64),
        "snapshots/net_force": ((S, N), np.float64),
        "dynamics/debye_waller": ((S, N), np.float64),
        "descriptors/init": ((S, N, n_features), np.float64),
    }
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
    done = store.completed(name)
    todo = [t for t in tasks if task_key(t) not in done]
    if len(todo) < len(tasks):
        ctx.log(f"  [{name}] resuming: {len(tasks) - len(todo)} of {len(tasks)} tasks already done")
    todo, costs = lpt_order(todo, None if cost is None else [cost(t) for t in todo])
    queue = TaskQueue(ctx, name, todo, costs)
    if groups is None or groups.leader:
        for n, task in enumerate(queue, start=1):
            if groups is not None:
                groups.comm.bcast(task, root=0)
            interrupt.slow_point(name, task)
            work(task)
            store.commit(name, task)
            interrupt.fault_point(name, n, ctx.rank)
            if interrupt.requested():
                break
        if groups is not None:
            groups.comm.bcast(None, root=0)     # no more tasks for this group
    elif groups.comm is not None:
        while True:
            task = groups.comm.bcast(None, root=0)
            if task is None:
                break
            interrupt.slow_point(name, task)
            work(task)
    elapsed, stats = queue.close()
    LAST_STATS[name] = stats
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


def snapshots(ctx, cfg, store, engines):
    """Stage 1: independent equilibrated snapshots (one task per snapshot), on engine groups of
    ``parallel.engine_ranks`` ranks when that is > 1 (glasshpc.md.group)."""
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

    def work(s):
        if cfg.snapshots.source == "files":   # bring your own snapshots (checked before the run)
            from .cluster import snapshot_from_file
            pos, types, box = snapshot_from_file(cfg, s)
        else:
            pos, types, box = (engine or engines.get()).prepare_snapshot(
                m.n_particles, m.density, m.temperature, task_rng(cfg.seed, "snapshot", s),
                md.melt_temperature, md.melt_time, md.nvt_time, md.nve_time, md.tdamp)
        if not writer:
            return
        store.write("snapshots/positions", (s,), pos)
        store.write("snapshots/types", (s,), types)
        store.write("snapshots/box", (s,), box)
        store.write("snapshots/sq_AA", (s,), dynamics.structure_factor(pos[types == 0], box, Q_EDGES))

    try:
        return run_tasks(ctx, "snapshots", list(range(cfg.snapshots.count)), work, store,
                         groups=groups)
    finally:
        if engine is not None:
            engine.close()
        if groups is not None:
            groups.free()


def replicas(ctx, cfg, store, engines):
    """Stage 2: the isoconfigurational ensemble, one task per (snapshot, replica): the float32
    displacements, or with ``iso.store_displacements: false`` only their per-replica sums
    (dynamics.replica_sums of the same float32 array, so the dynamics stage gets the same
    numbers either way)."""
    steps = cfg.replica_steps()
    cache = {}
    if not cfg.iso.store_displacements:
        q = wave_number(cfg, store)          # needs only S_AA(q) of the snapshot stage
        k_dw = dynamics.debye_waller_index(cfg.replica_times())
        n_species = len(get_model(cfg.model.name).species)

    def work(task):
        s, r = task
        if s not in cache:
            cache.clear()
            cache[s] = (store.read("snapshots/positions", (s,)),
                        store.read("snapshots/types", (s,)), store.read("snapshots/box", (s,)))
        pos, types, box = cache[s]
        d = engines.get().run_replica(pos, types, box, cfg.model.temperature,
                                      task_rng(cfg.seed, "replica", s, r), steps)
        d = d.astype(np.float32)
        if cfg.iso.store_displacements:
            store.write("iso/displacements", (s, r), d)
            return
        for key, value in dynamics.replica_sums(d, types, q, n_species, k_dw,
                                                cfg.dynamics.propensity).items():
            store.write(f"replica_sums/{key}", (s, r), value)

    tasks = [(s, r) for s in range(cfg.snapshots.count) for r in range(cfg.iso.replicas)]
    return run_tasks(ctx, "replicas", tasks, work, store)


def wave_number(cfg, store):
    """q of F_s: the config value, or the first peak of S_AA(q) averaged over snapshots."""
    if cfg.dynamics.q != "auto":
        return float(cfg.dynamics.q)
    # same box for every snapshot, hence the same empty (NaN) bins: a plain mean keeps them NaN
    sq = np.mean([store.read("snapshots/sq_AA", (s,)) for s in range(cfg.snapshots.count)], axis=0)
    return dynamics.first_peak(Q_EDGES, sq)


def dynamics_stage(ctx, cfg, store, q):
    """Stage 3: propensity, F_s(q,t), the MSD per species (for the end of the ballistic regime,
    dynamics.ballistic_end) and the local Debye–Waller factor ⟨|Δr_i(t≈1)|²⟩ ([DW]) per snapshot:
    per-replica sums (dynamics.replica_sums, of the stored displacements or as stored by the
    replica stage) added in replica order (dynamics.combine_replica_sums), one replica in memory
    at a time; also every replica's own F̂_s(q,t) (``dynamics/fs_replicas``, for χ₄ of F_s,
    dynamics.chi4_fs). Both paths give bitwise the same numbers."""
    n_species = len(get_model(cfg.model.name).species)
    k_dw = dynamics.debye_waller_index(cfg.replica_times())
    kind = cfg.dynamics.propensity

    def work(s):
        types = store.read("snapshots/types", (s,))
        if cfg.iso.store_displacements:
            parts = (dynamics.replica_sums(store.read("iso/displacements", (s, r)), types, q,
                                           n_species, k_dw, kind)
                     for r in range(cfg.iso.replicas))
        else:
            parts = ({k: store.read(f"replica_sums/{k}", (s, r)) for k in dynamics.REPLICA_SUMS}
                     for r in range(cfg.iso.replicas))
        res = dynamics.combine_replica_sums(parts, types, n_species)
        store.write("propensity", (s,), res["propensity"])
        store.write("dynamics/fs", (s,), res["fs"])
        store.write("dynamics/msd", (s,), res["msd"])
        store.write("dynamics/fs_replicas", (s,), res["fs_replicas"])
        store.write("dynamics/debye_waller", (s,), res["debye_waller"])

    return run_tasks(ctx, "dynamics", list(range(cfg.snapshots.count)), work, store)


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


def static_stage(ctx, cfg, store, engines):
    """Per-particle potential energy and |F^net| at t = 0 ([CAGE] Fig. 5), and with
    ``r_generation: auto`` the snapshot's g_AA pair histogram (descriptors.pair_histogram), one task
    per snapshot, whatever the snapshots' source (MD, files, imported data)."""
    gaa = cfg.descriptors.r_generation == "auto"
    if gaa:
        _, n_bins = gaa_range(cfg, store)

    def work(s):
        if gaa:
            counts, norm = pair_histogram(store.read("snapshots/positions", (s,)),
                                          store.read("snapshots/types", (s,)),
                                          store.read("snapshots/box", (s,)), ((0, 0),), n_bins,
                                          GAA_DR)
            padded = np.zeros(GAA_BINS)
            padded[:n_bins] = counts[0, 0]
            store.write("snapshots/gAA_counts", (s,), padded)
            store.write("snapshots/gAA_norm", (s,), np.array(norm[0, 0]))
        energy, force = engines.get().static_properties(store.read("snapshots/positions", (s,)),
                                                        store.read("snapshots/types", (s,)),
                                                        store.read("snapshots/box", (s,)))
        store.write("snapshots/energy", (s,), energy)
        store.write("snapshots/net_force", (s,), np.linalg.norm(force, axis=1))

    return run_tasks(ctx, "static", list(range(cfg.snapshots.count)), work, store)


def inherent_stage(ctx, cfg, store, engines):
    """Inherent states r^IS by FIRE through LAMMPS (SCIENCE.md §3), one task per snapshot:
    positions in the image of r^init, |r^IS − r^init|, per-particle energy E_IS, final max |F|."""
    inh = cfg.inherent

    def work(s):
        pos = store.read("snapshots/positions", (s,))
        r_is, energy, fmax = engines.get().inherent_state(
            pos, store.read("snapshots/types", (s,)), store.read("snapshots/box", (s,)),
            inh.force_tolerance, inh.max_iterations)
        store.write("states/inherent/positions", (s,), r_is)
        store.write("states/inherent/displacement", (s,), np.linalg.norm(r_is - pos, axis=1))
        store.write("states/inherent/energy", (s,), energy)
        store.write("states/inherent/max_force", (s,), np.array(fmax))

    return run_tasks(ctx, "inherent states", list(range(cfg.snapshots.count)), work, store)


def cage_seed(cfg, s, k=0):
    """Seed (int) of cage-MC chain ``k`` of snapshot ``s``: from task_rng(seed, 'cage', s) for
    chain 0 — the single-chain seed, so a ``cage.chains: 1`` run and chain 0 of any run agree — and
    from task_rng(seed, 'cage', s, k) for k ≥ 1. A function of the task identity only."""
    ident = (s,) if k == 0 else (s, k)
    return int(task_rng(cfg.seed, "cage", *ident).integers(2 ** 62))


def cage_stage(ctx, cfg, store):
    """Cage states r^CS by constrained canonical MC at the snapshot temperature ([CAGE] Eq. 10,
    SCIENCE.md §3). One task per (snapshot, chain), seeded by :func:`cage_seed`.

    With ``cage.chains`` = K > 1 every chain is stored (``states/cage/chains/*``) and a second pass
    (one task per snapshot) writes r^CS = the mean of the K chain averages (summed in chain order:
    rank-count independent), Δr^CS = |r^CS − r^init|, acceptance and step = their means over the
    chains, and the per-species split-half Pearson of Δr^CS (states.chains.split_half_pearson).

    Convergence diagnostics (any K, ``states/cage/convergence/*``): every chain task writes its
    half-measurement means and variances (cage_state's half_positions / half_variance) and
    states.chains.half_diagnostics (⟨Δr^CS⟩ per half, Pearson of the halves, mean shift and its
    standard error); the per-snapshot task writes the per-particle split-R̂ across the 2K
    half-chains (states.chains.split_rhat). Returns the stage wall time (s)."""
    c = cfg.cage
    K = c.chains
    S = cfg.snapshots.count
    model = get_model(cfg.model.name)
    potential = cage_potential(cfg.model.name)
    sigma = model.sigma_self()

    def chain(s, k):
        pos = store.read("snapshots/positions", (s,))
        return cage_state(pos, store.read("snapshots/types", (s,)),
                          store.read("snapshots/box", (s,)), potential, cfg.model.temperature,
                          c.equilibration_sweeps, c.measurement_sweeps, cage_seed(cfg, s, k),
                          cage=c.cage, cage_radius=c.radius * sigma, cage_sigma=sigma,
                          target_acceptance=c.target_acceptance)

    n_species = len(model.species)
    conv = "states/cage/convergence/"

    def write_halves(s, k, res, init, types):
        store.write(conv + "half_positions", (s, k), res["half_positions"])
        store.write(conv + "half_variance", (s, k), res["half_variance"])
        d = half_diagnostics(res["half_positions"], init, types, n_species)
        store.write(conv + "half_displacement", (s, k), d["displacement"])
        for name in ("half_pearson", "shift", "shift_se"):
            store.write(conv + name, (s, k), d[name.replace("half_", "")])

    def write_rhat(s, halves, variances):   # half lengths h, n − h: mean n / 2 sweeps
        store.write(conv + "rhat", (s,), split_rhat(halves, variances, c.measurement_sweeps / 2))

    def write_state(s, positions, displacement, acceptance, step):
        store.write("states/cage/positions", (s,), positions)
        store.write("states/cage/displacement", (s,), displacement)
        store.write("states/cage/acceptance", (s,), np.array(acceptance))
        store.write("states/cage/step", (s,), np.array(step))

    if K == 1:
        def work(s):
            res = chain(s, 0)
            write_state(s, res["positions"], res["displacement"], res["acceptance"], res["step"])
            write_halves(s, 0, res, store.read("snapshots/positions", (s,)),
                         store.read("snapshots/types", (s,)))
            write_rhat(s, res["half_positions"][None], res["half_variance"][None])

        return run_tasks(ctx, "cage states", list(range(S)), work, store)

    def work_chain(task):
        s, k = task
        res = chain(s, k)
        store.write("states/cage/chains/positions", (s, k), res["positions"])
        store.write("states/cage/chains/acceptance", (s, k), np.array(res["acceptance"]))
        store.write("states/cage/chains/step", (s, k), np.array(res["step"]))
        write_halves(s, k, res, store.read("snapshots/positions", (s,)),
                     store.read("snapshots/types", (s,)))

    def work_mean(s):
        init = store.read("snapshots/positions", (s,))
        per_chain = np.stack([store.read("states/cage/chains/positions", (s, k))
                              for k in range(K)])
        r_cs = average_chains(per_chain)
        acceptance, step = (np.mean([store.read(f"states/cage/chains/{name}", (s, k))
                                     for k in range(K)]) for name in ("acceptance", "step"))
        write_state(s, r_cs, np.linalg.norm(r_cs - init, axis=1), acceptance, step)
        store.write("states/cage/chains/split_half_pearson", (s,),
                    split_half_pearson(per_chain, init, store.read("snapshots/types", (s,)),
                                       len(model.species)))
        write_rhat(s, np.stack([store.read(conv + "half_positions", (s, k)) for k in range(K)]),
                   np.stack([store.read(conv + "half_variance", (s, k)) for k in range(K)]))

    wall = run_tasks(ctx, "cage states", [(s, k) for s in range(S) for k in range(K)],
                     work_chain, store)
    return wall + run_tasks(ctx, "cage chain average", list(range(S)), work_mean, store)


def descriptor_states(cfg):
    """{state name: dataset of its coordinates} for the states this run computes."""
    states = {"init": "snapshots/positions"}
    if cfg.inherent.enabled:
        states["is"] = "states/inherent/positions"
    if cfg.cage.enabled:
        states["cs"] = "states/cage/positions"
    return states


def descriptors_stage(ctx, cfg, store, spec):
    """Descriptors X^init, X^IS, X^CS on the same grid (SCIENCE.md §3–4), one task per snapshot."""
    states = descriptor_states(cfg)

    def work(s):
        types = store.read("snapshots/types", (s,))
        box = store.read("snapshots/box", (s,))
        for state, source in states.items():
            store.write(f"descriptors/{state}", (s,),
                        compute_descriptors(store.read(source, (s,)), types, box, spec))

    return run_tasks(ctx, "descriptors", list(range(cfg.snapshots.count)), work, store)
