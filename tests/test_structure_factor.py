"""S(q) (glasshpc.structure.structure_factor): the non-uniform FFT against the direct sum over particles and
against the exact S(q) of a crystal; empty bins NaN where no lattice vector falls, stored as /snapshots/sq_vectors."""
import h5py
import numpy as np
import pytest

from glasshpc.dynamics import q_grid
from glasshpc.structure.structure_factor import (lattice_vector_counts, structure_factor,
                                                 structure_factor_direct)


@pytest.mark.parametrize("box", [(6.3, 6.3, 6.3), (7.0, 5.5, 9.1)])
def test_fft_equals_direct_sum(box):
    """Random positions (any image, some far outside the box): every bin within 1e-8 relative."""
    rng = np.random.default_rng(4)
    box = np.array(box)
    pos = rng.uniform(-2.0, 3.0, size=(250, 3)) * box
    edges = q_grid()
    fast, ref = structure_factor(pos, box, edges), structure_factor_direct(pos, box, edges)
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    assert np.array_equal(np.isnan(fast), lattice_vector_counts(box, edges) == 0)
    ok = ~np.isnan(ref)
    assert ok.sum() > 80
    np.testing.assert_allclose(fast[ok], ref[ok], rtol=1e-8, atol=0)


def test_simple_cubic_crystal():
    """m³ sites of a simple cubic lattice (spacing a, box m·a): |ρ(q)|² = N² on the crystal's reciprocal lattice
    (n a multiple of m), 0 elsewhere, so each bin holds N · (Bragg vectors in the bin) / (vectors in the bin)."""
    m, a = 6, 1.1
    g = np.arange(m) * a
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + 0.3
    box = np.full(3, m * a)
    edges = np.linspace(0.0, 12.0, 41)
    got = structure_factor(pos, box, edges)
    nmax = int(np.ceil(12.0 * m * a / (2 * np.pi)))
    r = np.arange(-nmax, nmax + 1)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    n = n[np.any(n != 0, axis=1)]
    qn = np.linalg.norm(2 * np.pi * n / box, axis=1)
    b = np.digitize(qn, edges) - 1
    inside = (b >= 0) & (b < len(edges) - 1)
    bragg = np.all(n % m == 0, axis=1)
    counts = np.bincount(b[inside], minlength=40)
    hits = np.bincount(b[inside & bragg], minlength=40)
    want = np.where(counts > 0, len(pos) * hits / np.maximum(counts, 1), np.nan)
    assert hits.sum() > 0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * len(pos))


def test_pipeline_sq_and_empty_bins(tiny_run):
    """The stored S_AA(q) is the FFT evaluation of the stored A positions, and NaN exactly in the bins that
    /snapshots/sq_vectors marks empty."""
    with h5py.File(tiny_run, "r") as f:
        sq, counts, edges = f["snapshots/sq_AA"][()], f["snapshots/sq_vectors"][()], f["snapshots/q_edges"][()]
        pos, types, box = f["snapshots/positions"][1], f["snapshots/types"][1], f["snapshots/box"][1]
    np.testing.assert_array_equal(counts, lattice_vector_counts(box, edges))
    assert np.array_equal(np.isnan(sq), np.broadcast_to(counts == 0, sq.shape))
    np.testing.assert_allclose(sq[1], structure_factor_direct(pos[types == 0], box, edges), rtol=1e-8,
                               equal_nan=True)
