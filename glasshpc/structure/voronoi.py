"""Per-particle Voronoi features: cell volume, surface area and asphericity ([DW] §2.2.1, SCIENCE.md §4).

Reduced LJ units (lengths σ_AA, volumes σ_AA³, areas σ_AA²).

The tessellation is freud's (``freud.locality.Voronoi``, voro++ underneath), an OPTIONAL dependency:
``pip install 'glasshpc[voronoi]'`` (package ``freud-analysis``). Without it :func:`voronoi_features` raises an
ImportError that names the extra; nothing else in glasshpc needs freud.

Definitions (standard, not radical, Voronoi tessellation of the periodic box):

- volume V_i of the Voronoi cell of particle i (the volumes sum to the box volume);
- surface area S_i = Σ over the cell's faces of the face area (freud's neighbour-list weights);
- asphericity a_i = S_i³ / (36 π V_i²): 1 for a sphere, 6/π ≈ 1.910 for a cube (simple cubic lattice),
  3√2/π ≈ 1.350 for the rhombic dodecahedron (FCC lattice). [DW] does not spell out its asphericity; this is the
  usual isoperimetric shape factor of Voronoi cells in the glass literature (e.g. Starr et al., PRL 89, 125501).

Precision: freud computes in single precision (positions are cast to float32), so volumes and areas carry a
relative error of ~1e-7 (the volumes sum to the box volume to ~1e-7 relative). Ample for descriptors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["voronoi_features", "VORONOI_FEATURE_NAMES"]

VORONOI_FEATURE_NAMES = ("voronoi_volume", "voronoi_area", "voronoi_asphericity")


def _freud():
    try:
        import freud
    except ImportError as err:  # optional extra
        raise ImportError("Voronoi features need the optional dependency 'freud-analysis': "
                          "pip install 'glasshpc[voronoi]' (or pip install freud-analysis)") from err
    return freud


def voronoi_features(positions, box):
    """Voronoi volume, surface area and asphericity of every particle.

    Parameters
    ----------
    positions : (N, 3) float64, any periodic image (σ_AA); N >= 2
    box : (3,) float64 orthorhombic box edges, origin at 0

    Returns
    -------
    (N, 3) float64, columns ``VORONOI_FEATURE_NAMES``: volume (σ³), surface area (σ²), asphericity
    S³/(36πV²) (dimensionless, >= 1).

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
    # freud's box is centred on the origin: shift, then wrap into [-L/2, L/2)
    wrapped = positions - box * np.floor(positions / box) - 0.5 * box
    fbox = freud.box.Box(*box)
    nq = freud.locality.AABBQuery(fbox, wrapped)
    close = nq.query(wrapped, {"r_max": 1e-9 * float(box.min()), "exclude_ii": True}).toNeighborList()
    if len(close):
        raise ValueError(f"particles {int(close.query_point_indices[0])} and {int(close.point_indices[0])} "
                         "coincide: the Voronoi tessellation is undefined")
    vor = freud.locality.Voronoi()
    vor.compute((fbox, wrapped))
    vol = np.array(vor.volumes, dtype=np.float64)
    nl = vor.nlist
    area = np.bincount(np.asarray(nl.query_point_indices), weights=np.asarray(nl.weights, dtype=np.float64),
                       minlength=positions.shape[0])
    out = np.empty((positions.shape[0], 3))
    out[:, 0] = vol
    out[:, 1] = area
    out[:, 2] = area ** 3 / (36.0 * np.pi * vol ** 2)
    return out
