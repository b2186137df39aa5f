"""Predicted schedule of a run on P ranks (``python -m glasshpc.run CONFIG --dry-run --ranks P``).

Every task's cost is calibrated by short real runs on this rank (best and worst of ``repeats``, so
the noise of a shared machine is stated as a range), then the dynamic schedule of
:func:`glasshpc.stages.run_tasks` is simulated: tasks sorted longest first, each handed to the
earliest free worker (an engine group of K ranks, or one rank). Per stage the prediction gives
the wall time, the busy fraction (rank-time inside tasks / P × stage wall) and the parallel
efficiency (1-rank wall / (P × P-rank wall); serial work repeated on every rank counts against
it). Seconds of wall time on this machine's cores.

Calibrated pieces (reduced LJ units; N particles of the configured model):
  MD           atom-steps/s of NVE (snapshots: melt + NVT + NVE steps; replicas: the last read-out
               step; static: 2 force evaluations) on a 100-step melt of the model;
  inherent     FIRE seconds per iteration (a run capped at 1000 iterations on that
               configuration) × FIRE_ITERATIONS (5000, assumed: the snapshots do not exist yet);
  cage         trial moves/s of the cage MC and its fixed set-up (two short chains);
  descriptors  one ``compute_descriptors`` per state;
  dynamics     propensity, F_s, MSD, Debye–Waller of a (R, T, N, 3) array;
  fits         one Gram product and one eigendecomposition (at ≤ 1000 features), scaled as
               rows·F² and F³ per (set, species, fold + 1) task, dealt over the ranks
               (glasshpc/learn/fits.py); the MLP and GNN baselines (``fits.mlp``, ``fits.gnn``)
               by a few epochs timed on synthetic rows / the calibration configuration, scaled by
               their flop estimates (``fits.mlp_cost``, ``fits.gnn_cost``), one task per (set,
               species);
  voronoi      one tessellation per Voronoi block (``voronoi``, ``voronoi_is``, ``voronoi_cs``),
               added to the descriptor task.
Not included: numba compilation (``python -m glasshpc.compile`` where available) and the final
assembly of the output file.
"""
import dataclasses
import heapq
import time

import numpy as np

# Efficiency of one LAMMPS instance on K ranks (domain decomposition) relative to K independent
# instances, by atoms per rank: an assumption from LAMMPS's LJ strong-scaling benchmarks (≈ 0.8–0.9
# at a few hundred atoms per core); not measured here (2 shared cores).
GROUP_EFFICIENCY = ((1000, 0.9), (400, 0.8), (0, 0.6))
MIN_ATOMS_PER_RANK = 400    # engine_ranks 'auto' never goes below this
# FIRE iterations per inherent state: the dry run cannot know them for snapshots it has not made;
# STACK.md measured 4727 for KA N = 2000 (to 1e-8). The cost per iteration is calibrated on a
# run capped at FIRE_CALIBRATION_ITERATIONS.
FIRE_ITERATIONS = 5000
FIRE_CALIBRATION_ITERATIONS = 1000


def group_efficiency(n_atoms, k):
    """Assumed parallel efficiency of one LAMMPS instance on ``k`` ranks (1.0 for k = 1)."""
    if k <= 1:
        return 1.0
    per = n_atoms / k
    return next(e for lim, e in GROUP_EFFICIENCY if per >= lim)


def simulate(costs, workers, overhead=0.0):
    """Makespan (s) of dynamic scheduling: ``costs`` (s) in the given order, each task to the
    earliest free of ``workers``; ``overhead`` s added per task (dispatch + commit)."""
    if len(costs) == 0 or workers <= 0:
        return 0.0
    free = [0.0] * min(workers, len(costs))
    heapq.heapify(free)
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c + overhead)
    return max(free)


@dataclasses.dataclass
class Stage:
    """One stage: ``costs`` (s per task on one rank), ``serial`` (s every rank spends outside the
    tasks), ``group`` ranks per task and the group's efficiency."""
    name: str
    costs: np.ndarray
    serial: float = 0.0
    group: int = 1
    efficiency: float = 1.0


def predict(stages, ranks, overhead=0.0):
    """[(name, wall s, busy fraction, efficiency)] per stage and the total row, on ``ranks``."""
    rows, work_total, wall_total = [], 0.0, 0.0
    for st in stages:
        costs = np.sort(np.asarray(st.costs, dtype=np.float64))[::-1]   # LPT
        k = max(1, min(st.group, ranks))
        per_task = costs / (k * st.efficiency)
        span = simulate(per_task, ranks // k, overhead)
        wall = span + st.serial
        work = float(costs.sum()) + st.serial   # the 1-rank wall
        busy = float(per_task.sum()) * k / (ranks * span) if span > 0 else 1.0
        eff = work / (ranks * wall) if wall > 0 else 1.0
        rows.append((st.name, wall, busy, eff))
        work_total += work
        wall_total += wall
    rows.append(("total", wall_total, None,
                 work_total / (ranks * wall_total) if wall_total > 0 else 1.0))
    return rows


def _best_worst(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), max(times)


def calibrate(cfg, repeats=3):
    """Measured costs on this rank: dict name → (best, worst) seconds or rate (see module doc).
    Single-threaded BLAS, as in a run on several ranks (glasshpc.run limits it there)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return _calibrate(cfg, repeats)


def _calibrate(cfg, repeats):
    from . import dynamics, stages as st
    from .md import make_engine
    from .models import cage_potential, get_model
    from .parallel import task_rng
    m, md = cfg.model, cfg.md
    N = m.n_particles
    out = {}
    eng = make_engine(cfg)
    try:
        rng = task_rng(cfg.seed, "calibration")
        pos, types, box = eng.prepare_snapshot(N, m.density, m.temperature, rng,
                                               md.melt_temperature, 100 * md.timestep, 0.0, 0.0,
                                               md.tdamp)
        steps = 300
        b, w = _best_worst(lambda: eng.run_replica(pos, types, box, m.temperature, rng, [steps]),
                           repeats)
        out["md"] = (N * steps / b, N * steps / w)     # atom-steps/s: best, worst
        if cfg.inherent.enabled:
            cap = min(FIRE_CALIBRATION_ITERATIONS, cfg.inherent.max_iterations)

            def fire():
                try:
                    eng.inherent_state(pos, types, box, cfg.inherent.force_tolerance, cap)
                except RuntimeError:   # not converged within the cap: expected
                    pass
                lmp = getattr(eng, "lmp", None)   # EDMD engines: the whole run is timed
                fire.iterations = (max(1, int(lmp.extract_global("ntimestep"))) if lmp is not None
                                   else FIRE_ITERATIONS)
            t = _best_worst(fire, max(1, min(2, repeats)))
            per = tuple(x / fire.iterations for x in t)
            its = min(FIRE_ITERATIONS, cfg.inherent.max_iterations)
            out["inherent"] = tuple(p * its for p in per)
    finally:
        eng.close()
    pos = np.asarray(pos)
    if cfg.cage.enabled:
        from .states.cage import cage_state, passes
        potential = cage_potential(m.name)
        sigma = get_model(m.name).sigma_self()
        c = cfg.cage

        kv = c.moves_per_visit   # sweeps per pass: the chains below are whole passes

        def chain(sweeps):   # one pass of equilibration
            cage_state(pos, types, box, potential, m.temperature, kv, sweeps, 1, cage=c.cage,
                       cage_radius=c.radius * sigma, cage_sigma=sigma,
                       target_acceptance=c.target_acceptance, moves_per_visit=kv)
        chain(kv)   # compiles (cache) once
        # the long chain ≈ 2·10⁶ more trial moves than the short one: ≈ 0.5 s, well above the noise
        short = kv
        long_ = short + kv * passes(max(20, int(2e6 / N)), kv)
        t_s = _best_worst(lambda: chain(short), repeats)
        t_l = _best_worst(lambda: chain(long_), repeats)
        per = tuple(max(1e-12, (t_l[i] - t_s[i]) / ((long_ - short) * N)) for i in (0, 1))
        fixed = tuple(max(0.0, t_s[i] - (short + kv) * N * per[i]) for i in (0, 1))
        out["cage_move"], out["cage_fixed"] = per, fixed
    from .structure.descriptors import compute_descriptors
    spec = st.descriptor_spec(cfg, 1.5 if cfg.descriptors.r_generation == "auto"
                              else cfg.descriptors.r_generation)
    compute_descriptors(pos, types, box, spec)   # compiles once
    out["descriptors"] = _best_worst(lambda: compute_descriptors(pos, types, box, spec), repeats)
    if cfg.imported is not None:   # one file read and checked, and its S_AA(q): the import task
        from .io.imported import _conform, _read, imported_files
        first = imported_files(cfg)[0]

        def import_one():
            p, t, b, _ = _conform(cfg, _read(cfg, first), first)
            dynamics.structure_factor(p[t == 0], b, st.Q_EDGES)
        out["import"] = _best_worst(import_one, repeats)
    R, T = cfg.iso.replicas, len(cfg.replica_steps())
    n_species = len(get_model(m.name).species)
    disp = np.random.default_rng(0).normal(0, 0.3, (R, T, N, 3)).astype(np.float32)
    times = cfg.replica_times() if cfg.times_known else np.arange(1.0, T + 1)

    def dyn():
        dynamics.propensity(disp, cfg.dynamics.propensity)
        dynamics.self_intermediate_scattering(disp, types, 7.25, n_species)
        dynamics.mean_squared_displacement(disp, types, n_species)
        dynamics.debye_waller(disp, times)
    out["dynamics"] = _best_worst(dyn, repeats)
    # timed at ≤ 1000 columns and scaled as F² (Gram) and F³ (eigh): a 3000² eigh takes ~10 s
    F = min(_max_features(cfg, spec), 1000)
    rows = 4000
    X = np.random.default_rng(1).normal(size=(rows, F))
    g = X.T @ X
    out["gram_per_row_f2"] = tuple(t / (rows * F * F) for t in
                                   _best_worst(lambda: X.T @ X, max(1, min(2, repeats))))
    out["eigh_per_f3"] = tuple(t / F ** 3 for t in
                               _best_worst(lambda: np.linalg.eigh(g), max(1, min(2, repeats))))
    if st.voronoi_blocks(cfg):
        from .structure.voronoi import voronoi_features
        voronoi_features(pos, box)   # loads freud once
        out["voronoi"] = _best_worst(lambda: voronoi_features(pos, box), repeats)
    out.update(_calibrate_networks(cfg, pos, types, box, F, T, max(1, min(2, repeats))))
    return out


def _calibrate_networks(cfg, pos, types, box, F, T, repeats):
    """Seconds per estimated flop of the MLP and GNN baselines (``fits.mlp_cost``, ``fits.gnn_cost``):
    3 Adam epochs of the MLP on 2000 rows of F columns; 2 epochs of the GNN on the calibration
    configuration (its real edges, random node inputs of F ≤ 64 columns). PyTorch's speed on small
    layers is far from the BLAS rate of the ridge, hence measured, not scaled."""
    from .learn import fits as fits_mod
    out = {}
    rng = np.random.default_rng(2)
    if cfg.fits.mlp.layers:
        from .learn.mlp import mlp_baseline
        c = dataclasses.replace(cfg.fits.mlp, max_iter=3)
        rows = 2000
        X, Y = rng.normal(size=(2 * rows, F)), rng.normal(size=(2 * rows, T))
        G = np.repeat(np.arange(4), rows // 2)

        def mlp():
            mlp_baseline(X[:rows], Y[:rows], G[:rows], X[rows:], Y[rows:], layers=c.layers,
                         width=c.width, dropout=c.dropout, l2=c.l2, max_iter=c.max_iter,
                         batch_size=c.batch_size, learning_rate=c.learning_rate, outputs=c.outputs,
                         max_rows=c.max_rows, seed=0)
        mlp()   # PyTorch's first call: import, thread pool, allocator
        flops = fits_mod.mlp_cost(c, rows, F, T)
        out["mlp_per_flop"] = tuple(t / flops for t in _best_worst(mlp, repeats))
    if cfg.fits.gnn.enabled:
        from .learn.gnn import Graph, fit_gnn, graph_edges
        from .models import get_model
        c = dataclasses.replace(cfg.fits.gnn, epochs=2)
        F0 = min(F, 64)
        cutoff = c.cutoff * float(max(get_model(cfg.model.name).sigma_self()))
        senders, receivers, dist = graph_edges(pos, box, cutoff)
        g = Graph(rng.normal(size=(len(pos), F0)), np.asarray(types), senders, receivers, dist,
                  rng.normal(size=(len(pos), T)))
        n_species = int(np.max(types)) + 1

        def gnn():
            fit_gnn([g], 0, n_species, hidden=c.hidden, layers=c.layers, epochs=c.epochs, seed=0)
        gnn()
        flops = fits_mod.gnn_cost(c, 1, len(pos), F0)
        out["gnn_per_flop"] = tuple(t / flops for t in _best_worst(gnn, repeats))
    return out


def _feature_counts(cfg, spec):
    """{feature set: columns} of the fits (descriptor blocks × generations + scalars)."""
    from .config import DESCRIPTOR_BLOCKS, VORONOI_BLOCKS
    from .structure.voronoi import VORONOI_FEATURE_NAMES
    out = {}
    for name, fs in cfg.fits.feature_sets.items():
        n = 0
        for block in fs.blocks:
            n += ((fs.generations + 1) * spec.n_base_features if block in DESCRIPTOR_BLOCKS
                  else len(VORONOI_FEATURE_NAMES) if block in VORONOI_BLOCKS else 1)
        out[name] = n
    return out


def _max_features(cfg, spec):
    return max(_feature_counts(cfg, spec).values())


def stage_models(cfg, cal, which=0, engine_ranks=1):
    """[Stage] of the main pipeline from the calibration ``cal`` (``which`` 0 = best, 1 = worst
    of the repeats). ``engine_ranks``: ranks per LAMMPS instance in the snapshot stage. A sweep
    (``state_points:``) pools every state point's tasks in each stage (stages.run_pooled): their
    costs are concatenated, the serial parts added (the fits run state point after state
    point)."""
    if getattr(cfg, "state_points", ()):
        from .stages import state_points
        merged = {}
        for p in state_points(cfg):
            for st in _stage_models(p.cfg, cal, which, engine_ranks):
                if st.name in merged:
                    m = merged[st.name]
                    m.costs = np.concatenate([m.costs, st.costs])
                    m.serial += st.serial
                else:
                    merged[st.name] = st
        return list(merged.values())
    return _stage_models(cfg, cal, which, engine_ranks)


def _stage_models(cfg, cal, which=0, engine_ranks=1):
    from . import stages as st
    from .learn import fits as fits_mod
    from .cluster import md_steps
    from .models import get_model
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    rate = cal["md"][which]
    prep, rep = md_steps(cfg)
    out = []
    if cfg.imported is not None:   # files instead of the snapshot and replica MD
        out.append(Stage("import", np.full(S, cal["import"][which])))
    else:
        if prep:
            out.append(Stage("snapshots", np.full(S, prep / S * N / rate), group=engine_ranks,
                             efficiency=group_efficiency(N, engine_ranks)))
        out.append(Stage("replicas", np.full(S * R, rep / (S * R) * N / rate)))
    out.append(Stage("static", np.full(S, 2 * N / rate)))
    if "inherent" in cal:
        out.append(Stage("inherent", np.full(S, cal["inherent"][which])))
    out.append(Stage("dynamics", np.full(S, cal["dynamics"][which])))
    if "cage_move" in cal:
        c = cfg.cage
        chain = (c.equilibration_sweeps + c.measurement_sweeps) * N * cal["cage_move"][which] \
            + cal["cage_fixed"][which]
        cage = np.full(S * c.chains, chain)
        if cfg.imported is None:   # stages.replicas_and_cage: the chains share the replicas' queue
            reps = next(x for x in out if x.name == "replicas")
            reps.name = "replicas + cage"
            reps.costs = np.concatenate([reps.costs, cage])
        else:
            out.append(Stage("cage", cage))
    n_states = len(st.descriptor_states(cfg))
    per_snapshot = n_states * cal["descriptors"][which] \
        + (len(st.voronoi_blocks(cfg)) * cal["voronoi"][which] if st.voronoi_blocks(cfg) else 0.0)
    out.append(Stage("descriptors", np.full(S, per_snapshot)))
    spec = st.descriptor_spec(cfg, 1.5)
    n_species = len(get_model(cfg.model.name).species)
    S_train = S - cfg.test_snapshots()
    K, T = cfg.fits.cv_folds, len(cfg.replica_steps())
    n_alpha = cfg.fits.alphas.count
    g, e = cal["gram_per_row_f2"][which], cal["eigh_per_f3"][which]
    tasks = []
    for F in _feature_counts(cfg, spec).values():
        # per (set, species): the Gram matrices of its rows (N / n_species rows per snapshot on
        # average) and the exact sums of F² terms per snapshot and fold (≈ 320 Gram rows each,
        # measured), then K fold solves (eigh + the α grid, ≈ 2.9 Gram-row flops per α flop,
        # measured) and the refit; one task per fold and a refit (the many-rank plan of
        # learn/fits.py, where whole problems would be coarser)
        stats = (S_train * N / n_species + 320.0 * (S_train + K)) * F * F * g
        fold = F ** 3 * e + 2.9 * 2.0 * n_alpha * T * F * F * g
        tasks += [[stats / (K + 1) + fold] * K + [stats / (K + 1) + F ** 3 * e]
                  for _ in range(n_species)]
        # the network baselines: one task per (set, species), as learn/fits.py deals them
        if cfg.fits.mlp.layers:
            rows = S_train * N / n_species
            tasks += [[fits_mod.mlp_cost(cfg.fits.mlp, rows, F, T) * cal["mlp_per_flop"][which]]
                      for _ in range(n_species)]
        if cfg.fits.gnn.enabled:
            tasks += [[fits_mod.gnn_cost(cfg.fits.gnn, S_train, N, F) * cal["gnn_per_flop"][which]]
                      for _ in range(n_species)]
    out.append(Stage("fits", np.concatenate(tasks) if tasks else np.zeros(0)))
    return out


def auto_engine_ranks(cfg, ranks):
    """K of ``parallel.engine_ranks: auto`` on ``ranks``: the largest K with ⌊ranks/K⌋ ≥ the
    snapshot count (every rank busy in the snapshot stage) and ≥ MIN_ATOMS_PER_RANK atoms per rank;
    1 when there are at least as many snapshots as ranks."""
    # a sweep's snapshot stage pools every state point's snapshots
    S = cfg.snapshots.count * max(1, len(getattr(cfg, "state_points", ())))
    N = cfg.model.n_particles
    k = max(1, ranks // max(S, 1))
    return max(1, min(k, N // MIN_ATOMS_PER_RANK))


def prediction_text(cfg, ranks, repeats=3, engine_ranks=None):
    """The ``--dry-run --ranks P`` table (rank 0; runs the calibration)."""
    cal = calibrate(cfg, repeats)
    K = engine_ranks if engine_ranks is not None else 1
    best = predict(stage_models(cfg, cal, 0, K), ranks)
    worst = predict(stage_models(cfg, cal, 1, K), ranks)
    lo, hi = cal["md"][1] / 1e6, cal["md"][0] / 1e6
    lines = [f"  predicted schedule on {ranks} ranks (dynamic, longest task first; calibrated "
             f"here, best of {repeats}; range = best … worst repeat):",
             (f"    import: {cal['import'][0]:.3g} … {cal['import'][1]:.3g} s per file (read, checked, "
              f"S_AA(q)); no MD" if cfg.imported is not None else
              f"    MD {lo:.3g} … {hi:.3g} M atom-steps/s per core"
              + (f"; snapshot stage on engine groups of {K} ranks (assumed group efficiency "
                 f"{group_efficiency(cfg.model.n_particles, K):.2f})" if K > 1 else "")),
             f"    {'stage':15s} {'wall':>21s} {'busy':>6s} {'efficiency':>11s}"]
    for (name, wb, busy, eb), (_, ww, _, ew) in zip(best, worst):
        wb, ww = sorted((wb, ww))
        eb, ew = sorted((eb, ew), reverse=True)
        wall = f"{_hms(wb)} … {_hms(ww)}"
        lines.append(f"    {name:15s} {wall:>21s} "
                     + (f"{100 * busy:5.1f}%" if busy is not None else "      ")
                     + f" {100 * eb:6.1f} %" + (f" … {100 * ew:.1f} %" if abs(ew - eb) > 5e-4
                                                else ""))
    lines.append("    (not included: numba compilation, the final assembly of the output file)")
    return "\n".join(lines), best


def _hms(seconds):
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.3g} s"
    return f"{s // 3600:d}:{(s % 3600) // 60:02d}:{s % 60:02d}"


def schedule_text(cfg, ctx, ranks, repeats=3):
    """Collective: :func:`prediction_text` computed on rank 0 (calibration there only)."""
    text = None
    if ctx.root:
        text = prediction_text(cfg, ranks, repeats, engine_ranks_for(cfg, ranks))[0]
    return ctx.comm.bcast(text, root=0)


def engine_ranks_for(cfg, ranks):
    """K of the snapshot stage: ``parallel.engine_ranks`` (``auto`` → :func:`auto_engine_ranks`);
    1 for configs without the key."""
    par = getattr(cfg, "parallel", None)
    k = getattr(par, "engine_ranks", 1) if par is not None else 1
    return auto_engine_ranks(cfg, ranks) if k == "auto" else int(k)


class EngineRanksError(ValueError):
    """The run has fewer ranks than ``parallel.engine_ranks`` (refused before anything is made)."""


GROUP_MODELS = ("kob_andersen", "harmonic_spheres")   # LAMMPS pair models (GroupLammpsEngine)


def resolve_engine_ranks(cfg, ctx, resume=False):
    """Collective. ``cfg`` with ``parallel.engine_ranks`` an int, and a line saying the choice.

    'auto' resolves at the first launch (:func:`auto_engine_ranks` on ``ctx.size``; 1 for models
    or sources without a LAMMPS snapshot stage) and is recorded in the normalised config of
    ``OUTPUT.partial/run.json``; ``--resume`` takes the recorded K whatever the new launch size,
    so a resumed run finishes with the snapshots' K it started with. Raises ValueError when the
    run has fewer ranks than K (:class:`EngineRanksError`)."""
    import json
    import os
    k = cfg.parallel.engine_ranks
    note = None
    if k == "auto":
        recorded = None
        if resume and ctx.root:
            try:
                with open(os.path.abspath(cfg.output) + ".partial/run.json",
                          encoding="utf-8") as fh:
                    recorded = json.load(fh)["config"]["parallel"]["engine_ranks"]
            except (OSError, ValueError, KeyError, TypeError):
                recorded = None
        recorded = ctx.comm.bcast(recorded, root=0)
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            k = recorded
            note = f"parallel.engine_ranks: auto → {k} (recorded by the first attempt)"
        else:
            group_stage = (cfg.model.name in GROUP_MODELS and cfg.snapshots.source == "lammps"
                           and cfg.imported is None)
            k = auto_engine_ranks(cfg, ctx.size) if group_stage else 1
            note = (f"parallel.engine_ranks: auto → {k} ({cfg.snapshots.count} snapshots on "
                    f"{ctx.size} ranks: {ctx.size // k} engine groups of {k}"
                    f"{'' if k > 1 else ', one LAMMPS instance per rank'})")
        cfg = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, engine_ranks=k))
    if k > ctx.size:
        raise EngineRanksError(f"parallel.engine_ranks = {k} needs at least {k} ranks; launch with "
                         f"mpiexec -n {k} or more")
    return cfg, note
