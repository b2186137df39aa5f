"""Voronoi volume / area / asphericity (glasshpc.structure.voronoi) against lattice geometry; needs freud."""
import numpy as np
import pytest

pytest.importorskip("freud", reason="optional extra 'voronoi' (freud-analysis) not installed")

from glasshpc.structure.voronoi import VORONOI_FEATURE_NAMES, voronoi_features  # noqa: E402


def _lattice(basis, n, c):
    g = np.arange(n)
    cells = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
    return ((cells[:, None, :] + np.asarray(basis)[None, :, :]) * c).reshape(-1, 3), np.full(3, n * c)


def test_simple_cubic_cell_is_a_cube():
    c = 1.3
    pos, box = _lattice([[0, 0, 0]], 5, c)
    pos = pos + 1e-9 * np.random.default_rng(0).standard_normal(pos.shape)  # break the 8-fold vertex degeneracy
    f = voronoi_features(pos, box)
    np.testing.assert_allclose(f[:, 0], c ** 3, rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], 6 * c ** 2, rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], 6 / np.pi, rtol=1e-5)


def test_fcc_cell_is_a_rhombic_dodecahedron():
    c = 1.6  # cubic lattice constant: V = c³/4, S = (3√2/2) c², asphericity 3√2/π
    pos, box = _lattice([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], 4, c)
    f = voronoi_features(pos + 7 * box, box)  # any periodic image
    np.testing.assert_allclose(f[:, 0], c ** 3 / 4, rtol=2e-6)
    np.testing.assert_allclose(f[:, 1], 1.5 * np.sqrt(2) * c ** 2, rtol=2e-6)
    np.testing.assert_allclose(f[:, 2], 3 * np.sqrt(2) / np.pi, rtol=2e-6)


def test_random_volumes_fill_the_box_and_areas_are_consistent():
    rng = np.random.default_rng(3)
    box = np.array([6.1, 7.3, 5.2])
    pos = rng.random((400, 3)) * box
    f = voronoi_features(pos, box)
    assert f.shape == (400, len(VORONOI_FEATURE_NAMES))
    assert np.isclose(f[:, 0].sum(), np.prod(box), rtol=1e-6)  # freud works in float32
    assert np.all(f[:, 2] > 1.0)  # the sphere minimises S³/V² (isoperimetric inequality)
    # translation invariance (periodic images)
    g = voronoi_features(pos + np.array([2.5, -1.0, 0.3]), box)
    np.testing.assert_allclose(g, f, rtol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="coincide"):
        voronoi_features(np.array([[1.0, 1, 1], [1.0, 1, 1], [2, 2, 2]]), np.full(3, 4.0))
    with pytest.raises(ValueError, match="finite"):
        voronoi_features(np.array([[np.nan, 1, 1], [2, 2, 2]]), np.full(3, 4.0))
    with pytest.raises(ValueError, match="box"):
        voronoi_features(np.zeros((3, 3)) + np.arange(3)[:, None], np.array([4.0, 0, 4]))
