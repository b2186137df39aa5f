import numpy as np
import pytest

from glasshpc.structure.sann import sann_neighbors


def fcc(ncell, a=1.5):
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    g = np.array([[i, j, k] for i in range(ncell) for j in range(ncell) for k in range(ncell)])
    pos = (g[:, None, :] + base[None, :, :]).reshape(-1, 3) * a
    return pos, np.full(3, ncell * a)


def brute_sann(pos, box):
    """Direct implementation of the definition on all minimum-image distances."""
    d = pos[None, :, :] - pos[:, None, :]
    d -= box * np.rint(d / box)
    r = np.sqrt((d ** 2).sum(-1))
    out = []
    for i in range(len(pos)):
        o = np.argsort(np.where(np.arange(len(pos)) == i, np.inf, r[i]), kind="mergesort")
        rs = r[i, o]
        m = 3
        while not (rs[:m].sum() / (m - 2) < rs[m]):
            m += 1
        out.append(set(o[:m].tolist()))
    return out


def as_sets(off, nb):
    return [set(nb[off[i]:off[i + 1]].tolist()) for i in range(len(off) - 1)]


def test_fcc_gives_12():
    pos, box = fcc(4)
    off, nb = sann_neighbors(pos, box)
    assert np.all(np.diff(off) == 12)
    # the 12 neighbours are exactly the nearest-neighbour shell at a/sqrt(2)
    for i, s in enumerate(as_sets(off, nb)):
        d = pos[list(s)] - pos[i]
        d -= box * np.rint(d / box)
        assert np.allclose(np.linalg.norm(d, axis=1), 1.5 / np.sqrt(2))


def test_perturbed_fcc_gives_12():
    pos, box = fcc(4)
    rng = np.random.default_rng(1)
    pos = pos + rng.normal(scale=0.02, size=pos.shape)
    off, nb = sann_neighbors(pos + 7 * box, box)  # unwrapped images are fine
    assert np.all(np.diff(off) == 12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 150
    box = np.array([6.0, 6.5, 7.0])
    pos = rng.uniform(size=(n, 3)) * box
    # small starting radius forces the automatic growth path
    off, nb = sann_neighbors(pos, box, r_max=0.5)
    assert as_sets(off, nb) == brute_sann(pos, box)
    off2, nb2 = sann_neighbors(pos, box)
    assert np.array_equal(off, off2) and np.array_equal(nb, nb2)
    # rows are sorted by distance
    for i in range(n):
        d = pos[nb[off[i]:off[i + 1]]] - pos[i]
        d -= box * np.rint(d / box)
        r = np.linalg.norm(d, axis=1)
        assert np.all(np.diff(r) >= 0)


def test_box_too_small_raises():
    rng = np.random.default_rng(3)
    box = np.full(3, 3.0)
    pos = rng.uniform(size=(5, 3)) * box  # too dilute: the SANN shell needs r > box/2
    with pytest.raises(ValueError, match="half the box"):
        sann_neighbors(pos, box)
