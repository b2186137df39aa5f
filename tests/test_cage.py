import os

import numpy as np
import pytest
from numba import njit

from glasshpc.states.cage import (PairPotential, cage_neighbors, cage_state, in_cage,
                                  total_energy, _in_cage_full, _in_voronoi)


# running MC energy vs a double-precision brute-force energy: the kernel's list entries are
# single-precision coordinates relative to a reference point (measured errors 1e-9 - 3e-8)
RUN_REL = 1e-6


def lattice_config(n, rho, frac_b, seed):
    L = (n / rho) ** (1 / 3)
    m = int(np.ceil(n ** (1 / 3)))
    g = np.array([[i, j, k] for i in range(m) for j in range(m) for k in range(m)], float)
    rng = np.random.default_rng(seed)
    g = g[rng.permutation(len(g))[:n]] * (L / m) + rng.normal(scale=0.03, size=(n, 3))
    t = np.zeros(n, np.int64)
    t[rng.permutation(n)[:int(round(frac_b * n))]] = 1
    return g, t, np.full(3, L)


@pytest.fixture(scope="module")
def ka400():
    """Small KA liquid-like configuration: lattice relaxed by MC in wide spherical cages."""
    pos, t, box = lattice_config(400, 1.2, 0.2, seed=5)
    pot = PairPotential.kob_andersen()
    r = cage_state(pos, t, box, pot, 0.6, 60, 1, seed=11, cage="sphere", cage_radius=0.7)
    return r["final"], t, box


def brute_energy(pos, t, box, pot):
    d = pos[None] - pos[:, None]
    d -= box * np.rint(d / box)
    r = np.sqrt((d ** 2).sum(-1))
    ti, tj = t[:, None], t[None, :]
    eps, sig, rc = pot.epsilon[ti, tj], pot.sigma[ti, tj], pot.cutoff[ti, tj]
    mask = (r < rc) & ~np.eye(len(pos), dtype=bool)
    rr = np.where(mask, r, 1.0)
    if pot.kind == "lj":
        x6 = (sig / rr) ** 6
        v = 4 * eps * (x6 * x6 - x6) - pot.energy_shift[ti, tj]
    elif pot.kind == "harmonic":
        v = eps * (1 - rr / sig) ** 2
    else:
        v = np.where(mask, np.inf, 0.0)
    return 0.5 * np.where(mask, v, 0.0).sum()


def brute_in_cell(R, i, init, box, nbrs, sigc):
    """Eq. 10 evaluated directly (R in the image of init[i])."""
    for j in nbrs:
        rj = init[j] - box * np.rint((init[j] - init[i]) / box)  # image of j nearest to i
        if not np.linalg.norm(R - init[i]) / sigc[i] < np.linalg.norm(R - rj) / sigc[j]:
            return False
    return True


# ---------------------------------------------------------------------------- cage geometry

def test_in_cage_matches_brute_force(ka400):
    pos, t, box = ka400
    pos = pos + 3 * box * np.array([1, -1, 0])  # unwrapped image: must not matter
    off, nb, vec = cage_neighbors(pos, box)
    sigc = np.array([1.0, 0.88])[t]
    src = np.repeat(np.arange(len(pos)), np.diff(off))
    csc2 = (sigc[nb] / sigc[src]) ** 2
    rng = np.random.default_rng(0)
    n_in = 0
    for _ in range(3000):
        i = rng.integers(len(pos))
        R = pos[i] + rng.uniform(-0.9, 0.9, 3)
        ref = brute_in_cell(R, i, pos, box, nb[off[i]:off[i + 1]], sigc)
        assert in_cage(R, i, pos, box, off, nb, sigc) == ref
        u = R - pos[i]
        assert _in_voronoi(u[0], u[1], u[2], i, off, vec, csc2) == ref
        n_in += ref
    assert 300 < n_in < 2700  # both outcomes well represented


def test_no_accepted_position_leaves_the_cell(ka400):
    pos, t, box = ka400
    pot = PairPotential.kob_andersen()
    r = cage_state(pos, t, box, pot, 0.44, 20, 60, seed=3, record_every=4, debug=True)
    assert r["violations"] == 0
    off, nb, _ = cage_neighbors(pos, box)
    sigc = np.array([1.0, 0.88])[t]
    confs = list(r["samples"]) + [r["final"]]
    for conf in confs:
        for i in range(len(pos)):
            assert brute_in_cell(conf[i], i, pos, box, nb[off[i]:off[i + 1]], sigc)
    # particles really moved around (the check is not vacuous)
    assert np.mean(np.linalg.norm(r["final"] - pos, axis=1)) > 0.05
    assert 0.2 < r["acceptance"] < 0.4


# ---------------------------------------------------------------------------- sampling

def _block_se(samples, nblock=10):
    b = samples[: len(samples) // nblock * nblock].reshape(nblock, -1, *samples.shape[1:])
    return b.mean(1).std(0, ddof=1) / np.sqrt(nblock)


IDEAL = PairPotential("harmonic", [[0.0, 0.0], [0.0, 0.0]], [[0.01, 0.01], [0.01, 0.01]],
                      [[0.01, 0.01], [0.01, 0.01]])


def test_ideal_particle_uniform_in_sphere():
    n, R = 200, 0.5
    pos, t, box = lattice_config(n, 0.5, 0.0, seed=1)
    # skin 2R + 0.05: no re-centring, the step may grow to R
    r = cage_state(pos, t, box, IDEAL, 1.0, 20, 2000, seed=7, cage="sphere", cage_radius=R,
                   cage_sigma=1.0, record_every=4, debug=True, skin=2 * R + 0.05)
    assert r["violations"] == 0
    assert 0.2 < r["acceptance"] < 0.4
    u = (r["samples"] - pos[None]).reshape(-1, 3)
    rad = np.linalg.norm(u, axis=1)
    assert rad.max() < R
    # radial histogram against the uniform-ball law P(r < x) = (x/R)^3, i.e. density ~ r^2
    edges = R * np.linspace(0, 1, 11)
    counts, _ = np.histogram(rad, edges)
    expected = len(rad) * np.diff((edges / R) ** 3)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 40, (chi2, counts, expected)  # 9 dof: p ~ 1e-5
    assert np.mean(rad ** 2) == pytest.approx(0.6 * R ** 2, rel=0.02)  # <r^2> = 3R^2/5
    # the cage-state position of every particle is its cage centre within its standard error
    z = (r["positions"] - pos) / _block_se(r["samples"])
    assert np.mean(z ** 2) < 2.0 and np.abs(z).max() < 6
    assert np.sqrt(((r["positions"] - pos) ** 2).mean()) < 0.05 * R


def test_ideal_particle_in_voronoi_cell_averages_to_centroid(ka400):
    """No interactions: r^CS must be the centroid of the Eq. 10 cell (rejection sampling)."""
    pos, t, box = ka400
    sigc = np.array([1.0, 0.88])
    r = cage_state(pos, t, box, IDEAL, 1.0, 50, 3000, seed=5, cage_sigma=sigc, record_every=4,
                   skin=1.2)  # big step allowed (cap skin / (2 sqrt 3)) for the empty cells
    off, nb, vec = cage_neighbors(pos, box)
    rng = np.random.default_rng(0)
    half = 1.6
    checked = 0
    for i in range(0, len(pos), 33):
        nbr = nb[off[i]:off[i + 1]]
        u = rng.uniform(-half, half, (60000, 3))
        w = u[:, None, :] - vec[off[i]:off[i + 1]][None]
        inside = np.all(np.sum(u ** 2, 1)[:, None] / sigc[t[i]] ** 2
                        < np.sum(w ** 2, 2) / sigc[t[nbr]][None] ** 2, axis=1)
        pts = u[inside]
        if np.abs(pts).max() > 0.95 * half:  # cell not inside the sampling cube
            continue
        centroid = pts.mean(0)
        se_ref = pts.std(0) / np.sqrt(len(pts))
        se = _block_se(r["samples"][:, i])
        z = (r["positions"][i] - pos[i] - centroid) / np.sqrt(se ** 2 + se_ref ** 2)
        assert np.abs(z).max() < 5, (i, z)
        checked += 1
    assert checked >= 10


def test_two_particle_boltzmann():
    """One KA A-B pair, particle 0 (almost) fixed: P(r) must be ~ r-shell volume * exp(-V/T)."""
    box = np.full(3, 12.0)
    pos = np.array([[6.0, 6.0, 6.0], [7.0, 6.0, 6.0]])
    t = np.array([0, 1])
    pot = PairPotential.kob_andersen()
    T = 0.5
    R = np.array([1e-6, 0.4])
    # samples 40 sweeps apart are practically independent, so chi^2 has its textbook spread
    res = cage_state(pos, t, box, pot, T, 2000, 400000, seed=3, cage="sphere", cage_radius=R,
                     record_every=40)
    assert 0.25 < res["acceptance"] < 0.4  # step tuned (blocks of 500 moves = 250 sweeps)
    d = res["samples"][:, 1] - res["samples"][:, 0]
    r = np.linalg.norm(d, axis=1)
    # reference: uniform points in particle 1's ball, Boltzmann weighted
    rng = np.random.default_rng(1)
    u = rng.uniform(-0.4, 0.4, (2_000_000, 3))
    u = u[np.sum(u ** 2, 1) < 0.16]
    rr = np.linalg.norm(u + [1.0, 0, 0], axis=1)
    v = 4 * 1.5 * ((0.8 / rr) ** 12 - (0.8 / rr) ** 6)
    wgt = np.exp(-v / T)
    edges = np.linspace(0.6, 1.4, 17)
    p_ref, _ = np.histogram(rr, edges, weights=wgt)
    p_ref /= p_ref.sum()
    counts, _ = np.histogram(r, edges)
    keep = p_ref * len(r) > 20
    chi2 = ((counts[keep] - len(r) * p_ref[keep]) ** 2 / (len(r) * p_ref[keep])).sum()
    assert chi2 < 2.5 * keep.sum(), (chi2, counts, len(r) * p_ref)  # 13 dof: p ~ 2e-3
    mean_ref = np.sum(rr * wgt) / wgt.sum()
    se = _block_se(r, 20)
    assert abs(r.mean() - mean_ref) < 5 * se + 1e-4, (r.mean(), mean_ref, se)
    # and the test discriminates: the ideal-gas distribution is rejected by far
    p_id, _ = np.histogram(rr, edges)
    p_id = p_id / p_id.sum()
    chi2_id = ((counts[keep] - len(r) * p_id[keep]) ** 2 / (len(r) * p_id[keep])).sum()
    assert chi2_id > 100 * keep.sum()


def test_two_seeds_agree_ka():
    """Interacting KA system: two seeds agree within standard errors (block averages)."""
    pos, t, box = lattice_config(400, 1.2, 0.2, seed=5)
    pot = PairPotential.kob_andersen()
    T = 2.0
    pos = cage_state(pos, t, box, pot, T, 200, 1, seed=11, cage="sphere", cage_radius=1.0)["final"]
    runs = [cage_state(pos, t, box, pot, T, 100, 500, seed=s, cage="sphere", cage_radius=0.2,
                       record_every=4) for s in (1, 2)]
    for r in runs:
        assert np.allclose(r["samples"].mean(0), r["positions"])
        assert r["n_rebuilds"] == 0  # Verlet list (skin 2R + 0.05) built once
    # global averages: energy per particle and mean cage displacement
    E = [np.array([total_energy(c, t, box, pot) for c in r["samples"]]) / 400 for r in runs]
    se = np.hypot(_block_se(E[0]), _block_se(E[1]))
    assert abs(E[0].mean() - E[1].mean()) < 4 * se
    se_i = [_block_se(r["samples"]) for r in runs]
    dr = [r["displacement"].mean() for r in runs]
    se_dr = np.sqrt(sum((s ** 2).sum() for s in se_i)) / 400  # |dr| error <= position error
    assert abs(dr[0] - dr[1]) < 4 * se_dr
    # per-particle cage positions (slow cage modes inflate <z^2> slightly above ~1.3)
    z = (runs[0]["positions"] - runs[1]["positions"]) / np.sqrt(se_i[0] ** 2 + se_i[1] ** 2)
    assert np.mean(z ** 2) < 3.0 and np.abs(z).max() < 9
    assert dr[0] > 0.03


def test_deterministic_seed(ka400):
    pos, t, box = ka400
    pot = PairPotential.kob_andersen()
    a = cage_state(pos, t, box, pot, 0.44, 5, 5, seed=9)
    b = cage_state(pos, t, box, pot, 0.44, 5, 5, seed=9)
    c = cage_state(pos, t, box, pot, 0.44, 5, 5, seed=10)
    assert np.array_equal(a["positions"], b["positions"]) and a["step"] == b["step"]
    assert not np.array_equal(a["positions"], c["positions"])


def test_far_periodic_images_give_the_same_cage_state(ka400):
    """Unwrapped input hundreds of boxes away (beyond the kernel's int8 list images): r^CS is
    returned in each particle's input image and equals the wrapped run's."""
    pos, t, box = ka400
    pot = PairPotential.kob_andersen(shift=True)
    far = np.random.default_rng(3).integers(-300, 300, pos.shape) * box
    a = cage_state(pos, t, box, pot, 0.5, 5, 5, seed=4, record_every=4)
    b = cage_state(pos + far, t, box, pot, 0.5, 5, 5, seed=4, record_every=4)
    np.testing.assert_allclose(b["positions"] - far, a["positions"], atol=1e-9)
    np.testing.assert_allclose(b["samples"][0] - far, a["samples"][0], atol=1e-9)
    np.testing.assert_allclose(b["displacement"], a["displacement"], atol=1e-9)
    assert b["energy"] == pytest.approx(a["energy"], rel=1e-9)


# ---------------------------------------------------------------------------- energies

@pytest.mark.parametrize("shift", [False, True])
def test_ka_energy_matches_brute_force(ka400, shift):
    pos, t, box = ka400
    pot = PairPotential.kob_andersen(shift=shift)
    e = brute_energy(pos, t, box, pot)
    assert total_energy(pos, t, box, pot) == pytest.approx(e, rel=1e-12)
    # the MC's running energy (E0 + sum of accepted dE) equals the brute-force energy of the
    # final configuration -> the per-move energy differences and the Verlet list are exact (to
    # RUN_REL: the list stores single-precision relative coordinates, errors ~1e-8 relative)
    for skin in (0.25, 0.8):  # 0.25 forces re-centring of the list
        r = cage_state(pos, t, box, pot, 0.44, 10, 10, seed=4, skin=skin)
        assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)
        if skin == 0.25:
            assert r["n_recentred"] > 0
    # spherical cage with the default skin 2R + 0.05: the list built once is exact, no rebuild
    r = cage_state(pos, t, box, pot, 0.6, 10, 20, seed=4, cage="sphere", cage_radius=0.35)
    assert r["n_rebuilds"] == 0
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)


def test_energy_all_pairs_fallback_and_truncation():
    # N=300 at rho=1.2: L/2 = 3.15 < 2.5 + skin -> all-pairs minimum-image path
    pos, t, box = lattice_config(300, 1.2, 0.2, seed=2)
    pot = PairPotential.kob_andersen()
    r = cage_state(pos, t, box, pot, 0.6, 10, 10, seed=1, cage="sphere", cage_radius=0.6)
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)
    # truncated, not shifted: a single pair just inside / outside 2.5 sigma
    two = np.array([[1.0, 1.0, 1.0], [1.0 + 2.5 - 1e-9, 1.0, 1.0]])
    bx = np.full(3, 20.0)
    e_in = total_energy(two, [0, 0], bx, pot)
    assert e_in == pytest.approx(4 * (2.5 ** -12 - 2.5 ** -6), rel=1e-6)
    assert total_energy(two + [[0, 0, 0], [2e-9, 0, 0]], [0, 0], bx, pot) == 0.0
    assert total_energy(two, [0, 0], bx, PairPotential.kob_andersen(shift=True)) == \
        pytest.approx(0.0, abs=1e-8)


def test_harmonic_and_hard_spheres():
    pos, t, box = lattice_config(400, 0.8, 0.5, seed=3)
    hp = PairPotential.harmonic_spheres()
    r = cage_state(pos, t, box, hp, 0.0045, 10, 10, seed=2, debug=True)
    assert r["violations"] == 0
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, hp), rel=RUN_REL)
    # hard spheres: dilute enough lattice, no overlaps ever accepted
    pos, t, box = lattice_config(400, 0.6, 0.7, seed=4)
    hs = PairPotential.hard_spheres()
    assert np.isfinite(total_energy(pos, t, box, hs))
    # skin 0.8: the step cap skin/(2 sqrt 3) must not bind in this dilute test system
    r = cage_state(pos, t, box, hs, 1.0, 10, 20, seed=2, record_every=4, debug=True, skin=0.8)
    assert r["violations"] == 0 and 0.1 < r["acceptance"] < 0.6
    for conf in list(r["samples"]) + [r["final"]]:
        assert brute_energy(conf, t, box, hs) == 0.0
    bad = pos.copy()
    bad[1] = bad[0] + [0.5, 0, 0]
    with pytest.raises(ValueError, match="overlap"):
        cage_state(bad, t, box, hs, 1.0, 1, 1, seed=0)


@pytest.mark.parametrize("cage", ["voronoi", "sphere"])
def test_recentred_list_stays_exact(ka400, cage):
    """Per-particle re-centring of the Verlet list (small skin): a brute-force audit after
    every sweep finds the list equal to all pairs within rc + skin of the reference positions,
    with consistent reverse entries and current coordinates; global rebuilds stay rare."""
    pos, t, box = ka400
    pot = PairPotential.kob_andersen(shift=True)
    r = cage_state(pos, t, box, pot, 0.6, 30, 30, seed=5, cage=cage, cage_radius=0.4,
                   skin=0.2, debug=True)
    assert r["n_recentred"] > 500
    assert r["n_rebuilds"] <= 2
    assert r["violations"] == 0
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)


def test_running_energy_equals_scratch_energy_long_run(ka400):
    """E0 + sum of accepted dE over a long run (list rebuilds, cache refreshes every 1000
    sweeps) equals the from-scratch energy of the final configuration to 1e-9."""
    pos, t, box = ka400
    pot = PairPotential.kob_andersen(shift=True)
    r = cage_state(pos, t, box, pot, 0.5, 200, 1000, seed=21, skin=0.3)
    assert r["n_recentred"] > 100
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)
    r = cage_state(pos, t, box, pot, 0.5, 100, 1100, seed=22, cage="sphere", cage_radius=0.3)
    assert r["n_rebuilds"] == 0
    assert r["energy"] == pytest.approx(brute_energy(r["final"], t, box, pot), rel=RUN_REL)


# ---------------------------------------------------------------------------- reference MC

@njit
def _reference_mc(pos, init, t, box, eps, sig, rc, T, rad, step, n_sweeps, seed,
                  coff, cnb, sigc, voronoi):
    """Textbook constrained Metropolis MC, written independently of the kernel: numpy's RNG,
    energy of the moved particle over *all* other particles with the minimum image (old and new
    energies recomputed every move), cage by the slow Eq. 10 test.  Fixed step.
    Returns acceptance, per-sweep total energy, per-sweep mean |r - r^init|^2, and r^CS."""
    np.random.seed(seed)
    n = pos.shape[0]
    e_sw = np.empty(n_sweeps)
    d2_sw = np.empty(n_sweeps)
    acc = 0
    mean = np.zeros((n, 3))

    def e_of(i, x):
        e = 0.0
        for j in range(n):
            if j == i:
                continue
            r2 = 0.0
            for d in range(3):
                u = pos[j, d] - x[d]
                u -= box[d] * np.rint(u / box[d])
                r2 += u * u
            a, b = t[i], t[j]
            if r2 < rc[a, b] ** 2:
                s6 = (sig[a, b] ** 2 / r2) ** 3
                e += 4 * eps[a, b] * (s6 * s6 - s6)
        return e

    for sw in range(n_sweeps):
        for _ in range(n):
            i = np.random.randint(n)
            new = pos[i] + step * (2 * np.random.random(3) - 1)
            if voronoi:
                inside = _in_cage_full(new, i, init, box, coff, cnb, sigc)
            else:
                inside = np.sum((new - init[i]) ** 2) < rad ** 2
            if not inside:
                continue
            de = e_of(i, new) - e_of(i, pos[i])
            if de <= 0 or np.random.random() < np.exp(-de / T):
                pos[i] = new
                acc += 1
        etot = 0.0
        for i in range(n):
            etot += 0.5 * e_of(i, pos[i])
        e_sw[sw] = etot
        d2_sw[sw] = np.mean(np.sum((pos - init) ** 2, axis=1))
        mean += pos
    return acc / (n * n_sweeps), e_sw, d2_sw, mean / n_sweeps


@njit
def _energies_all_pairs(confs, t, box, eps, sig, rc):
    out = np.zeros(confs.shape[0])
    for c in range(confs.shape[0]):
        for i in range(confs.shape[1]):
            for j in range(i):
                r2 = 0.0
                for d in range(3):
                    u = confs[c, j, d] - confs[c, i, d]
                    u -= box[d] * np.rint(u / box[d])
                    r2 += u * u
                a, b = t[i], t[j]
                if r2 < rc[a, b] ** 2:
                    s6 = (sig[a, b] ** 2 / r2) ** 3
                    out[c] += 4 * eps[a, b] * (s6 * s6 - s6)
    return out


@pytest.mark.parametrize("cage", ["sphere", "voronoi"])
def test_kernel_matches_reference_mc(cage):
    """Acceptance, <E>, <|r - r^init|^2> and the mean cage-state displacement of the fast
    kernel agree with the brute-force reference MC within statistical errors (KA, N = 200,
    unshifted LJ, fixed step), with one trial move per particle visit and with the default
    four (the reference picks a random particle per move)."""
    pos, t, box = lattice_config(200, 1.2, 0.2, seed=8)
    pot = PairPotential.kob_andersen()
    T, step, n_sw = 1.0, 0.12, 1500
    pos = cage_state(pos, t, box, pot, T, 100, 1, seed=1, cage="sphere", cage_radius=0.6)["final"]
    sigc = np.array([1.0, 0.88])[t]
    off, nb, _ = cage_neighbors(pos, box)
    ref = _reference_mc(pos.copy(), pos, t, box, pot.epsilon, pot.sigma, pot.cutoff, T, 0.3,
                        step, n_sw, 5, off, nb, sigc, cage == "voronoi")
    burn = 100  # sweeps; both chains start from the same configuration: drop the transient
    for k in (1, 4):
        r = cage_state(pos, t, box, pot, T, 0, n_sw, seed=6, cage=cage, cage_radius=0.3,
                       cage_sigma=np.array([1.0, 0.88]), step=step, skin=0.5, record_every=k,
                       moves_per_visit=k)
        assert r["step"] == step and r["sweeps"] == (0, n_sw)
        e_k = _energies_all_pairs(r["samples"], t, box, pot.epsilon, pot.sigma, pot.cutoff)
        assert e_k[-1] == pytest.approx(brute_energy(r["samples"][-1], t, box, pot), rel=1e-12)
        d2_k = np.mean(np.sum((r["samples"] - pos) ** 2, axis=2), axis=1)
        for name, a, b in (("energy", e_k[burn // k:], ref[1][burn:]),
                           ("msd", d2_k[burn // k:], ref[2][burn:])):
            se = np.hypot(_block_se(a, 20), _block_se(b, 20))
            assert abs(a.mean() - b.mean()) < 4 * se, (k, name, a.mean(), b.mean(), se)
        # acceptance: binomial-like error inflated by correlations; 1 % absolute is ~ 5 sigma
        assert abs(r["acceptance"] - ref[0]) < 0.01, (k, r["acceptance"], ref[0])
        dr_k = np.linalg.norm(r["positions"] - pos, axis=1).mean()
        dr_ref = np.linalg.norm(ref[3] - pos, axis=1).mean()
        assert abs(dr_k - dr_ref) < 0.1 * dr_ref, (k, dr_k, dr_ref)


def test_chain_releases_the_gil_for_the_progress_thread(ka400):
    """A cage chain is one numba call (minutes on a cluster): it runs without the GIL, so rank 0's
    progress thread keeps ticking meanwhile (glasshpc.parallel.TaskQueue)."""
    import threading
    import time

    pos, t, box = ka400
    pot = PairPotential.kob_andersen()
    cage_state(pos, t, box, pot, 0.6, 1, 1, seed=1)            # compiled / loaded before timing
    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    t0 = time.perf_counter()
    th = threading.Thread(target=tick)
    th.start()
    cage_state(pos, t, box, pot, 0.6, 1500, 1500, seed=2)
    t1 = time.perf_counter()
    stop.set()
    th.join()
    inside = [x for x in ticks if t0 + 0.1 * (t1 - t0) < x < t0 + 0.9 * (t1 - t0)]
    assert t1 - t0 > 0.1 and len(inside) >= 10, (t1 - t0, len(inside))


# ---------------------------------------------------------------------------- vs the old kernel

REFERENCE_DATA = os.path.join(os.path.dirname(__file__), "data", "cage_reference_ka400.npz")


def test_rewritten_kernel_samples_what_the_old_kernel_sampled():
    """Issue 15: the faster kernel (neighbour offsets + gathered displacements, fixed-point row
    sums, inscribed-ball cage shortcut, one-draw trial moves, 4 trial moves per particle visit)
    samples the same constrained ensemble as the kernel it replaced (one move per visit).  The old kernel's output is stored (two chains of the
    frozen copy bench/cage_reference.py, regenerated by running that file: compiling it here
    cost ~50 s of a cold CI cache).  At equal chain length (KA N = 400, Voronoi cage, T = 0.6,
    100 + 600 sweeps, from the stored configuration): per-particle r^CS of old vs new differ by
    no more than chains of one kernel differ among themselves (the chain-to-chain noise, here
    large: short chains from a lattice), and <Delta r^CS> and <E> agree within that noise."""
    ref = np.load(REFERENCE_DATA)
    pos, t, box = ref["positions"], ref["types"], ref["box"]
    T, n_eq, n_me = float(ref["T"]), int(ref["n_equil"]), int(ref["n_measure"])
    pot = PairPotential.kob_andersen()
    cs = {"old": ref["old_cs"], "old2": ref["old2_cs"]}
    E = {"old": ref["old_energy"], "old2": ref["old2_energy"]}
    for lab, seed in (("new", 2), ("new2", 3), ("hot", 5)):
        r = cage_state(pos, t, box, pot, T * (1.3 if lab == "hot" else 1.0), n_eq, n_me,
                       seed=seed, record_every=4)
        cs[lab] = r["positions"]
        E[lab] = np.array([total_energy(c, t, box, pot) for c in r["samples"][::2]]) / len(pos)

    def rms(a, b):
        return np.sqrt(np.mean((cs[a] - cs[b]) ** 2))

    noise = 0.5 * (rms("old", "old2") + rms("new", "new2"))
    assert max(rms("old", "new"), rms("old2", "new2"), rms("old", "new2")) < 1.2 * noise
    dr = {k: np.linalg.norm(c - pos, axis=1).mean() for k, c in cs.items()}
    noise_dr = 0.5 * (abs(dr["old"] - dr["old2"]) + abs(dr["new"] - dr["new2"]))
    assert abs(dr["old"] + dr["old2"] - dr["new"] - dr["new2"]) / 2 < 3 * noise_dr + 5e-3
    m_old = 0.5 * (E["old"].mean() + E["old2"].mean())
    m_new = 0.5 * (E["new"].mean() + E["new2"].mean())
    se = 0.5 * np.sqrt(sum(_block_se(E[k]) ** 2 for k in ("old", "old2", "new", "new2")))
    assert abs(m_old - m_new) < 4 * se, (m_old, m_new, se)
    # the energy check discriminates: 30 % hotter lies far outside the bound
    assert E["hot"].mean() - m_new > 4 * se, (E["hot"].mean(), m_new, se)
