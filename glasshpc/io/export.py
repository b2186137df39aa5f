"""Per-particle results of a finished run, out of the HDF5 file: extended XYZ (ASE, OVITO), LAMMPS
dump (LAMMPS ``read_dump``, OVITO) and the GlassBench/BOTAN ``.npz`` layout (:mod:`glasshpc.io.imported`
reads it back). Used by ``tools/export.py``.

Reduced LJ units of species A (lengths σ_AA, times τ). Per particle and snapshot (:func:`particle_table`):

=========================  =====================================================================
``id``                     1..N (order of /snapshots/positions)
``type``                   species index + 1 (LAMMPS type; species index 0 = A)
``species``                extxyz: a chemical symbol (default A → Ar, B → Kr, …: ASE needs
                           elements; the names are in the frame's ``species_names``)
``pos`` / ``x y z``        positions at t = 0 (σ), /snapshots/positions wrapped into [0, L)
                           (the stored ones may lie ~0.01 σ outside: LAMMPS wraps only when it
                           rebuilds neighbour lists; readers such as the importer require [0, L))
``propensity``             /propensity at the read-out nearest the requested time (σ, or σ² for
                           the squared kind)
``prediction_<set>``       /fits/<set>/prediction at that read-out, per feature set (absent sets
                           skipped: files written before predictions were stored)
``drcs``, ``dris``         Δr^CS, Δr^IS (σ) when the run computed cage / inherent states
``dw``, ``fnet``,          local Debye–Waller factor (σ², [DW]), |F^net| (ε/σ) and potential
``epot``                   energy (ε) at t = 0, when present
=========================  =====================================================================

Column names are the dataset names with every character outside [A-Za-z0-9_] replaced by ``_``
(``init+cs+drcs`` → ``prediction_init_cs_drcs``); floats are written with 17 significant digits, so
text files read back to the same float64 numbers.
"""
import json
import os
import re

import h5py
import numpy as np

DEFAULT_SYMBOLS = ("Ar", "Kr", "Xe", "Ne", "He", "Rn")   # species index → element, for ASE


class ExportError(ValueError):
    """A request the file cannot satisfy (message names the dataset or YAML key that is missing)."""


def column_name(name):
    """``name`` with every character outside [A-Za-z0-9_] replaced by ``_`` (a safe column label)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _decode(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_info(h5):
    """Summary of what an output file offers: dict ``times`` (T,) τ, ``species`` names, ``S``, ``N``,
    ``tau_alpha`` (n_species,), ``kind`` (propensity kind), ``sets`` (feature sets with a stored
    prediction), ``is_test`` (S,) bool or None, ``has_displacements``. ``h5``: open h5py.File.
    Raises ExportError for a file without snapshots and propensity (e.g. a softness sweep)."""
    for need in ("snapshots/positions", "propensity", "iso/times"):
        if need not in h5:
            raise ExportError(f"{h5.filename}: no /{need} — not the output of a propensity run "
                              "(a softness sweep has no per-particle propensity to export)")
    S, N = h5["snapshots/types"].shape
    species = _decode(h5.attrs.get("species", [])) or [str(k) for k in
                                                       range(int(h5["snapshots/types"][()].max()) + 1)]
    dyn = h5["dynamics"].attrs if "dynamics" in h5 else {}
    fits = h5["fits"] if "fits" in h5 else {}
    sets = [n for n in fits if isinstance(fits[n], h5py.Group) and "prediction" in fits[n]]
    return {"times": h5["iso/times"][()], "species": species, "S": S, "N": N,
            "tau_alpha": np.asarray(dyn.get("tau_alpha", [np.nan] * len(species)), float),
            "kind": str(dyn.get("propensity_kind", "abs")), "sets": sets,
            "is_test": fits["is_test"][()].astype(bool) if "is_test" in fits else None,
            "has_displacements": "iso/displacements" in h5}


def time_index(times, t=None, tau_alpha=None):
    """Index of the read-out nearest ``t`` (τ) in ln t; ``t`` None → nearest τ_α of species A
    (``tau_alpha[0]``), or the last read-out when that is not finite. Raises ExportError for t ≤ 0."""
    times = np.asarray(times, dtype=np.float64)
    if t is None:
        t = tau_alpha[0] if tau_alpha is not None and np.isfinite(tau_alpha[0]) else times[-1]
    if not t > 0:
        raise ExportError(f"--time must be positive, got {t}")
    return int(np.argmin(np.abs(np.log(times) - np.log(t))))


def parse_snapshots(spec, S, is_test=None):
    """Snapshot indices from ``spec``: None/'all' → all; 'test' / 'train' → the held-out / fitted
    snapshots (/fits/is_test); else comma-separated indices and ranges 'a-b' (inclusive).
    Returns a sorted list of int. Raises ExportError for an index outside 0..S-1 or 'test' on a file
    without /fits/is_test."""
    if spec is None or spec == "all":
        return list(range(S))
    if spec in ("test", "train"):
        if is_test is None:
            raise ExportError("the file has no /fits/is_test (written by runs with stored "
                              "predictions): give snapshot indices")
        return [int(s) for s in np.flatnonzero(is_test if spec == "test" else ~is_test)]
    out = set()
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ExportError(f"--snapshots: cannot read {part!r} (indices like 0,3,5-7, or "
                              "all, test, train)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi >= S:
            raise ExportError(f"--snapshots: {part!r} outside 0..{S - 1}")
        out.update(range(lo, hi + 1))
    return sorted(out)


# per-particle quantities exported when the file has them (names as the fits' blocks but epot)
EXTRA_COLUMNS = (("drcs", "states/cage/displacement"), ("dris", "states/inherent/displacement"),
                 ("dw", "dynamics/debye_waller"), ("fnet", "snapshots/net_force"),
                 ("epot", "snapshots/energy"))   # not "energy": ASE takes that name


def particle_table(h5, s, k):
    """Per-particle columns of snapshot ``s`` at read-out ``k`` (module docstring).

    Returns dict: ``positions`` (N, 3) f8 wrapped into [0, L), ``box`` (3,) f8, ``types`` (N,) i4 species index,
    ``columns`` {name: (N,) f8} in export order (propensity, prediction_<set>…, then those of
    :data:`EXTRA_COLUMNS` the file has),
    ``time`` (τ), ``is_test`` bool or None."""
    cols = {"propensity": h5["propensity"][s, k]}
    for name in read_info(h5)["sets"]:
        cols[column_name(f"prediction_{name}")] = h5[f"fits/{name}/prediction"][s, k]
    for key, path in EXTRA_COLUMNS:
        if path in h5:
            cols[key] = h5[path][s]
    is_test = h5["fits/is_test"][s] if "fits/is_test" in h5 else None
    box = h5["snapshots/box"][s]
    return {"positions": wrap(h5["snapshots/positions"][s], box), "box": box,
            "types": h5["snapshots/types"][s].astype(np.int32), "columns": cols,
            "time": float(h5["iso/times"][k]), "is_test": None if is_test is None else bool(is_test)}


def wrap(positions, box):
    """(N, 3) positions mapped into [0, L) per axis (float64)."""
    p = np.asarray(positions, dtype=np.float64)
    w = p - box * np.floor(p / box)
    return np.where(w >= box, w - box, w)      # −1e-17 + L rounds to L


def _g(x):
    return f"{x:.17g}"


def extxyz_frame(table, s, species, symbols=None):
    """Text of one extended-XYZ frame (orthorhombic ``Lattice``, ``pbc``), columns
    species:S:1 pos:R:3 id:I:1 type:I:1 then every float column of ``table`` (R:1). Frame info:
    ``snapshot``, ``time``, ``species_names``, ``is_test`` (when known)."""
    symbols = list(symbols or DEFAULT_SYMBOLS)
    if len(species) > len(symbols):
        raise ExportError(f"{len(species)} species but only {len(symbols)} symbols")
    L = table["box"]
    cols = table["columns"]
    props = "species:S:1:pos:R:3:id:I:1:type:I:1" + "".join(f":{c}:R:1" for c in cols)
    info = [f'Lattice="{L[0]:.17g} 0 0 0 {L[1]:.17g} 0 0 0 {L[2]:.17g}"', f"Properties={props}",
            f"snapshot={s}", f"time={_g(table['time'])}",
            f'species_names="{" ".join(species)}"', 'pbc="T T T"']
    if table["is_test"] is not None:
        info.append(f"is_test={'T' if table['is_test'] else 'F'}")
    pos, types = table["positions"], table["types"]
    values = np.column_stack([pos] + [cols[c] for c in cols])
    lines = [str(len(types)), " ".join(info)]
    for i in range(len(types)):
        lines.append(f"{symbols[types[i]]} " + " ".join(map(_g, values[i, :3])) + f" {i + 1} "
                     f"{types[i] + 1} " + " ".join(map(_g, values[i, 3:])))
    return "\n".join(lines) + "\n"


def lammps_dump_frame(table, s):
    """Text of one LAMMPS dump frame (``ITEM: TIMESTEP`` = snapshot index, box [0, L) periodic,
    ``ITEM: ATOMS id type x y z <columns>``)."""
    L = table["box"]
    cols = table["columns"]
    pos, types = table["positions"], table["types"]
    head = ["ITEM: TIMESTEP", str(s), "ITEM: NUMBER OF ATOMS", str(len(types)),
            "ITEM: BOX BOUNDS pp pp pp"] + [f"0 {_g(L[d])}" for d in range(3)]
    head.append("ITEM: ATOMS id type x y z" + "".join(f" {c}" for c in cols))
    values = np.column_stack([pos] + [cols[c] for c in cols])
    body = [f"{i + 1} {types[i] + 1} " + " ".join(map(_g, values[i])) for i in range(len(types))]
    return "\n".join(head + body) + "\n"


def glassbench_arrays(h5, s, k, replicas=None):
    """The GlassBench/BOTAN ``.npz`` arrays of snapshot ``s`` at read-out ``k``: ``types`` (N,)
    species index (import with ``imported.first_type: 0``), ``initial_positions`` (N, 3) wrapped,
    ``positions`` (R, N, 3) unwrapped replica positions = initial + /iso/displacements[s, :, k],
    and our extras (ignored by readers that do not know them): ``propensity``, ``prediction_<set>``,
    ``drcs``, ``dris``, ``dw``, ``fnet``, ``epot`` (N,), ``time``, ``box`` (3,), ``is_test``.
    Raises ExportError when the file has no /iso/displacements (``iso.store_displacements: false``)."""
    if "iso/displacements" not in h5:
        raise ExportError("the GlassBench layout holds every replica's positions, and this file has "
                          "no /iso/displacements: rerun with iso.store_displacements: true")
    t = particle_table(h5, s, k)
    disp = h5["iso/displacements"][s, :, k].astype(np.float64)
    if replicas is not None:
        disp = disp[:replicas]
    out = {"types": t["types"].astype(np.int64), "initial_positions": t["positions"],
           "positions": t["positions"][None] + disp, "time": np.float64(t["time"]), "box": t["box"]}
    out.update(t["columns"])
    if t["is_test"] is not None:
        out["is_test"] = np.bool_(t["is_test"])
    return out


def export(path, to, output=None, t=None, snapshots=None, symbols=None, state_point=None):
    """Write the per-particle results of the output file ``path``.

    to : 'extxyz' | 'lammps-dump' | 'glassbench'; output : file (extxyz, lammps-dump: every chosen
    snapshot one frame of it; a path containing ``{s}`` writes one file per snapshot) or folder
    (glassbench: one ``snapshot_NNNN.npz`` per snapshot, zero-padded so that lexicographic and
    natural order agree); default beside ``path`` (``<stem>.xyz``, ``<stem>.dump``,
    ``<stem>_glassbench/``). t : time (τ) of the read-out (nearest in ln t; None → τ_α of species A);
    snapshots : :func:`parse_snapshots` spec; symbols : chemical symbols per species (extxyz).
    Returns dict ``files`` (paths written), ``time`` (τ, the read-out used), ``k``, ``snapshots``,
    ``columns``. ``state_point``: state point k of a sweep (glasshpc.io.results.open_results;
    default outputs then carry ``_sp<k>`` in their name). Raises ExportError (a ValueError) for what
    the file cannot provide (also a sweep without ``state_point``)."""
    if to not in ("extxyz", "lammps-dump", "glassbench"):
        raise ExportError(f"--to must be extxyz, lammps-dump or glassbench, got {to!r}")
    from .results import ResultsError, check_results, open_results
    stem = os.path.splitext(path)[0] + ("" if state_point is None else f"_sp{state_point}")
    try:
        check_results(path, state_point)
    except ResultsError as err:
        raise ExportError(str(err)) from None
    with open_results(path, state_point) as h5:
        info = read_info(h5)
        k = time_index(info["times"], t, info["tau_alpha"])
        chosen = parse_snapshots(snapshots, info["S"], info["is_test"])
        files = []
        if to == "glassbench":
            folder = output or stem + "_glassbench"
            os.makedirs(folder, exist_ok=True)
            width = max(4, len(str(info["S"] - 1)))
            for s in chosen:
                arrays = glassbench_arrays(h5, s, k)
                f = os.path.join(folder, f"snapshot_{s:0{width}d}.npz")
                np.savez(f, **arrays)
                files.append(f)
            meta = {"source": os.path.abspath(path), "time": float(info["times"][k]),
                    "species": info["species"], "propensity_kind": info["kind"],
                    "snapshots": chosen, "first_type": 0,
                    "box_length": float(h5["snapshots/box"][0, 0])}
            with open(os.path.join(folder, "glasshpc_export.json"), "w") as fh:
                json.dump(meta, fh, indent=1)
            columns = list(particle_table(h5, chosen[0], k)["columns"]) if chosen else []
        else:
            output = output or stem + (".xyz" if to == "extxyz" else ".dump")
            frames, columns = {}, []
            for s in chosen:
                table = particle_table(h5, s, k)
                columns = list(table["columns"])
                frames[s] = (extxyz_frame(table, s, info["species"], symbols) if to == "extxyz"
                             else lammps_dump_frame(table, s))
            if "{s}" in output:
                for s, text in frames.items():
                    f = output.replace("{s}", str(s))
                    _write(f, text)
                    files.append(f)
            else:
                _write(output, "".join(frames.values()))
                files.append(output)
    return {"files": files, "time": float(info["times"][k]), "k": k, "snapshots": chosen,
            "columns": columns}


def _write(path, text):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
