"""Running on clusters: the run's identity for resume, input checks before any file is created,
snapshots read from files, and the ``--dry-run`` plan with a measured core-hour estimate.

Reduced LJ units of species A (σ_AA, ε_AA, τ).
"""
import dataclasses
import hashlib
import time

import numpy as np

from .config import snapshot_files
from .io.snapshots import InputError, load_snapshot  # noqa: F401  (InputError re-exported)
from .models import get_model


def normalised_config(cfg):
    """JSON-able dict of every config value (defaults filled in), plus for snapshots read from
    files or imported datasets the SHA-256 of each file: two runs with equal normalised configs
    compute the same numbers, which is what ``--resume`` checks (its hash is kept in
    ``OUTPUT.partial/run.json``)."""
    out = dataclasses.asdict(cfg)
    if cfg.snapshots.source == "files":
        out["snapshots"]["file_sha256"] = _digests(snapshot_files(cfg.snapshots.path))
    if getattr(cfg, "imported", None) is not None:
        from .io.imported import imported_files
        out["imported"]["file_sha256"] = _digests(imported_files(cfg))
    return out


def _digests(paths):
    out = []
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):   # bounded memory for large files
                h.update(block)
        out.append(h.hexdigest())
    return out


def snapshot_from_file(cfg, s):
    """Snapshot ``s`` (index in the sorted file list) as (positions (N, 3) float64 wrapped into the
    box, types (N,) int32 species indices, box (3,) float64). Raises InputError."""
    model = get_model(cfg.model.name)
    path = snapshot_files(cfg.snapshots.path)[s]
    return load_snapshot(path, cfg.snapshots.format, cfg.snapshots.type_map, model.species,
                         cfg.model.n_particles, cfg.model.density, model)


def check_inputs(cfg, ctx):
    """Collective. Read and check every input file before anything is created: snapshot files
    (``snapshots.source: files``) and published data sets (``imported:``,
    :func:`glasshpc.io.imported.check_imported`); ranks share the files. Raises InputError or
    ConfigError (the problem of the lowest-numbered bad file, the same on every rank). No-op for
    MD snapshots."""
    if getattr(cfg, "imported", None) is not None:
        from .io.imported import check_imported
        check_imported(cfg, ctx)
    if getattr(cfg, "snapshots", None) is None or cfg.snapshots.source != "files":
        return
    err = None
    for s in ctx.mine(list(range(cfg.snapshots.count))):
        try:
            snapshot_from_file(cfg, s)
        except InputError as exc:
            err = (s, exc)
        except Exception as exc:  # noqa: BLE001  a rank must not leave the others waiting
            path = snapshot_files(cfg.snapshots.path)[s]
            err = (s, InputError(f"{path}: cannot be read ({type(exc).__name__}: "
                                 f"{str(exc)[:120]})"))
        if err is not None:
            break
    errors = sorted((e for e in ctx.comm.allgather(err) if e), key=lambda e: e[0])
    if errors:
        raise errors[0][1]


def md_steps(cfg):
    """(snapshot preparation steps, replica steps) of the whole run, summed over tasks (and over
    the state points of a sweep); (0, 0) for imported data (no MD)."""
    if getattr(cfg, "imported", None) is not None:
        return 0, 0
    if getattr(cfg, "state_points", ()):
        from .stages import state_points
        steps = [md_steps(p.cfg) for p in state_points(cfg)]
        return sum(a for a, _ in steps), sum(b for _, b in steps)
    md = cfg.md
    S, R = cfg.snapshots.count, cfg.iso.replicas
    prep = 0
    if cfg.snapshots.source == "lammps":
        prep = S * sum(round(t / md.timestep) for t in (md.melt_time, md.nvt_time, md.nve_time))
    return prep, S * R * int(cfg.replica_steps()[-1])


def calibrate(cfg, steps=300):
    """Measured MD speed of the configured model on this rank, with the engine the run uses
    (LAMMPS, or EDMD for hard spheres): a short preparation (100-step melt from the lattice start;
    for hard spheres the growth to the packing fraction), then ``steps`` NVE steps (EDMD: the time
    ``steps`` · timestep) timed as one replica run. Returns atom-steps per second (one core)."""
    from .md import make_engine
    from .parallel import task_rng
    m, md = cfg.model, cfg.md
    eng = make_engine(cfg)
    try:
        rng = task_rng(cfg.seed, "calibration")
        pos, types, box = eng.prepare_snapshot(m.n_particles, m.density, m.temperature, rng,
                                               md.melt_temperature, 100 * md.timestep, 0.0, 0.0,
                                               md.tdamp)
        t0 = time.perf_counter()
        eng.run_replica(pos, types, box, m.temperature, rng, [steps])
        elapsed = time.perf_counter() - t0
    finally:
        eng.close()
    return m.n_particles * steps / elapsed


def output_bytes(cfg, transient=False):
    """Bytes of the task datasets of the output file (stages.layout without its transient
    working data; small extras not counted), or with ``transient=True`` of the working data only
    (the per-replica sums of ``iso.store_displacements: false``, kept in ``.partial/``)."""
    from . import stages
    points = stages.state_points(cfg)
    n_features = stages.descriptor_spec(cfg, 2.0).n_features
    scratch = set(stages.run_transient(points))
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
               for name, (shape, dtype) in stages.run_layout(points, n_features).items()
               if (name in scratch) == transient)


def dry_run_text(cfg, ctx, steps=300):
    """Collective. The cost part of ``--dry-run``: MD totals, a core-hour estimate scaled from a
    ``steps``-step calibration on rank 0, the output size, and progress of an unfinished run."""
    prep, rep = md_steps(cfg)
    N = cfg.model.n_particles
    scratch = output_bytes(cfg, transient=True)
    if getattr(cfg, "imported", None) is not None:     # no MD: nothing to calibrate or estimate here
        lines = ["  MD: none (snapshots and replica positions are read from the imported files; LAMMPS only "
                 "evaluates energies and forces at t = 0)"]
    else:
        rate = calibrate(cfg, steps) if ctx.root else None
        rate = ctx.comm.bcast(rate, root=0)
        core_h = (prep + rep) * N / rate / 3600.0
        lines = [
            f"  MD: {prep + rep:,} steps of N = {N} in total (snapshots {prep:,}, replicas {rep:,})",
            f"  calibration: {steps} NVE steps of {cfg.model.name} on rank 0: "
            f"{rate / 1e6:.3g} M atom-steps/s per core",
            f"  estimate: MD ≈ {core_h:.3g} core-hours (≈ {core_h / ctx.size:.3g} h wall on "
            f"{ctx.size} ranks if the tasks spread evenly; descriptors and fits not included)",
        ]
    lines += [
        f"  output size ≈ {output_bytes(cfg) / 2**30:.3g} GiB (task datasets of stages.layout); "
        f"the same again in {cfg.output}.partial/ while running"
        + (f", plus {scratch / 2**30:.3g} GiB of per-replica sums (iso.store_displacements: "
           "false)" if scratch else ""),
    ]
    state = partial_progress(cfg.output)
    if state:
        lines.append(f"  unfinished run in {cfg.output}.partial/ (resume with --resume): "
                     + ", ".join(f"{k} {v} done" for k, v in state.items()))
    return "\n".join(lines)


def partial_progress(output):
    """{stage: finished task count} from the journals of ``output``.partial/ (unverified), or {}."""
    import json
    import os
    folder = os.path.abspath(output) + ".partial"
    if not os.path.isdir(folder):
        return {}
    counts = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("journal-") and name.endswith(".jsonl"):
            with open(os.path.join(folder, name), "rb") as fh:
                for raw in fh.read().split(b"\n")[:-1]:
                    try:
                        stage = json.loads(raw)["stage"]
                    except (ValueError, KeyError):
                        continue
                    if not stage.startswith("_"):
                        counts[stage] = counts.get(stage, 0) + 1
    return counts
