"""Published isoconfigurational data sets as pipeline input (the ``imported:`` YAML section).

Reduced LJ units of species A (σ_AA, τ). Two layouts are read:

* **GlassBench / BOTAN Kob–Andersen** (``format: glassbench``): one ``.npz`` per configuration with
  ``types`` (N,) int, ``initial_positions`` (N, 3) wrapped in the box and ``positions`` (R, N, 3) the unwrapped
  positions of R replicas at ONE time. The files carry no box: the box is cubic with L = (N/ρ)^(1/3) from
  ``model.n_particles`` and ``model.density``; the time is the single entry of ``iso.times``, or
  ``iso.times: unknown`` when it is not known (τ_α and the other times are then not computed).
  Displacements: positions[r] − initial_positions (the replicas start from the stored, wrapped, coordinates).
* **Bapst et al., Nat. Phys. 16, 448 (2020)** (``format: bapst``): one pickle per configuration holding a dict with
  ``positions`` (N, 3) absolute (unwrapped) coordinates, ``types`` (N,) (0 = A, 1 = B), ``box`` (3,), ``time`` (all
  sampled times), ``time_indices`` (which of them have targets) and ``trajectory_target_positions``
  [len(time_indices)][R] (N, 3) absolute positions of every replica at those times. Displacements:
  target − positions. Times: ``time[time_indices]`` (all of ``time`` when there are as many targets as times).
  Pickles can run code when loaded: they are read by a restricted unpickler that admits only numpy arrays and
  scalars, dicts, lists, tuples, strings and numbers (anything else is refused naming the file and the class);
  ``imported.trusted: true`` lifts the restriction for files you trust.

:func:`check_imported` (called by :func:`glasshpc.cluster.check_inputs` before anything is created) reads every
file on the rank that owns it and refuses, naming the file and the key to change: missing keys, wrong shapes or
dtypes, NaN, N / replicas / times / types that disagree with the config, a box that disagrees with
``model.density`` (GlassBench initial positions outside [0, L), an empty slab wider than σ_AA at the box edge, or
pairs closer than the model allows), and replica positions that look wrapped into the box (a particle moving
more than L/2 along an axis between consecutive read-outs while every position of that read-out lies within one
box width).

:func:`import_snapshots` turns the files into the arrays the pipeline stores (``snapshots/positions`` wrapped into
[0, L), ``snapshots/types``, ``snapshots/box``, ``iso/displacements`` (S, R, T, N, 3)) and checks them against the
config, raising :class:`~glasshpc.config.ConfigError` that names the key to change. :func:`import_stage` is the
pipeline stage that replaces the LAMMPS ``snapshots`` and ``replicas`` stages: one task per file, written to the
same store slots, so dynamics → descriptors → fits run unchanged.
"""
from __future__ import annotations

import glob
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, brief, natural_key
from .snapshots import InputError, check_overlaps

__all__ = ["read_glassbench", "read_bapst", "import_snapshots", "import_stage", "imported_files",
           "check_imported", "ImportedSnapshot", "RestrictedUnpickler"]


@dataclass
class ImportedSnapshot:
    """One configuration: positions (N, 3) f8 wrapped into [0, box); types (N,) int32 species 0..;
    box (3,) f8; displacements (R, T, N, 3) f8 (unwrapped r(t) − r(0)); times (T,) f8 in τ or None (not stored in
    the file); initial (N, 3) f8 the initial positions as stored; target_span (R, T, 3) f8 the extent
    (max − min over particles) of the stored replica positions per axis (for the wrapped-data check)."""
    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    displacements: np.ndarray
    times: np.ndarray | None
    initial: np.ndarray | None = None
    target_span: np.ndarray | None = None


# (module, name) the restricted unpickler admits: numpy arrays / scalars / dtypes and plain containers
_SAFE_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for n in ("_reconstruct", "scalar")}
_SAFE_GLOBALS |= {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
_SAFE_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                  ("collections", "OrderedDict")}
_SAFE_GLOBALS |= {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float",
                                            "complex", "str", "bytes", "bytearray", "bool")}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` admits only numpy array / scalar / dtype reconstruction and builtin
    containers and scalars (``_SAFE_GLOBALS``): a pickle that names any other callable (``os.system``,
    ``builtins.eval``, a class with a ``__reduce__``) is refused with pickle.UnpicklingError before it runs."""

    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {_cut(module, 60)}.{_cut(name, 60)} (only numpy "
                                         "arrays, dicts, lists and scalars are admitted; set "
                                         "imported.trusted: true for files you trust)")
        with warnings.catch_warnings():        # numpy 2 aliases numpy.core with a DeprecationWarning
            warnings.simplefilter("ignore")
            return super().find_class(module, name)


def _wrap(pos, box):
    return pos - box * np.floor(pos / box)


def _cut(text, limit):
    """Plain text cut to ``limit`` characters (…-terminated): for exception texts in messages."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _check_arrays(path, types, pos0, disp):
    n = types.shape[0]
    if types.ndim != 1 or pos0.shape != (n, 3) or disp.ndim != 4 or disp.shape[2:] != (n, 3):
        raise InputError(f"{path}: inconsistent shapes types {types.shape}, positions {pos0.shape}, "
                         f"replica positions {disp.shape[:1] + disp.shape[2:]}")
    if n == 0 or disp.shape[0] == 0 or disp.shape[1] == 0:
        raise InputError(f"{path}: empty arrays (types {types.shape}, replica positions {disp.shape})")
    bad = np.flatnonzero(~np.isfinite(pos0).all(axis=1))
    if bad.size:
        raise InputError(f"{path}: initial position of particle {bad[0]} is not finite ({bad.size} such)")
    bad = np.argwhere(~np.isfinite(disp).all(axis=-1))
    if bad.size:
        r, t, i = (int(v) for v in bad[0])
        raise InputError(f"{path}: replica {r}, time {t}: position of particle {i} is not finite "
                         f"({len(bad)} such)")
    if types.dtype.kind not in "iub" and not (types.dtype.kind == "f" and np.all(np.isfinite(types))
                                             and np.all(types == np.round(types))):
        raise InputError(f"{path}: types must be integers, got dtype {types.dtype}")


def _numeric(path, key, value, dtype=np.float64):
    """np.asarray(value, dtype) or InputError naming the file and key (ragged lists, strings, objects)."""
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "iufb":
            raise ValueError(f"dtype {arr.dtype}")
        return arr.astype(dtype, copy=False) if dtype is not None else arr
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: {key!r} is not a numeric array ({_cut(str(err), 80)})") from None


def _span(rep):
    """(..., N, 3) → (..., 3) max − min over particles."""
    return rep.max(axis=-2) - rep.min(axis=-2)


def read_glassbench(path, box_length):
    """Read one GlassBench/BOTAN ``.npz`` (keys ``types``, ``initial_positions``, ``positions``).

    Parameters
    ----------
    path : str; box_length : float, the cubic box edge L = (N/ρ)^(1/3) (σ_AA).

    Returns
    -------
    :class:`ImportedSnapshot` with T = 1 and times None; types as stored (no offset applied).

    Raises ValueError for a missing key (naming it), inconsistent shapes or non-finite positions.
    """
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable .npz file ({_cut(str(err), 80)})") from None
    with f:
        if not hasattr(f, "files"):
            raise InputError(f"{path}: a single .npy array, not an .npz archive with types, "
                             "initial_positions, positions")
        missing = [k for k in ("types", "initial_positions", "positions") if k not in f.files]
        if missing:
            raise InputError(f"{path}: missing array {missing[0]!r} (has {brief(sorted(f.files), 200)})")
        try:
            types = _numeric(path, "types", f["types"], None).reshape(-1)
            pos0 = _numeric(path, "initial_positions", f["initial_positions"])
            rep = _numeric(path, "positions", f["positions"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:   # damaged member
            if isinstance(err, InputError):
                raise
            raise InputError(f"{path}: damaged archive ({_cut(str(err), 80)})") from None
    if rep.ndim == 2:  # a single replica
        rep = rep[None]
    if rep.ndim != 3 or pos0.ndim != 2 or rep.shape[1:] != pos0.shape:
        raise InputError(f"{path}: 'positions' {rep.shape} must be (R, N, 3) with 'initial_positions' "
                         f"{pos0.shape} = (N, 3)")
    disp = (rep - pos0[None])[:, None]  # (R, 1, N, 3)
    _check_arrays(path, types, pos0, disp)
    box = np.full(3, float(box_length))
    return ImportedSnapshot(_wrap(pos0, box), types, box, disp, None, pos0, _span(rep)[:, None])


def read_bapst(path, trusted=False):
    """Read one pickle of Bapst et al. (2020) (dict: positions, types, box, time, time_indices,
    trajectory_target_positions, …), through :class:`RestrictedUnpickler` unless ``trusted``.

    Returns
    -------
    :class:`ImportedSnapshot` with displacements (R, T, N, 3), T = len(trajectory_target_positions), and times
    ``time[time_indices]`` (or ``time`` itself when it has exactly T entries).

    Raises InputError (a ValueError) naming the file for an unreadable or refused pickle (a class outside the
    admitted set), a missing key, inconsistent shapes, replicas counts that differ between times, or non-finite
    positions.
    """
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh) if trusted else RestrictedUnpickler(fh).load()
    except pickle.UnpicklingError as err:
        what = str(err) if str(err).startswith("refused to load") else f"not a readable pickle ({err})"
        raise InputError(f"{path}: {_cut(what, 300)}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError,
            MemoryError, OverflowError) as err:
        raise InputError(f"{path}: not a readable pickle ({type(err).__name__}: {_cut(str(err), 80)})") \
            from None
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a dict, got {type(d).__name__}")
    for k in ("positions", "types", "box", "trajectory_target_positions"):
        if k not in d:
            raise InputError(f"{path}: missing entry {k!r} (has {brief(sorted(map(str, d)), 200)})")
    pos0 = _numeric(path, "positions", d["positions"])
    types = _numeric(path, "types", d["types"], None).reshape(-1)
    box = _numeric(path, "box", d["box"]).reshape(-1)
    if box.size == 1:
        box = np.full(3, float(box[0]))
    if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise InputError(f"{path}: box must be three positive edges, got {brief(d['box'])}")
    targets = d["trajectory_target_positions"]
    try:
        counts = {len(t) for t in targets}
    except TypeError:
        raise InputError(f"{path}: trajectory_target_positions must be [T][R] arrays of shape (N, 3)") from None
    if len(counts) != 1:
        raise InputError(f"{path}: different replica counts per time: {brief(sorted(counts))}")
    tp = _numeric(path, "trajectory_target_positions", targets)  # (T, R, N, 3)
    if tp.ndim != 4:
        raise InputError(f"{path}: trajectory_target_positions must be [T][R] arrays of shape (N, 3)")
    if pos0.ndim != 2 or tp.shape[2:] != pos0.shape:
        raise InputError(f"{path}: trajectory_target_positions {tp.shape} must be (T, R, N, 3) with "
                         f"positions {pos0.shape} = (N, 3)")
    disp = np.ascontiguousarray((tp - pos0[None, None]).transpose(1, 0, 2, 3))  # (R, T, N, 3)
    _check_arrays(path, types, pos0, disp)
    times = None
    if "time" in d:
        t_all = _numeric(path, "time", d["time"]).reshape(-1)
        if "time_indices" in d:
            idx = _numeric(path, "time_indices", d["time_indices"], None).reshape(-1)
            if idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= t_all.size):
                raise InputError(f"{path}: time_indices must be integers in 0..{t_all.size - 1}, got "
                                 f"{brief(idx.tolist())}")
            times = t_all[idx]
        elif t_all.size == tp.shape[0]:
            times = t_all
    if times is not None and times.size != tp.shape[0]:
        raise InputError(f"{path}: {times.size} target times for {tp.shape[0]} target position sets")
    return ImportedSnapshot(_wrap(pos0, box), types, box, disp, times, pos0,
                            _span(tp).transpose(1, 0, 2))


def imported_files(cfg):
    """The first ``snapshots.count`` files matching ``imported.files`` in natural order (…_2_ before …_10_,
    :func:`glasshpc.config.natural_key`, as ``snapshots.path``). Raises ConfigError if too few."""
    imp = cfg.imported
    files = sorted((f for f in glob.glob(os.path.expanduser(imp.files)) if os.path.isfile(f)), key=natural_key)
    if len(files) < cfg.snapshots.count:
        raise ConfigError("imported.files", f"pattern {imp.files!r} matches {len(files)} file(s), but "
                                            f"snapshots.count = {cfg.snapshots.count}")
    return files[:cfg.snapshots.count]


def _read(cfg, path):
    if cfg.imported.format == "glassbench":
        return read_glassbench(path, cfg.box_length)
    return read_bapst(path, trusted=cfg.imported.trusted)


def _conform(cfg, snap, path):
    """Check one file against the config; return (positions, types int32, box, displacements (R, T, N, 3) f4)."""
    from ..models import get_model

    N, R, T = cfg.model.n_particles, cfg.iso.replicas, len(cfg.replica_steps())
    n_species = len(get_model(cfg.model.name).species)
    if snap.types.shape[0] != N:
        raise ConfigError("model.n_particles", f"{path} holds {snap.types.shape[0]} particles, config says {N}")
    types = snap.types.astype(np.int64) - cfg.imported.first_type
    if types.min() < 0 or types.max() >= n_species:
        raise ConfigError("imported.first_type", f"{path}: type labels {int(snap.types.min())}.."
                                                 f"{int(snap.types.max())} minus first_type = "
                                                 f"{cfg.imported.first_type} must lie in 0..{n_species - 1}")
    if snap.displacements.shape[0] < R:
        raise ConfigError("iso.replicas", f"{path} holds {snap.displacements.shape[0]} replicas, config asks "
                                          f"for {R}")
    if abs(snap.box[0] - cfg.box_length) > 1e-6 * cfg.box_length or np.ptp(snap.box) > 1e-9 * snap.box[0]:
        raise ConfigError("model.density", f"{path}: box {snap.box.tolist()} is not the cubic box of N = {N}, "
                                           f"ρ = {cfg.model.density} (L = {cfg.box_length:.6g})")
    times = cfg.replica_times()
    nt = snap.displacements.shape[1]
    if not cfg.times_known:
        if snap.times is not None:
            raise ConfigError("iso.times", f"is unknown, but {path} carries the times {brief(snap.times.tolist())}: "
                                           "give them")
        if nt != T:
            raise ConfigError("iso.times", f"{path} holds {nt} read-out(s) without times; give "
                                           + ("'unknown'" if nt == 1 else f"{{unknown: {nt}}}"))
    elif snap.times is None:
        if nt != T:
            raise ConfigError("iso.times", f"{path} holds {nt} read-out(s) (times not stored in the file); "
                                           f"give exactly {nt} read-out time(s), or "
                                           + ("'unknown'" if nt == 1 else f"{{unknown: {nt}}}"))
    elif snap.times.size != T or np.any(np.abs(snap.times - times) > 0.5 * cfg.md.timestep):
        raise ConfigError("iso.times", f"must be the file's times {snap.times.tolist()} (within md.timestep/2 = "
                                       f"{0.5 * cfg.md.timestep}); the config gives {times.tolist()}")
    disp = snap.displacements[:R]
    types = types.astype(np.int32)
    _check_geometry(cfg, snap, types, disp, path)
    return snap.positions, types, snap.box, disp.astype(np.float32)


_AXES = "xyz"


def _check_geometry(cfg, snap, types, disp, path):
    """The box against the data and the replica positions against wrapping (see the module docstring)."""
    from ..models import get_model

    L = snap.box
    rho = cfg.model.density
    if cfg.imported.format == "glassbench" and snap.initial is not None:
        lo, hi = snap.initial.min(axis=0), snap.initial.max(axis=0)
        out = np.flatnonzero((lo < -1e-6 * L) | (hi >= L * (1 + 1e-6)))
        if out.size:
            d = int(out[0])
            raise ConfigError("model.density", f"{path}: initial_positions span {lo[d]:.6g} … {hi[d]:.6g} σ along "
                                               f"{_AXES[d]}, outside the box [0, {L[d]:.6g}) of N = "
                                               f"{cfg.model.n_particles}, ρ = {rho}: the data's box is larger "
                                               "(model.density too high?) or the positions are not wrapped into "
                                               "[0, L)")
        gap = (L - hi) + lo            # the empty slab at the periodic boundary
        if np.any(gap > 1.0):
            d = int(np.argmax(gap))
            raise ConfigError("model.density", f"{path}: no particle within a slab of {gap[d]:.3g} σ at the box "
                                               f"edge along {_AXES[d]} (box L = {L[d]:.6g} from ρ = {rho}): the "
                                               "data's box is smaller (model.density too low?)")
    try:
        check_overlaps(snap.positions, types, L, get_model(cfg.model.name), path=path)
    except InputError as err:
        raise InputError(f"{err} (box L = {L[0]:.6g} σ; a wrong model.density rewraps the particles "
                         "into a wrong box)") from None
    prev = np.concatenate([np.zeros_like(disp[:, :1]), disp[:, :-1]], axis=1)
    jump = np.abs(disp - prev).max(axis=2)                       # (R, T, 3)
    span = snap.target_span[:disp.shape[0]] if snap.target_span is not None else np.full(jump.shape, np.inf)
    hit = np.argwhere((jump > L / 2) & (span <= L * (1 + 1e-6)))
    if hit.size:
        r, t, d = (int(v) for v in hit[0])
        raise InputError(f"{path}: replica {r}, read-out {t}: a particle moves {jump[r, t, d]:.4g} σ along "
                         f"{_AXES[d]} since the previous read-out (more than L/2 = {L[d] / 2:.4g} σ) while all "
                         "positions of that read-out lie within one box: the replica positions look wrapped "
                         "into the box; give unwrapped positions")


def import_snapshots(cfg, files=None):
    """Read and check every file of ``cfg.imported`` (serial; for tools and tests).

    Returns
    -------
    dict: ``positions`` (S, N, 3) f8 wrapped, ``types`` (S, N) i4, ``box`` (S, 3) f8, ``displacements``
    (S, R, T, N, 3) f4, ``files`` list of S paths.

    Raises ConfigError naming the key that disagrees with the files (imported.files, model.n_particles,
    model.density, iso.replicas, iso.times, imported.first_type); ValueError for malformed files.
    """
    if cfg.imported is None:
        raise ConfigError("imported", "the config has no imported: section")
    files = imported_files(cfg) if files is None else files
    out = {k: [] for k in ("positions", "types", "box", "displacements")}
    for path in files:
        for k, v in zip(out, _conform(cfg, _read(cfg, path), path)):
            out[k].append(v)
    res = {k: np.stack(v) for k, v in out.items()}
    res["files"] = list(files)
    return res


def check_imported(cfg, ctx):
    """Collective: read and check every file of ``cfg.imported`` against the config before anything is
    created (ranks share the files round-robin). Returns the file list. Raises, on every rank, the problem
    of the lowest-numbered bad file: ConfigError naming the key to change (imported.files,
    model.n_particles, model.density, iso.replicas, iso.times, imported.first_type) or InputError
    naming the file."""
    err, files = None, []
    try:
        files = imported_files(cfg)
    except ConfigError as exc:
        err = (-1, exc)
    for s in ctx.mine(list(range(len(files)))) if err is None else ():
        try:
            _conform(cfg, _read(cfg, files[s]), files[s])
        except (ConfigError, InputError) as exc:
            err = (s, exc)
        except Exception as exc:  # noqa: BLE001  unreadable file, ragged arrays...: never leave a rank behind
            err = (s, InputError(f"{files[s]}: cannot be read as a {cfg.imported.format} file "
                                 f"({type(exc).__name__}: {_cut(str(exc), 120)})"))
        if err is not None:
            break
    errors = sorted((e for e in ctx.comm.allgather(err) if e), key=lambda e: e[0])
    if errors:
        raise errors[0][1]
    return files


def import_stage(ctx, cfg, store):
    """Pipeline stage replacing ``snapshots`` + ``replicas`` when the config has ``imported:``.

    The files were checked by :func:`check_imported` (``run.main`` → ``cluster.check_inputs``) before the
    output was created; one task per file fills ``snapshots/positions``, ``types``, ``box``, ``sq_AA`` and
    ``iso/displacements[s, r]`` for r < iso.replicas. Returns the stage wall time (s).
    """
    from .. import dynamics
    from ..stages import Q_EDGES, run_tasks

    files = imported_files(cfg)    # the same list on every rank (ConfigError on all of them otherwise)

    def work(s):
        pos, types, box, disp = _conform(cfg, _read(cfg, files[s]), files[s])
        store.write("snapshots/positions", (s,), pos)
        store.write("snapshots/types", (s,), types)
        store.write("snapshots/box", (s,), box)
        store.write("snapshots/sq_AA", (s,), dynamics.structure_factor(pos[types == 0], box, Q_EDGES))
        for r in range(disp.shape[0]):
            store.write("iso/displacements", (s, r), disp[r])

    ctx.log(f"importing {len(files)} {cfg.imported.format} file(s): {files[0]} …")
    return run_tasks(ctx, "import", list(range(len(files))), work, store)
