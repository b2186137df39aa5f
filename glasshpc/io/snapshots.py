"""Bring your own snapshots: readers for LAMMPS data files, LAMMPS dump files and extended XYZ.

Reduced LJ units of species A (lengths in σ_AA); files are read as they are, no unit conversion.

Readers return a :class:`Frame` (one configuration, particles in file order);
:func:`load_snapshot` turns a file into the arrays a run stores — wrapped positions ordered by
atom id, species indices from an explicit type map, the cubic box — after refusing anything the
pipeline cannot use. Every refusal is an :class:`InputError` naming the file and the offending
particle (0-based row in the file and, for LAMMPS files, the atom id) or line.

Supported:

* LAMMPS data files, atom style ``atomic`` (``Atoms`` section ``id type x y z [ix iy iz]``); other
  sections (Masses, Velocities) are skipped.
* LAMMPS dump files (``dump … atom`` / ``custom``), one frame per file, columns ``id type`` and
  one of ``xu yu zu`` (unwrapped), ``x y z`` or ``xs ys zs`` (wrapped / scaled, with optional
  ``ix iy iz``), or ``xsu ysu zsu``.
* Extended XYZ, one frame per file: ``Lattice="ax ay az bx by bz cx cy cz"`` (orthorhombic: the
  off-diagonal entries must vanish), ``Properties=species:S:1:pos:R:3`` (the default); positions
  must lie in the box (ASE: ``atoms.wrap()`` before writing).

Wrapped coordinates (data-file and dump ``x``/``xs``, extxyz ``pos``) must lie inside the box up to
a rounding tolerance of 10⁻⁶ L; unwrapped ones (``xu``, or ``x`` with image flags) are wrapped here.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

_TOL = 1e-6   # relative tolerance of "inside the box" (files round coordinates)


class InputError(ValueError):
    """A snapshot file the pipeline cannot use; the message names the file and the problem (and the
    line for reader errors). Plain ``args``: survives pickling through mpi4py collectives."""


_MAX_ID = 2**63 - 1


def _show(text, limit=60):
    """A file excerpt for a message: repr, at most ``limit`` characters."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit - 1] + "…"


@dataclass
class Frame:
    """One configuration as stored in a file (particles in file order).

    positions : (N, 3) float64, σ — unwrapped when the file has image flags or unwrapped
        coordinates, else as in the file
    wrapped : (N, 3) float64 or None — the file's in-box coordinates (must lie in [lo, hi])
    types : (N,) str — particle type labels as written ('1', '2', or species names)
    ids : (N,) int64 — atom ids (1..N in file order when the file has none)
    lines : (N,) int64 — 1-based line of each particle in the file (for messages)
    lo, hi : (3,) float64 box bounds; tilt : (3,) float64 (xy, xz, yz), zero for orthorhombic
    path, format : where it came from
    """
    positions: np.ndarray
    wrapped: object
    types: np.ndarray
    ids: np.ndarray
    lines: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tilt: np.ndarray
    path: str
    format: str


FORMATS = ("lammps-data", "lammps-dump", "extxyz")
_EXT = {".data": "lammps-data", ".lmp": "lammps-data", ".lammps": "lammps-data",
        ".dump": "lammps-dump", ".lammpstrj": "lammps-dump", ".atom": "lammps-dump",
        ".xyz": "extxyz", ".extxyz": "extxyz"}


def detect_format(path):
    """Format from the extension, else from the content (``ITEM: TIMESTEP`` → dump,
    ``Lattice=`` on line 2 → extxyz, an ``atoms`` header line → data)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXT:
        return _EXT[ext]
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = [fh.readline() for _ in range(12)]
    if head[0].startswith("ITEM:"):
        return "lammps-dump"
    if len(head) > 1 and "Lattice=" in head[1]:
        return "extxyz"
    if any(re.match(r"^\s*\d+\s+atoms\s*$", line.split("#")[0]) for line in head):
        return "lammps-data"
    raise InputError(f"{path}: cannot tell the format (extension {ext or 'none'}); set "
                     "snapshots.format to lammps-data, lammps-dump or extxyz")


def read_frame(path, fmt="auto"):
    """Read one configuration; ``fmt`` in 'auto', 'lammps-data', 'lammps-dump', 'extxyz'.
    Raises InputError (truncated file, bad columns, more than one frame, unsupported style)."""
    if fmt == "auto":
        fmt = detect_format(path)
    reader = {"lammps-data": read_lammps_data, "lammps-dump": read_lammps_dump,
              "extxyz": read_extxyz}.get(fmt)
    if reader is None:
        raise InputError(f"{path}: unknown format {fmt!r}; known: {list(FORMATS)}")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path} line {line} (byte {err.start}): not UTF-8 text (cannot be a {fmt} "
                         "file)") from None
    nul = text.find("\0")
    if nul >= 0:
        raise InputError(f"{path} line {text.count(chr(10), 0, nul) + 1}: NUL byte (a binary file, "
                         f"cannot be a {fmt} file)")
    return reader(text, path)


def _floats(tokens, path, lineno, what):
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"{path} line {lineno}: cannot read {what} from "
                         f"{_show(' '.join(tokens))}") from None


def _int(token, path, lineno, what, lo=None):
    """A whole number written as one (``300``, not ``300.0``, ``5.5`` or ``1e3``), |v| < 2⁶³."""
    try:
        v = int(token)
    except ValueError:
        raise InputError(f"{path} line {lineno}: {what} must be a whole number, got "
                         f"{_show(token)}") from None
    if abs(v) > _MAX_ID:
        raise InputError(f"{path} line {lineno}: {what} {_show(token, 30)} is out of range "
                         "(|value| < 2⁶³)")
    if lo is not None and v < lo:
        raise InputError(f"{path} line {lineno}: {what} must be ≥ {lo}, got {v}")
    return v


# -- LAMMPS data -----------------------------------------------------------------------------

_SECTIONS = {"Atoms", "Velocities", "Masses", "Bonds", "Angles", "Dihedrals", "Impropers",
             "Pair Coeffs", "PairIJ Coeffs", "Bond Coeffs", "Angle Coeffs", "Dihedral Coeffs",
             "Improper Coeffs", "Ellipsoids", "Lines", "Triangles", "Bodies"}


def read_lammps_data(text, path="<data>"):
    """LAMMPS data file, atom style atomic (``Atoms # atomic``: id type x y z [ix iy iz])."""
    lines = text.splitlines()
    n_atoms, lo, hi, tilt = None, [None] * 3, [None] * 3, np.zeros(3)
    i = 1                                   # line 1 is a title
    while i < len(lines):
        body = lines[i].split("#")[0].strip()
        if body in _SECTIONS:
            break
        words = body.split()
        if len(words) == 2 and words[1] == "atoms":
            n_atoms = _int(words[0], path, i + 1, "the atom count", lo=1)
        for d, ax in enumerate("xyz"):
            if words[2:] == [f"{ax}lo", f"{ax}hi"]:
                lo[d], hi[d] = _floats(words[:2], path, i + 1, f"{ax}lo {ax}hi")
        if words[3:] == ["xy", "xz", "yz"]:
            tilt = np.array(_floats(words[:3], path, i + 1, "xy xz yz"))
        i += 1
    if n_atoms is None:
        raise InputError(f"{path}: no 'N atoms' line in the header (not a LAMMPS data file?)")
    if None in lo:
        raise InputError(f"{path}: the header lacks the box bounds (xlo xhi, ylo yhi, zlo zhi)")
    rows = None
    while i < len(lines):
        parts = lines[i].split("#", 1)
        name = parts[0].strip()
        if name == "Atoms":
            style = parts[1].strip() if len(parts) > 1 else "atomic"
            if style != "atomic":
                raise InputError(f"{path} line {i + 1}: atom style '{style}' is not supported "
                                 "(atomic only: id type x y z [ix iy iz])")
            rows, i = _section_rows(lines, i + 1, n_atoms, path, "Atoms")
        else:
            i += 1
    if rows is None:
        raise InputError(f"{path}: no Atoms section (truncated file?)")
    ncol = {len(r) for _, r in rows}
    bad = [(ln, r) for ln, r in rows if len(r) not in (5, 8)]
    if bad or len(ncol) > 1:
        ln, r = bad[0] if bad else rows[-1]
        raise InputError(f"{path} line {ln}: Atoms lines of style atomic have 5 or 8 columns "
                         f"(id type x y z [ix iy iz]), got {len(r)}")
    ids = np.array([_int(r[0], path, ln, "the atom id", lo=1) for ln, r in rows], dtype=np.int64)
    types = np.array([r[1] for _, r in rows])
    x = np.array([_floats(r[2:5], path, ln, "x y z") for ln, r in rows])
    lo, hi = np.array(lo), np.array(hi)
    pos = x.copy()
    if ncol == {8}:
        img = np.array([[_int(v, path, ln, "an image flag") for v in r[5:8]] for ln, r in rows],
                       dtype=np.float64)
        pos = x + img * (hi - lo)
    lines_of = np.array([ln for ln, _ in rows], dtype=np.int64)
    return Frame(pos, x, types, ids, lines_of, lo, hi, tilt, path, "lammps-data")


def _section_rows(lines, i, n, path, section):
    """n non-blank rows after a section header (blank lines skipped) → ([(lineno, tokens)], next)."""
    rows = []
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and len(rows) < n:
        body = lines[i].split("#")[0].strip()
        if body in _SECTIONS:
            break
        if body:
            rows.append((i + 1, body.split()))
        elif rows:
            break
        i += 1
    if len(rows) < n:
        raise InputError(f"{path}: truncated: the {section} section has {len(rows)} of {n} atoms")
    return rows, i


# -- LAMMPS dump -----------------------------------------------------------------------------

def read_lammps_dump(text, path="<dump>"):
    """LAMMPS dump file (atom/custom style), exactly one frame."""
    lines = text.splitlines()

    def expect(i, item):
        if i >= len(lines) or not lines[i].startswith(f"ITEM: {item}"):
            got = lines[i].strip() if i < len(lines) else "end of file"
            raise InputError(f"{path} line {i + 1}: expected 'ITEM: {item}', got {got!r} "
                             "(truncated or not a LAMMPS dump file)")
        return lines[i][len("ITEM: "):].split()

    expect(0, "TIMESTEP")
    expect(2, "NUMBER OF ATOMS")
    if len(lines) < 4 or not lines[3].strip():
        raise InputError(f"{path} line 4: the number of atoms is missing")
    n = _int(lines[3].strip(), path, 4, "the number of atoms", lo=1)
    bounds = expect(4, "BOX BOUNDS")
    triclinic = bounds[2:5] == ["xy", "xz", "yz"]
    lo, hi, tilt = np.zeros(3), np.zeros(3), np.zeros(3)
    for d in range(3):
        if 5 + d >= len(lines):
            raise InputError(f"{path}: truncated in the box bounds")
        v = _floats(lines[5 + d].split(), path, 6 + d, "box bounds")
        if len(v) < (3 if triclinic else 2):
            raise InputError(f"{path} line {6 + d}: box bounds need {'lo hi tilt' if triclinic else 'lo hi'}, "
                             f"got {_show(lines[5 + d])}")
        lo[d], hi[d] = v[0], v[1]
        if triclinic:
            tilt[d] = v[2]
    cols = expect(8, "ATOMS")[1:]
    body = lines[9:9 + n]
    if len(body) < n or any(not b.strip() for b in body):
        got = sum(1 for b in body if b.strip())
        raise InputError(f"{path}: truncated: {got} of {n} atom lines")
    if any(line.strip() for line in lines[9 + n:]):
        raise InputError(f"{path} line {10 + n}: more than one frame; one snapshot per file "
                         "(split the dump)")
    table = [b.split() for b in body]
    for k, row in enumerate(table):
        if len(row) != len(cols):
            raise InputError(f"{path} line {10 + k}: {len(row)} values for {len(cols)} columns")
    col = {c: j for j, c in enumerate(cols)}
    if "type" not in col and "element" not in col:
        raise InputError(f"{path}: the ATOMS columns {cols} lack 'type' (or 'element')")
    ids = (np.array([_int(r[col["id"]], path, 10 + k, "the atom id", lo=1)
                     for k, r in enumerate(table)], dtype=np.int64) if "id" in col
           else np.arange(1, n + 1, dtype=np.int64))
    types = np.array([r[col.get("type", col.get("element"))] for r in table])
    L = hi - lo

    def take(names):
        return np.array([_floats([r[col[c]] for c in names], path, 10 + k, " ".join(names))
                         for k, r in enumerate(table)])

    wrapped = None
    if all(c in col for c in ("xu", "yu", "zu")):
        pos = take(("xu", "yu", "zu"))
    elif all(c in col for c in ("xsu", "ysu", "zsu")):
        pos = lo + take(("xsu", "ysu", "zsu")) * L
    elif all(c in col for c in ("x", "y", "z")):
        wrapped = pos = take(("x", "y", "z"))
    elif all(c in col for c in ("xs", "ys", "zs")):
        wrapped = pos = lo + take(("xs", "ys", "zs")) * L
    else:
        raise InputError(f"{path}: the ATOMS columns {cols} hold no coordinates (need xu yu zu, "
                         "x y z, xs ys zs or xsu ysu zsu)")
    if wrapped is not None and all(c in col for c in ("ix", "iy", "iz")):
        img = np.array([[_int(r[col[c]], path, 10 + k, "an image flag") for c in ("ix", "iy", "iz")]
                        for k, r in enumerate(table)], dtype=np.float64)
        pos = wrapped + img * L
    return Frame(pos, wrapped, types, ids, np.arange(10, 10 + n, dtype=np.int64), lo, hi, tilt,
                 path, "lammps-dump")


# -- extended XYZ ----------------------------------------------------------------------------

_KV = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')


def read_extxyz(text, path="<extxyz>"):
    """Extended XYZ (one frame): Lattice (orthorhombic), Properties with species and pos."""
    lines = text.splitlines()
    if not lines or not lines[0].split():
        raise InputError(f"{path} line 1: expected the particle count")
    n = _int(lines[0].split()[0], path, 1, "the particle count", lo=1)
    if len(lines) < 2:
        raise InputError(f"{path}: truncated: no comment line")
    info = {m.group(1): (m.group(2) if m.group(2) is not None else m.group(3))
            for m in _KV.finditer(lines[1])}
    if "Lattice" not in info:
        raise InputError(f"{path} line 2: no Lattice=\"…\" (the box is required)")
    lat = _floats(info["Lattice"].split(), path, 2, "Lattice")
    if len(lat) != 9:
        raise InputError(f"{path} line 2: Lattice needs 9 numbers, got {len(lat)}")
    cell = np.array(lat).reshape(3, 3)
    props = info.get("Properties", "species:S:1:pos:R:3").split(":")
    if len(props) % 3:
        raise InputError(f"{path} line 2: cannot parse Properties={info.get('Properties')}")
    col, j = {}, 0
    for name, _kind, width in zip(props[0::3], props[1::3], props[2::3]):
        w = _int(width, path, 2, f"the width of property {_show(name, 30)}", lo=1)
        col[name] = (j, w)
        j += w
    if "species" not in col or "pos" not in col or col["pos"][1] != 3:
        raise InputError(f"{path} line 2: Properties must include species:S:1 and pos:R:3")
    body = lines[2:2 + n]
    if len(body) < n or any(not b.strip() for b in body):
        got = sum(1 for b in body if b.strip())
        raise InputError(f"{path}: truncated: {got} of {n} particle lines")
    if any(line.strip() for line in lines[2 + n:]):
        raise InputError(f"{path} line {3 + n}: more than one frame; one snapshot per file")
    table = [b.split() for b in body]
    for k, row in enumerate(table):
        if len(row) != j:
            raise InputError(f"{path} line {3 + k}: {len(row)} values, Properties declare {j}")
    p0 = col["pos"][0]
    pos = np.array([_floats(r[p0:p0 + 3], path, 3 + k, "pos") for k, r in enumerate(table)])
    types = np.array([r[col["species"][0]] for r in table])
    lo = np.zeros(3)
    off = cell - np.diag(np.diag(cell))
    # a non-orthorhombic cell is reported as tilt so the caller refuses it by name
    tilt = np.array([np.abs(off).max(), 0.0, 0.0])
    return Frame(pos, pos, types, np.arange(1, n + 1, dtype=np.int64),
                 np.arange(3, 3 + n, dtype=np.int64), lo, np.diag(cell).copy(), tilt, path, "extxyz")


# -- checks and conversion -------------------------------------------------------------------

def load_snapshot(path, fmt, type_map, species, n_particles=None, density=None, model=None):
    """Read and check one snapshot file; return what a run stores.

    Parameters: ``fmt`` as :func:`read_frame`; ``type_map`` {file type label (str) → species name};
    ``species`` the model's species names (index = species index); ``n_particles``, ``density``
    the config's values (checked when given); ``model`` for the overlap check
    (:func:`check_overlaps`).

    Returns (positions (N, 3) float64 wrapped into [0, L), ordered by atom id; types (N,) int32
    species indices; box (3,) float64 edge lengths, origin 0).

    Raises InputError naming the file and the particle: wrong N, duplicate ids, non-finite
    coordinate, triclinic or non-cubic box, density differing from the config, a wrapped coordinate
    outside the box, a type missing from ``type_map``, overlapping particles.
    """
    f = read_frame(path, fmt)
    n = len(f.ids)
    if n_particles is not None and n != n_particles:
        raise InputError(f"{path}: {n} particles but model.n_particles = {n_particles}")
    # duplicates by sorting (never by allocating an array indexed by id: ids may be huge)
    by_id = np.argsort(f.ids, kind="stable")
    same = np.flatnonzero(f.ids[by_id][1:] == f.ids[by_id][:-1])
    if same.size:
        a, b = by_id[same[0]], by_id[same[0] + 1]
        raise InputError(f"{path} lines {f.lines[a]} and {f.lines[b]}: atom id {f.ids[a]} appears "
                         f"more than once ({same.size} repeated ids)")
    L = f.hi - f.lo
    if not (np.all(np.isfinite(L)) and np.all(L > 0)):
        raise InputError(f"{path}: invalid box bounds lo = {f.lo}, hi = {f.hi}")
    if np.any(np.abs(f.tilt) > 1e-12 * L.max()):
        raise InputError(f"{path}: triclinic / non-orthorhombic box (tilt {f.tilt.tolist()}) is "
                         "not supported")
    if np.ptp(L) > _TOL * L.max():
        raise InputError(f"{path}: non-cubic box with edges {L.tolist()}; the pipeline needs a "
                         "cubic box")
    if density is not None and abs(n / np.prod(L) - density) > 1e-4 * density:
        raise InputError(f"{path}: the box (L = {L[0]:.8g}) gives density {n / np.prod(L):.8g} "
                         f"but model.density = {density}")
    bad = np.flatnonzero(~np.isfinite(f.positions).all(axis=1))
    if f.wrapped is not None:
        bad = np.union1d(bad, np.flatnonzero(~np.isfinite(f.wrapped).all(axis=1)))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path} line {f.lines[i]}: particle {i} (atom id {f.ids[i]}) has a "
                         f"non-finite coordinate {f.positions[i].tolist()}")
    if f.wrapped is not None:
        tol = _TOL * L
        out = np.flatnonzero(((f.wrapped < f.lo - tol) | (f.wrapped > f.hi + tol)).any(axis=1))
        if out.size:
            i = int(out[0])
            raise InputError(f"{path} line {f.lines[i]}: particle {i} (atom id {f.ids[i]}) at "
                             f"{f.wrapped[i].tolist()} is outside the box [{f.lo.tolist()}, "
                             f"{f.hi.tolist()}] ({out.size} particles outside)")
    index = {name: k for k, name in enumerate(species)}
    types = np.empty(n, np.int32)
    for i, t in enumerate(f.types):
        name = type_map.get(str(t))
        if name is None or name not in index:
            raise InputError(f"{path} line {f.lines[i]}: particle {i} (atom id {f.ids[i]}) has "
                             f"type {_show(str(t), 40)}, which snapshots.type_map "
                             f"{_show(dict(type_map), 200)} does not map to a species of the "
                             f"model ({list(species)})")
        types[i] = index[name]
    order = np.argsort(f.ids, kind="stable")
    pos = f.positions[order] - f.lo
    pos -= L * np.floor(pos / L)
    pos[pos >= L] -= np.broadcast_to(L, pos.shape)[pos >= L]
    types = types[order]
    if model is not None:
        check_overlaps(pos, types, L, model, path=path, ids=f.ids[order])
    return pos, types, L.astype(np.float64)


def check_overlaps(positions, types, box, model=None, diameters=None, path="", ids=None):
    """Refuse overlapping particles (InputError naming the pair).

    Hard spheres (``diameters`` (N,) given, or ``model.diameters`` per species): any pair closer than
    σ_ij = (σ_i + σ_j)/2, by the exact minimum-image check of the EDMD module
    (:func:`glasshpc.md.edmd._min_gap`). Pair potentials (``model.sigma`` (S, S)): any pair closer
    than σ_ij / 2, where the LJ energy exceeds 10⁴ ε (no liquid or glass state has such a pair).
    ``positions`` (N, 3) wrapped into [0, box)."""
    where = f"{path}: " if path else ""
    ids = np.arange(len(types)) + 1 if ids is None else ids
    if diameters is None and model is not None and hasattr(model, "diameters"):
        diameters = np.asarray(model.diameters)[types]
    if diameters is not None:
        from ..md.edmd import _min_gap
        g, i, j = _min_gap(np.ascontiguousarray(positions, dtype=np.float64),
                           np.asarray(diameters, dtype=np.float64), np.asarray(box, np.float64),
                           1.0)
        if g < 0:
            raise InputError(f"{where}hard spheres {i} and {j} (atom ids {ids[i]}, {ids[j]}) "
                             f"overlap: gap {g:.6g} σ_A")
        return
    if model is None or not hasattr(model, "sigma"):
        return
    from scipy.spatial import cKDTree
    sigma = np.asarray(model.sigma)
    tree = cKDTree(positions, boxsize=np.asarray(box, np.float64))
    pairs = tree.query_pairs(0.5 * float(sigma.max()), output_type="ndarray")
    if len(pairs):
        d = positions[pairs[:, 0]] - positions[pairs[:, 1]]
        d -= box * np.round(d / box)
        r = np.sqrt((d ** 2).sum(axis=1))
        lim = 0.5 * sigma[types[pairs[:, 0]], types[pairs[:, 1]]]
        hit = np.flatnonzero(r < lim)
        if hit.size:
            k = hit[np.argmin(r[hit])]
            i, j = sorted(int(v) for v in pairs[k])
            raise InputError(f"{where}particles {i} and {j} (atom ids {ids[i]}, {ids[j]}) "
                             f"overlap: r = {r[k]:.4g} σ < σ_ij/2 = {lim[k]:.4g} σ")
