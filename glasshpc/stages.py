"""The stages of a run, in data-flow order: snapshots → replicas → dynamics → descriptors → fits.

Reduced LJ units of species A. Every stage has the same contract (DESIGN.md): a task list that is a
pure function of the config; each task seeds itself from (config seed, stage, task identity) and
writes its result to its own slot of the store; ranks take tasks round-robin. Hence results do not
depend on the number of ranks. Collective operations happen only at stage boundaries
(``store.sync``) and inside the distributed fits.
"""
import numpy as np

from . import dynamics
from .models import get_model
from .parallel import Progress, task_rng
from .structure.descriptors import DescriptorSpec, compute_descriptors, second_minimum_gAA, spec_from_config

Q_EDGES = dynamics.q_grid()


def layout(cfg, n_features):
    """Datasets written by tasks: name → (shape, dtype). The leading axes are the task slots."""
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    T = len(cfg.replica_steps())
    n_species = len(get_model(cfg.model.name).species)
    return {
        "snapshots/positions": ((S, N, 3), np.float64),
        "snapshots/types": ((S, N), np.int32),
        "snapshots/box": ((S, 3), np.float64),
        "snapshots/sq_AA": ((S, len(Q_EDGES) - 1), np.float64),
        "iso/displacements": ((S, R, T, N, 3), np.float32),
        "propensity": ((S, T, N), np.float64),
        "dynamics/fs": ((S, n_species, T), np.float64),
        "descriptors/init": ((S, N, n_features), np.float64),
    }


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


def run_tasks(ctx, name, tasks, work, store):
    """Run ``work(task)`` for this rank's share of ``tasks`` with progress; then sync the store.
    Returns the stage wall time (s)."""
    progress = Progress(ctx, name, len(tasks))
    for task in ctx.mine(tasks):
        work(task)
        store.flush()
        progress.tick()
    elapsed = progress.close()
    store.sync()
    return elapsed


class EngineCache:
    """One LAMMPS engine per rank, created on first use and reused by every task."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.engine = None

    def get(self):
        if self.engine is None:
            from .md.lammps import LammpsEngine
            self.engine = LammpsEngine(get_model(self.cfg.model.name), self.cfg.md.timestep,
                                       self.cfg.md.skin)
        return self.engine


def snapshots(ctx, cfg, store, engines):
    """Stage 1: independent equilibrated snapshots (one task per snapshot)."""
    m, md = cfg.model, cfg.md

    def work(s):
        eng = engines.get()
        pos, types, box = eng.prepare_snapshot(
            m.n_particles, m.density, m.temperature, task_rng(cfg.seed, "snapshot", s),
            md.melt_temperature, md.melt_time, md.nvt_time, md.nve_time, md.tdamp)
        store.write("snapshots/positions", (s,), pos)
        store.write("snapshots/types", (s,), types)
        store.write("snapshots/box", (s,), box)
        store.write("snapshots/sq_AA", (s,), dynamics.structure_factor(pos[types == 0], box, Q_EDGES))

    return run_tasks(ctx, "snapshots", list(range(cfg.snapshots.count)), work, store)


def replicas(ctx, cfg, store, engines):
    """Stage 2: the isoconfigurational ensemble, one task per (snapshot, replica)."""
    steps = cfg.replica_steps()
    cache = {}

    def work(task):
        s, r = task
        if s not in cache:
            cache.clear()
            cache[s] = (store.read("snapshots/positions", (s,)),
                        store.read("snapshots/types", (s,)), store.read("snapshots/box", (s,)))
        pos, types, box = cache[s]
        d = engines.get().run_replica(pos, types, box, cfg.model.temperature,
                                      task_rng(cfg.seed, "replica", s, r), steps)
        store.write("iso/displacements", (s, r), d.astype(np.float32))

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
    """Stage 3: propensity and F_s(q,t) per snapshot from its replicas' displacements."""
    n_species = len(get_model(cfg.model.name).species)

    def work(s):
        disp = np.stack([store.read("iso/displacements", (s, r)) for r in range(cfg.iso.replicas)])
        types = store.read("snapshots/types", (s,))
        store.write("propensity", (s,), dynamics.propensity(disp, cfg.dynamics.propensity))
        store.write("dynamics/fs", (s,),
                    dynamics.self_intermediate_scattering(disp, types, q, n_species))

    return run_tasks(ctx, "dynamics", list(range(cfg.snapshots.count)), work, store)


def generation_radius(cfg, store):
    """r_c of generation averaging: the config value or the second minimum of g_AA (all snapshots)."""
    if cfg.descriptors.r_generation != "auto":
        return float(cfg.descriptors.r_generation)
    S = cfg.snapshots.count
    return second_minimum_gAA([store.read("snapshots/positions", (s,)) for s in range(S)],
                              [store.read("snapshots/types", (s,)) for s in range(S)],
                              [store.read("snapshots/box", (s,)) for s in range(S)])


def descriptors_stage(ctx, cfg, store, spec):
    """Stage 4: descriptors X^init of every snapshot (SCIENCE.md §4)."""

    def work(s):
        x = compute_descriptors(store.read("snapshots/positions", (s,)),
                                store.read("snapshots/types", (s,)),
                                store.read("snapshots/box", (s,)), spec)
        store.write("descriptors/init", (s,), x)

    return run_tasks(ctx, "descriptors", list(range(cfg.snapshots.count)), work, store)
