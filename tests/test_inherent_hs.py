import numpy as np
import pytest

from glasshpc.states.inherent import fire_minimize, hs_effective_energy_forces


def hs_config(n, a, frac_small, seed, ratio=0.85):
    """Perturbed simple-cubic lattice (spacing a > 1) of a binary HS mixture, overlap free."""
    m = int(np.ceil(n ** (1 / 3)))
    g = np.array([[i, j, k] for i in range(m) for j in range(m) for k in range(m)], float)
    rng = np.random.default_rng(seed)
    g = g[rng.permutation(len(g))[:n]] * a + rng.uniform(-1, 1, (n, 3)) * 0.3 * (a - 1)
    d = np.ones(n)
    d[rng.permutation(n)[:int(round(frac_small * n))]] = ratio
    return g, d, np.full(3, m * a)


def v_sf(r, s, T=1.0):
    rc = 1.35 * s
    g = rc - s
    return np.where(r < rc, -T * (np.log((r - s) / g) - (r - rc) / g), 0.0)


def test_pair_energy_and_shift():
    box = np.full(3, 10.0)
    d = np.array([1.0, 0.85])
    s = 0.925
    for r in [0.93, 1.0, 1.1, 1.2, 1.35 * s - 1e-7]:
        pos = np.array([[1.0, 1.0, 1.0], [1.0 + r, 1.0, 1.0]])
        e, eper, f = hs_effective_energy_forces(pos, d, box, T=2.0)
        assert e == pytest.approx(float(v_sf(r, s, 2.0)), rel=1e-12, abs=1e-14)
        assert np.allclose(eper, 0.5 * e)
        assert np.allclose(f[0], -f[1]) and f[1, 0] >= 0  # repulsive
    # energy and force go to zero continuously at r_c = 1.35 sigma_ij
    rc = 1.35 * s
    for eps in [1e-3, 1e-5]:
        pos = np.array([[1.0, 1.0, 1.0], [1.0 + rc - eps, 1.0, 1.0]])
        e, _, f = hs_effective_energy_forces(pos, d, box)
        assert 0 < e < eps ** 2 / (2 * (rc - s) ** 2) * 1.01 and np.abs(f).max() < 1.01 * eps / (rc - s) ** 2
    pos = np.array([[1.0, 1.0, 1.0], [1.0 + rc + 1e-9, 1.0, 1.0]])
    e, _, f = hs_effective_energy_forces(pos, d, box)
    assert e == 0.0 and np.all(f == 0.0)
    # overlap -> infinite energy
    pos = np.array([[1.0, 1.0, 1.0], [1.0 + 0.9, 1.0, 1.0]])
    assert hs_effective_energy_forces(pos, d, box)[0] == np.inf


def test_forces_are_minus_gradient_and_brute_force_energy():
    pos, d, box = hs_config(125, 1.12, 0.7, seed=0)
    pos = pos + box * np.array([2, -1, 0])  # any image
    e, eper, f = hs_effective_energy_forces(pos, d, box, T=1.5)
    # brute-force energy
    dd = pos[None] - pos[:, None]
    dd -= box * np.rint(dd / box)
    r = np.sqrt((dd ** 2).sum(-1))
    s = 0.5 * (d[:, None] + d[None, :])
    iu = np.triu_indices(len(pos), 1)
    mask = r[iu] < 1.35 * s[iu]
    assert mask.sum() > 100
    eb = v_sf(np.where(mask, r[iu], 1.35 * s[iu]), s[iu], 1.5).sum()
    assert e == pytest.approx(eb, rel=1e-12)
    assert eper.sum() == pytest.approx(e, rel=1e-12)
    assert np.abs(f.sum(0)).max() < 1e-10
    # central finite differences
    rng = np.random.default_rng(1)
    h = 1e-6
    for i in rng.choice(len(pos), 8, replace=False):
        for k in range(3):
            p = pos.copy()
            p[i, k] += h
            ep = hs_effective_energy_forces(p, d, box, T=1.5)[0]
            p[i, k] -= 2 * h
            em = hs_effective_energy_forces(p, d, box, T=1.5)[0]
            assert -(ep - em) / (2 * h) == pytest.approx(f[i, k], rel=1e-5, abs=1e-6)


def test_fire_converges():
    pos, d, box = hs_config(125, 1.08, 0.7, seed=2)
    e0 = hs_effective_energy_forces(pos, d, box)[0]
    res = fire_minimize(pos, d, box, T=1.0, ftol=1e-8, max_steps=200000)
    assert res["converged"] and res["max_force"] < 1e-8
    assert res["energy"] < e0
    e, _, f = hs_effective_energy_forces(res["positions"], d, box)
    assert e == pytest.approx(res["energy"], rel=1e-12)
    assert np.linalg.norm(f, axis=1).max() < 1e-8
    assert res["displacement"].max() > 1e-3  # it really moved
    # T only scales the landscape: same minimum
    res2 = fire_minimize(pos, d, box, T=3.0, ftol=3e-8, max_steps=200000)
    assert res2["energy"] == pytest.approx(3 * res["energy"], rel=1e-6)


def test_fire_rejects_overlaps():
    pos, d, box = hs_config(27, 1.1, 0.0, seed=3)
    pos[1] = pos[0] + [0.5, 0, 0]
    with pytest.raises(ValueError, match="overlap"):
        fire_minimize(pos, d, box)
