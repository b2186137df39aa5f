"""Published isoconfigurational data sets as pipeline input (the ``imported:`` YAML section).

Reduced LJ units of species A (σ_AA, τ). Two layouts are read:

* **GlassBench / BOTAN Kob–Andersen** (``format: glassbench``): one ``.npz`` per configuration with
  ``types`` (N,) int, ``initial_positions`` (N, 3) wrapped in the box and ``positions`` (R, N, 3) the unwrapped
  positions of R replicas at ONE time. The files carry no box: the box is cubic with L = (N/ρ)^(1/3) from
  ``model.n_particles`` and ``model.density``; the time is the single entry of ``iso.times``.
  Displacements: positions[r] − initial_positions (the replicas start from the stored, wrapped, coordinates).
* **Bapst et al., Nat. Phys. 16, 448 (2020)** (``format: bapst``): one pickle per configuration holding a dict with
  ``positions`` (N, 3) absolute (unwrapped) coordinates, ``types`` (N,) (0 = A, 1 = B), ``box`` (3,), ``time`` (all
  sampled times), ``time_indices`` (which of them have targets) and ``trajectory_target_positions``
  [len(time_indices)][R] (N, 3) absolute positions of every replica at those times. Displacements:
  target − positions. Times: ``time[time_indices]`` (all of ``time`` when there are as many targets as times).
  Pickles run code when loaded: read only files you trust.

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
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError

__all__ = ["read_glassbench", "read_bapst", "import_snapshots", "import_stage", "imported_files",
           "ImportedSnapshot"]


@dataclass
class ImportedSnapshot:
    """One configuration: positions (N, 3) f8 wrapped into [0, box); types (N,) int32 species 0..;
    box (3,) f8; displacements (R, T, N, 3) f8 (unwrapped r(t) − r(0)); times (T,) f8 in τ or None (not stored in
    the file)."""
    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    displacements: np.ndarray
    times: np.ndarray | None


def _wrap(pos, box):
    return pos - box * np.floor(pos / box)


def _check_arrays(path, types, pos0, disp):
    n = types.shape[0]
    if types.ndim != 1 or pos0.shape != (n, 3) or disp.ndim != 4 or disp.shape[2:] != (n, 3):
        raise ValueError(f"{path}: inconsistent shapes types {types.shape}, positions {pos0.shape}, "
                         f"replica positions {disp.shape[:1] + disp.shape[2:]}")
    if not (np.all(np.isfinite(pos0)) and np.all(np.isfinite(disp))):
        raise ValueError(f"{path}: non-finite positions")
    if not np.issubdtype(types.dtype, np.integer) and not np.all(types == np.round(types)):
        raise ValueError(f"{path}: types must be integers, got {types.dtype}")


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
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("types", "initial_positions", "positions") if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing array {missing[0]!r} (has {sorted(f.files)})")
        types = np.asarray(f["types"]).reshape(-1)
        pos0 = np.asarray(f["initial_positions"], dtype=np.float64)
        rep = np.asarray(f["positions"], dtype=np.float64)
    if rep.ndim == 2:  # a single replica
        rep = rep[None]
    disp = (rep - pos0[None])[:, None]  # (R, 1, N, 3)
    _check_arrays(path, types, pos0, disp)
    box = np.full(3, float(box_length))
    return ImportedSnapshot(_wrap(pos0, box), types, box, disp, None)


def read_bapst(path):
    """Read one pickle of Bapst et al. (2020) (dict: positions, types, box, time, time_indices,
    trajectory_target_positions, …).

    Returns
    -------
    :class:`ImportedSnapshot` with displacements (R, T, N, 3), T = len(trajectory_target_positions), and times
    ``time[time_indices]`` (or ``time`` itself when it has exactly T entries).

    Raises ValueError for a missing key, inconsistent shapes, replicas counts that differ between times, or
    non-finite positions.
    """
    with open(path, "rb") as fh:
        d = pickle.load(fh)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict, got {type(d).__name__}")
    for k in ("positions", "types", "box", "trajectory_target_positions"):
        if k not in d:
            raise ValueError(f"{path}: missing entry {k!r} (has {sorted(d)})")
    pos0 = np.asarray(d["positions"], dtype=np.float64)
    types = np.asarray(d["types"]).reshape(-1)
    box = np.asarray(d["box"], dtype=np.float64).reshape(-1)
    if box.size == 1:
        box = np.full(3, float(box[0]))
    if box.shape != (3,) or np.any(box <= 0):
        raise ValueError(f"{path}: box must be three positive edges, got {d['box']}")
    targets = d["trajectory_target_positions"]
    counts = {len(t) for t in targets}
    if len(counts) != 1:
        raise ValueError(f"{path}: different replica counts per time: {sorted(counts)}")
    tp = np.asarray(targets, dtype=np.float64)  # (T, R, N, 3)
    if tp.ndim != 4:
        raise ValueError(f"{path}: trajectory_target_positions must be [T][R] arrays of shape (N, 3)")
    disp = np.ascontiguousarray((tp - pos0[None, None]).transpose(1, 0, 2, 3))  # (R, T, N, 3)
    _check_arrays(path, types, pos0, disp)
    times = None
    if "time" in d:
        t_all = np.asarray(d["time"], dtype=np.float64).reshape(-1)
        if "time_indices" in d:
            times = t_all[np.asarray(d["time_indices"], dtype=np.int64).reshape(-1)]
        elif t_all.size == tp.shape[0]:
            times = t_all
    if times is not None and times.size != tp.shape[0]:
        raise ValueError(f"{path}: {times.size} target times for {tp.shape[0]} target position sets")
    return ImportedSnapshot(_wrap(pos0, box), types, box, disp, times)


def imported_files(cfg):
    """The first ``snapshots.count`` files matching ``imported.files`` (sorted). Raises ConfigError if too few."""
    imp = cfg.imported
    files = sorted(glob.glob(os.path.expanduser(imp.files)))
    if len(files) < cfg.snapshots.count:
        raise ConfigError("imported.files", f"pattern {imp.files!r} matches {len(files)} file(s), but "
                                            f"snapshots.count = {cfg.snapshots.count}")
    return files[:cfg.snapshots.count]


def _read(cfg, path):
    if cfg.imported.format == "glassbench":
        return read_glassbench(path, cfg.box_length)
    return read_bapst(path)


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
    if snap.times is None:
        if nt != T:
            raise ConfigError("iso.times", f"{path} holds {nt} time(s) (not stored in the file); give exactly "
                                           f"{nt} read-out time(s)")
    elif snap.times.size != T or np.any(np.abs(snap.times - times) > 0.5 * cfg.md.timestep):
        raise ConfigError("iso.times", f"must be the file's times {snap.times.tolist()} (within md.timestep/2 = "
                                       f"{0.5 * cfg.md.timestep}); the config gives {times.tolist()}")
    disp = snap.displacements[:R]
    return snap.positions, types.astype(np.int32), snap.box, disp.astype(np.float32)


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


def import_stage(ctx, cfg, store):
    """Pipeline stage replacing ``snapshots`` + ``replicas`` when the config has ``imported:``.

    Rank 0 checks the file list and the first file against the config before any slot is written (ConfigError,
    broadcast so every rank raises it); then one task per file fills ``snapshots/positions``, ``types``, ``box``,
    ``sq_AA`` and ``iso/displacements[s, r]`` for r < iso.replicas. Returns the stage wall time (s).
    """
    from .. import dynamics
    from ..stages import Q_EDGES, run_tasks

    err, files = None, None
    if ctx.root:
        try:
            files = imported_files(cfg)
            _conform(cfg, _read(cfg, files[0]), files[0])
        except (ConfigError, ValueError, OSError) as e:
            err = e
    err, files = ctx.comm.bcast((err, files), root=0)
    if err is not None:
        raise err

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
