"""LAMMPS accelerator suffixes (``md.suffix``): which ones a build has, the check against the plain
styles, and the once-per-run resolution of ``auto``.

A suffix makes LAMMPS use the accelerated variant of every style that has one (``lj/cut`` →
``lj/cut/opt``); styles without one stay plain. Accelerated styles sum the same terms in another
order, so trajectories differ from the plain ones at round-off (and diverge later, as MD does):
the suffix is part of what determines the numbers. It is therefore resolved once per run, on
rank 0, before the output store exists, and the resolved value replaces ``auto`` in the config
whose hash ``--resume`` checks (the resume of an ``auto`` run reuses the suffix recorded in
``OUTPUT.partial/run.json``). The choice never depends on the rank count or on timings.

``auto`` takes the first candidate of :data:`AUTO_ORDER` that the build has, that accelerates at
least one of the model's pair/bond styles, and that reproduces the plain styles' total and
per-particle potential energy and per-particle forces to :data:`TOLERANCE` relative on a
configuration of the run's system (:func:`suffix_deviation`); otherwise plain styles.
Order: intel (vectorised, double precision) before opt before omp: measured here on KA N = 2000
NVE (STACK.md, bench/bench_md.py) opt ≈ 1.20×, omp with 1 thread ≈ 1.17× the plain styles.
A fixed order, not a timing race: opt and omp differ by 3 % while a shared node's timings scatter
by 10–15 %, so a timed choice would flip between runs of the same config. ``kk`` and ``gpu`` need
devices and threads set up per node (and the GPU package defaults to mixed precision): they are
only used when asked for explicitly.
"""
import json
import os

import numpy as np

SUFFIXES = ("none", "opt", "omp", "intel", "kk", "gpu")
PACKAGES = {"opt": "OPT", "omp": "OPENMP", "intel": "INTEL", "kk": "KOKKOS", "gpu": "GPU"}
AUTO_ORDER = ("intel", "opt", "omp")
TOLERANCE = 1e-10

# command-line switches of each suffix; one thread per rank (ranks fill the cores), double
# precision for INTEL (its default 'mixed' could not pass the 1e-10 check)
_CMDARGS = {"none": [], "opt": ["-sf", "opt"], "omp": ["-sf", "omp", "-pk", "omp", "1"],
            "intel": ["-sf", "intel", "-pk", "intel", "0", "mode", "double"],
            "kk": ["-k", "on", "t", "1", "-sf", "kk"], "gpu": ["-sf", "gpu", "-pk", "gpu", "1"]}


def cmdargs(suffix):
    """LAMMPS command-line switches (list of str) selecting ``suffix`` (one of :data:`SUFFIXES`).
    Raises ValueError for anything else, 'auto' included (resolve it first)."""
    if suffix not in _CMDARGS:
        raise ValueError(f"md.suffix {suffix!r} is not a LAMMPS suffix (one of {list(SUFFIXES)}); "
                         "'auto' must be resolved first (glasshpc.md.accel.resolve_suffix)")
    return list(_CMDARGS[suffix])


def _probe():
    from ..parallel import MPI
    from .lammps import import_lammps
    return import_lammps().lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"],
                                  comm=MPI.COMM_SELF)


def available_suffixes(lmp=None):
    """Suffixes whose package this LAMMPS build has, 'none' first (tuple of str)."""
    own = lmp is None
    lmp = _probe() if own else lmp
    try:
        return ("none",) + tuple(s for s in SUFFIXES[1:] if lmp.has_package(PACKAGES[s]))
    finally:
        if own:
            lmp.close()


def model_styles(model):
    """[(category, style)] of the model's interactions: ('pair', 'lj/cut'), ('bond', 'harmonic')."""
    cmds = list(model.lammps_pair_commands())
    if hasattr(model, "lammps_bond_commands"):
        cmds += model.lammps_bond_commands()
    out = []
    for line in cmds:
        words = line.split()
        if len(words) > 1 and words[0] in ("pair_style", "bond_style"):
            out.append((words[0][:-6], words[1]))
    return out


def accelerated_styles(model, suffix, lmp=None):
    """[(category, style)] of the model's styles that have a ``style/suffix`` variant here."""
    if suffix == "none":
        return []
    own = lmp is None
    lmp = _probe() if own else lmp
    try:
        return [(c, s) for c, s in model_styles(model) if lmp.has_style(c, f"{s}/{suffix}")]
    finally:
        if own:
            lmp.close()


def suffix_deviation(make, suffix, positions, types, box):
    """Largest relative deviation of the ``suffix`` styles from the plain ones on one
    configuration: max of |ΔU|/|U| (total potential energy), max_i |Δu_i| / max_i |u_i|
    (per-particle energies) and max_i,a |ΔF_ia| / max_i,a |F_ia| (forces; normalised by the
    largest force, since a per-particle ratio is ill-conditioned for near-zero forces).

    ``make(suffix)`` returns a fresh engine (LammpsEngine interface) using that suffix; positions
    (N, 3), types (N,), box (3,) as for ``LammpsEngine.load``. Returns float (inf if a quantity
    is not finite). Raises whatever LAMMPS raises for an unusable suffix."""
    res = []
    for s in ("none", suffix):
        eng = make(s)
        try:
            e, f = eng.static_properties(positions, types, box)
            res.append((eng.thermo("pe"), e, f))
        finally:
            eng.close()
    (u0, e0, f0), (u1, e1, f1) = res
    tiny = np.finfo(np.float64).tiny
    dev = max(abs(u1 - u0) / max(abs(u0), tiny),
              np.abs(e1 - e0).max() / max(np.abs(e0).max(), tiny),
              np.abs(f1 - f0).max() / max(np.abs(f0).max(), tiny))
    return float(dev) if np.isfinite(dev) else float("inf")


# -- resolution for a run ----------------------------------------------------------------------

def _system(cfg):
    """(model, make(suffix) → engine, n, density, temperature) of a Config."""
    import dataclasses

    from ..models import get_model
    from .bead_spring import BeadSpringEngine
    from .lammps import LammpsEngine
    m, md = cfg.model, cfg.md
    model = get_model(m.name)
    density, temperature = m.density, m.temperature
    if m.name == "bead_spring":
        if m.chain_length is not None:
            model = dataclasses.replace(model, chain_length=m.chain_length)
        cls = BeadSpringEngine
    else:
        cls = LammpsEngine
    return model, (lambda s: cls(model, md.timestep, md.skin, suffix=s)), m.n_particles, \
        density, temperature


def check_configuration(cfg, make):
    """The configuration the suffix check runs on: snapshot 0 when the snapshots are read from
    files; otherwise (the snapshots are made with the chosen suffix, so they do not exist yet) a
    liquid of the run's N and density: the lattice start melted for 100 steps at
    ``md.melt_temperature`` with the plain styles (deterministic: seeded from ``seed``).
    Returns (positions (N, 3), types (N,), box (3,))."""
    from ..parallel import task_rng
    sn = getattr(cfg, "snapshots", None)
    if getattr(sn, "source", None) == "files":
        from ..cluster import snapshot_from_file
        return snapshot_from_file(cfg, 0)
    _, _, n, density, temperature = _system(cfg)
    md = cfg.md
    eng = make("none")
    try:
        return eng.prepare_snapshot(n, density, temperature, task_rng(cfg.seed, "suffix-check"),
                                    md.melt_temperature, 100 * md.timestep, 0.0, 0.0, md.tdamp)
    finally:
        eng.close()


def recorded_suffix(output):
    """md.suffix recorded in ``output``.partial/run.json by an earlier attempt, or None."""
    path = os.path.abspath(output) + ".partial/run.json"
    try:
        with open(path, encoding="utf-8") as fh:
            s = json.load(fh)["config"]["md"]["suffix"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return s if s in SUFFIXES else None


def _decide(cfg, resume):
    """Rank 0 part of :func:`resolve_suffix`: returns the info dict, raises ConfigError."""
    from ..config import ConfigError
    requested = cfg.md.suffix
    info = {"requested": requested, "suffix": requested, "max_rel_deviation": None,
            "tolerance": TOLERANCE, "accelerated_styles": [], "note": ""}
    if cfg.model.name == "hard_spheres":
        info.update(suffix="none" if requested == "auto" else requested,
                    note="ignored: hard spheres run event-driven MD, not LAMMPS")
        return info
    model, make, *_ = _system(cfg)
    lmp = _probe()
    try:
        have = available_suffixes(lmp)
        if requested != "auto":
            if requested not in have:
                raise ConfigError("md.suffix", f"{requested!r} needs the LAMMPS package "
                                               f"{PACKAGES[requested]}, which this LAMMPS build "
                                               f"does not have; available here: {list(have)} "
                                               "(or 'auto')")
            fast = accelerated_styles(model, requested, lmp)
            if requested != "none" and not fast:
                raise ConfigError("md.suffix", f"{requested!r} accelerates none of the styles of "
                                               f"{cfg.model.name} ({model_styles(model)}) in this "
                                               f"build; choose 'none' or 'auto' (available: "
                                               f"{list(have)})")
        candidates = {s: accelerated_styles(model, s, lmp) for s in AUTO_ORDER if s in have}
    finally:
        lmp.close()
    old = recorded_suffix(cfg.output) if resume and requested == "auto" else None
    if old is not None:
        requested_now = old
        info["note"] = f"reused from {os.path.abspath(cfg.output)}.partial/run.json (--resume)"
    else:
        requested_now = requested
    if requested_now == "none":
        info["suffix"] = "none"
        return info
    pos, types, box = check_configuration(cfg, make)
    if requested_now != "auto":     # explicit (or recorded): used as given, deviation reported
        info["suffix"] = requested_now
        info["accelerated_styles"] = [f"{c} {s}/{requested_now}" for c, s in
                                      accelerated_styles(model, requested_now)]
        info["max_rel_deviation"] = suffix_deviation(make, requested_now, pos, types, box)
        return info
    failed = []
    for s, fast in candidates.items():
        if not fast:
            continue
        try:
            dev = suffix_deviation(make, s, pos, types, box)
        except Exception as err:  # noqa: BLE001  (a LAMMPS error = this suffix is unusable)
            failed.append(f"{s}: LAMMPS error {str(err).strip()[:200]}")
            continue
        if dev <= TOLERANCE:
            info.update(suffix=s, max_rel_deviation=dev,
                        accelerated_styles=[f"{c} {st}/{s}" for c, st in fast])
            break
        failed.append(f"{s}: deviates {dev:.3g} from the plain styles (> {TOLERANCE:g})")
    else:
        info["suffix"] = "none"
    if failed:
        info["note"] = "not used: " + "; ".join(failed)
    return info


def resolve_suffix(cfg, ctx, resume=False):
    """Collective (rank 0 decides, the decision is broadcast; a failure on rank 0 is broadcast
    too, so no rank waits forever). Resolve ``cfg.md.suffix`` for this run.

    Returns (cfg with ``md.suffix`` replaced by the suffix to use — never 'auto' —, info dict:
    requested, suffix, max_rel_deviation (float or None when nothing was compared), tolerance,
    accelerated_styles, note), and logs the choice once. Raises ConfigError('md.suffix', …) for a
    suffix this build does not have or that accelerates none of the model's styles."""
    import dataclasses

    from ..config import ConfigError
    res = None
    if ctx.root:
        try:
            res = ("ok", _decide(cfg, resume))
        except ConfigError as err:
            res = ("config", (err.key, str(err).split(": ", 1)[-1]))
        except Exception as err:  # noqa: BLE001
            res = ("error", f"{type(err).__name__}: {err}")
    kind, value = ctx.comm.bcast(res, root=0)
    if kind == "config":
        raise ConfigError(*value)
    if kind == "error":
        raise RuntimeError(f"resolving md.suffix failed on rank 0: {value}")
    info = value
    dev = info["max_rel_deviation"]
    ctx.log(f"LAMMPS suffix: {info['suffix']} (md.suffix: {info['requested']}"
            + (f"; energies and forces within {dev:.2g} relative of the plain styles" if
               dev is not None else "")
            + (f"; {', '.join(info['accelerated_styles'])}" if info["accelerated_styles"] else "")
            + (f"; {info['note']}" if info["note"] else "") + ")")
    if dev is not None and dev > TOLERANCE and ctx.root:
        print(f"glasshpc: warning: md.suffix {info['suffix']} deviates {dev:.3g} from the plain "
              f"styles (> {TOLERANCE:g}); 'auto' would not use it", flush=True)
    return dataclasses.replace(cfg, md=dataclasses.replace(cfg.md, suffix=info["suffix"])), info
