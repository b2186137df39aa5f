"""Tests of glasshpc.structure.descriptors against brute-force O(N²) numpy definitions (SCIENCE.md §4)."""
import dataclasses
import numpy as np
import pytest
from scipy.special import sph_harm_y  # scipy >= 1.15: sph_harm_y(l, m, theta_polar, phi_azimuth)

from glasshpc.structure.descriptors import (
    DescriptorSpec, angular_descriptors, compute_descriptors, feature_names, generation_average, preset,
    radial_descriptors, spec_from_config,
    radial_distribution, second_minimum_gAA)
from glasshpc.structure.neighbors import NeighborList

BOX = np.array([7.3, 8.1, 9.4])
LS = (1, 2, 3, 4, 6, 7, 12)


def _random_config(n=260, box=BOX, dmin=0.75, seed=1):
    """Random periodic configuration with no pair closer than dmin, unwrapped by random box multiples."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.random(3) * box
        if pos:
            d = np.asarray(pos) - p
            d -= box * np.rint(d / box)
            if np.min(np.sum(d * d, axis=1)) < dmin * dmin:
                continue
        pos.append(p)
    pos = np.asarray(pos)
    types = (rng.random(n) < 0.3).astype(np.int64)
    unwrapped = pos + box * rng.integers(-3, 4, size=(n, 3))
    return pos, unwrapped, types


def _spec(generations=2):
    return DescriptorSpec(
        radial_r=np.array([0.0, 0.9, 1.1, 1.35, 2.0, 2.6]),
        radial_delta=np.array([0.2, 0.05, 0.1, 0.07, 0.15, 0.08]),
        angular_r=np.array([1.0, 1.2, 1.5, 2.2]),
        angular_delta=np.array([0.05, 0.1, 0.2, 0.1]),
        angular_l=LS, n_species=2, generations=generations, r_generation=1.9)


def _pair_vectors(pos, box):
    d = pos[None, :, :] - pos[:, None, :]  # r_j - r_i
    d -= box * np.rint(d / box)
    r = np.sqrt(np.sum(d * d, axis=-1))
    np.fill_diagonal(r, np.inf)
    return d, r


def _brute_radial(pos, types, box, spec):
    _, r = _pair_vectors(pos, box)
    out = []
    for s in range(spec.n_species):
        for rk, dk in zip(spec.radial_r, spec.radial_delta):
            w = np.exp(-(r - rk) ** 2 / (2 * dk * dk))
            w[np.abs(r - rk) > spec.truncation * dk] = 0.0
            out.append(np.sum(w[:, types == s], axis=1))
    return np.stack(out, axis=1)


def _brute_angular(pos, box, spec):
    d, r = _pair_vectors(pos, box)
    near = np.isfinite(r) & (r < spec.cutoff())  # every other pair has w = 0 on every shell
    ii, jj = np.nonzero(near)
    rr, dd = r[ii, jj], d[ii, jj]
    theta = np.arccos(np.clip(dd[:, 2] / rr, -1, 1))
    phi = np.arctan2(dd[:, 1], dd[:, 0])
    ylm = {(l, m): sph_harm_y(l, m, theta, phi) for l in spec.angular_l for m in range(-l, l + 1)}
    n = len(pos)
    out = []
    for rk, dk in zip(spec.angular_r, spec.angular_delta):
        w = np.exp(-(rr - rk) ** 2 / (2 * dk * dk))
        w[np.abs(rr - rk) > spec.truncation * dk] = 0.0
        z = np.bincount(ii, w, minlength=n)
        for l in spec.angular_l:
            acc = np.zeros(n)
            for m in range(-l, l + 1):
                y = ylm[(l, m)] * w
                qlm = (np.bincount(ii, y.real, minlength=n) + 1j * np.bincount(ii, y.imag, minlength=n)) \
                    / np.where(z > 0, z, 1)
                acc += np.abs(qlm) ** 2
            out.append(np.where(z > 0, np.sqrt(4 * np.pi / (2 * l + 1) * acc), 0.0))
    return np.stack(out, axis=1)


def _brute_generations(x, pos, box, r_c, n_max):
    _, r = _pair_vectors(pos, box)
    np.fill_diagonal(r, 0.0)  # j = i included with weight e^0 = 1
    w = np.where(r < r_c, np.exp(-r / r_c), 0.0)
    out = [x]
    for _ in range(n_max):
        out.append(w @ out[-1] / w.sum(axis=1)[:, None])
    return np.hstack(out)


@pytest.fixture(scope="module")
def config():
    return _random_config()


def test_radial_matches_brute_force(config):
    pos, unwrapped, types = config
    spec = _spec()
    nl = NeighborList(unwrapped, BOX, spec.cutoff())
    got = radial_descriptors(nl, types, spec)
    ref = _brute_radial(pos, types, BOX, spec)
    assert got.shape == (len(pos), 2 * 6) and got.dtype == np.float64
    assert np.max(ref) > 1.0  # the test sees real neighbours of both species
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_truncation_error_is_negligible(config):
    pos, _, types = config
    spec = _spec()
    nl = NeighborList(pos, BOX, spec.cutoff())
    got = radial_descriptors(nl, types, spec)
    _, r = _pair_vectors(pos, BOX)
    full = np.stack([np.sum(np.exp(-(r[:, types == s] - rk) ** 2 / (2 * dk * dk)), axis=1)
                     for s in range(2) for rk, dk in zip(spec.radial_r, spec.radial_delta)], axis=1)
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-8)


def test_angular_matches_brute_force(config):
    pos, unwrapped, types = config
    spec = _spec()
    nl = NeighborList(unwrapped, BOX, spec.cutoff())
    got = angular_descriptors(nl, spec)
    ref = _brute_angular(pos, BOX, spec)
    assert got.shape == (len(pos), 4 * len(LS))
    assert np.count_nonzero(ref == 0.0) < ref.size // 4  # mostly populated shells
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_angular_empty_shell_gives_zero():
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    spec = DescriptorSpec(np.array([1.0]), np.array([0.1]), np.array([1.0]), np.array([0.05]), (2, 6), 1, 0)
    nl = NeighborList(pos, np.full(3, 12.0), spec.cutoff())
    q = angular_descriptors(nl, spec)
    assert np.all(q[2] == 0.0)
    np.testing.assert_allclose(q[0], [1.0, 1.0], atol=1e-12)  # one bond: q_l = 1 for every l


def test_generation_average_matches_brute_force(config):
    pos, unwrapped, _ = config
    x = np.random.default_rng(5).normal(size=(len(pos), 7))
    got = generation_average(x, unwrapped, BOX, 1.9, 3)
    ref = _brute_generations(x, pos, BOX, 1.9, 3)
    assert got.shape == (len(pos), 7 * 4)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(generation_average(x, pos, BOX, 1.9, 0), x)


def test_compute_descriptors_layout(config):
    pos, unwrapped, types = config
    spec = _spec()
    got = compute_descriptors(unwrapped, types, BOX, spec)
    base = np.hstack([_brute_radial(pos, types, BOX, spec), _brute_angular(pos, BOX, spec)])
    ref = _brute_generations(base, pos, BOX, spec.r_generation, spec.generations)
    assert got.shape == (len(pos), spec.n_features)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_translation_and_permutation(config):
    pos, _, types = config
    spec = _spec()
    ref = compute_descriptors(pos, types, BOX, spec)
    shifted = compute_descriptors(pos + np.array([3.3, -11.2, 0.7]), types, BOX, spec)
    np.testing.assert_allclose(shifted, ref, rtol=0, atol=1e-10)
    perm = np.random.default_rng(2).permutation(len(pos))
    permuted = compute_descriptors(pos[perm], types[perm], BOX, spec)
    np.testing.assert_allclose(permuted, ref[perm], rtol=0, atol=1e-10)


def test_rotation_by_90_degrees(config):
    """(x, y, z) -> (−y, x, z) with box (Ly, Lx, Lz) is an exact symmetry of the periodic system."""
    pos, _, types = config
    spec = _spec()
    ref = compute_descriptors(pos, types, BOX, spec)
    rot = np.stack([-pos[:, 1], pos[:, 0], pos[:, 2]], axis=1)
    got = compute_descriptors(rot, types, BOX[[1, 0, 2]], spec)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def _fcc(cells, a=2 ** (2 / 3)):
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(cells) for j in range(cells) for k in range(cells)])
    pos = (grid[:, None, :] + base[None]).reshape(-1, 3) * a
    return pos, np.full(3, cells * a)


def test_fcc_bond_order():
    pos, box = _fcc(4)
    r1 = 2 ** (2 / 3) / np.sqrt(2)  # nearest-neighbour distance
    spec = DescriptorSpec(np.array([r1]), np.array([0.02]), np.array([r1]), np.array([0.02]), (4, 6), 1, 0)
    x = compute_descriptors(pos, np.zeros(len(pos), int), box, spec)
    np.testing.assert_allclose(x[:, 0], 12.0, atol=1e-12)
    np.testing.assert_allclose(x[:, 1], 0.19094, atol=1e-5)
    np.testing.assert_allclose(x[:, 2], 0.57452, atol=1e-5)


def test_feature_names_unique_and_complete():
    for spec in (_spec(), preset("hs_cmp"), preset("ka_avg", generations=2)):
        names = spec.feature_names()
        assert len(names) == spec.n_features == len(set(names))
    names = _spec().feature_names()
    assert names[0] == "G_A(r=0.00,δ=0.20)"
    assert names[12] == "q_1(r=1.00,δ=0.05)"
    assert names[12 + 4 * len(LS)] == "gen1:G_A(r=0.00,δ=0.20)"
    ka = preset("ka_avg")
    assert (ka.n_radial, ka.n_angular, ka.n_features) == (200, 192, 1176)


def test_errors(config):
    pos, _, types = config
    spec = _spec()
    with pytest.raises(ValueError, match="half"):
        compute_descriptors(pos, types, np.full(3, 5.0), spec, replicate=False)
    with pytest.raises(ValueError, match="types"):
        compute_descriptors(pos, types + 1, BOX, spec)
    with pytest.raises(ValueError, match="types"):
        compute_descriptors(pos, types[:-1], BOX, spec)
    with pytest.raises(ValueError, match="positions"):
        compute_descriptors(pos[:, :2], types, BOX, spec)
    with pytest.raises(ValueError, match="box"):
        compute_descriptors(pos, types, BOX[:2], spec)
    with pytest.raises(ValueError, match="cutoff"):
        radial_descriptors(NeighborList(pos, BOX, 1.0), types, spec)
    with pytest.raises(ValueError, match="coincide"):
        compute_descriptors(np.vstack([pos, pos[:1]]), np.append(types, 0), BOX, spec)
    with pytest.raises(ValueError):
        DescriptorSpec(np.array([1.0, 2.0]), np.array([0.1]), np.array([]), np.array([]), (), 2)
    with pytest.raises(ValueError):
        DescriptorSpec(np.array([1.0]), np.array([0.0]), np.array([]), np.array([]), (), 2)
    with pytest.raises(ValueError):
        generation_average(np.zeros((3, 2)), pos, BOX, 1.9, 1)
    assert _spec() == _spec() and hash(_spec()) == hash(_spec())


def test_second_minimum_on_thermal_fcc():
    """Shells of FCC at a·{1, √2, √3, 2}/√2 (multiplicities 12, 6, 24, 12): the second minimum lies between
    the √2 and √3 shells."""
    rng = np.random.default_rng(3)
    pos, box = _fcc(5)
    d1 = 2 ** (2 / 3) / np.sqrt(2)
    snaps = [pos + rng.normal(scale=0.04, size=pos.shape) for _ in range(3)]
    types = [np.zeros(len(pos), int)] * 3
    r, g = radial_distribution(snaps, types, box, r_max=3.0)
    assert abs(r[np.argmax(g[(0, 0)])] - d1) < 0.05
    rmin = second_minimum_gAA(snaps, types, [box] * 3)
    assert np.sqrt(2) * d1 + 0.05 < rmin < np.sqrt(3) * d1 - 0.05


def test_second_minimum_steps_match_scipy():
    """The numpy smoothing and peak finding of second_minimum equal scipy's gaussian_filter1d
    (mode 'nearest') and find_peaks(prominence=…) on noisy g(r)-like curves with plateaus."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    from glasshpc.structure.descriptors import _gaussian_smooth, _prominent_peaks
    rng = np.random.default_rng(11)
    r = np.arange(300) * 0.01 + 0.005
    for trial in range(20):
        g = 1 + np.exp(-((r - 1.0) / 0.1) ** 2) * 2 - 0.3 * np.exp(-((r - 1.5) / 0.2) ** 2) \
            + rng.normal(scale=0.05 * (trial % 4), size=r.size)
        g[100:105] = g[100]                                         # a flat top or bottom
        for sigma in (0.5, 3.0, 7.3):
            np.testing.assert_allclose(_gaussian_smooth(g, sigma),
                                       gaussian_filter1d(g, sigma, mode="nearest"), rtol=1e-13,
                                       atol=1e-13)
        for prom in (0.0, 0.05, 0.3):
            assert np.array_equal(_prominent_peaks(-g, prom), find_peaks(-g, prominence=prom)[0])
            q = np.round(g, 1)                                      # many plateaus
            assert np.array_equal(_prominent_peaks(q, prom), find_peaks(q, prominence=prom)[0])


def test_pair_histograms_add_up_to_radial_distribution():
    """Per-snapshot pair_histogram summands (the static stage's tasks) give radial_distribution."""
    from glasshpc.structure.descriptors import gr_range, pair_histogram
    rng = np.random.default_rng(5)
    snaps = [rng.uniform(0, BOX, size=(200, 3)) for _ in range(3)]
    types = [rng.integers(0, 2, 200) for _ in range(3)]
    r, g = radial_distribution(snaps, types, BOX, pairs=((0, 0), (0, 1)))
    r_max, n_bins = gr_range([BOX] * 3)
    for p in ((0, 0), (0, 1)):
        parts = [pair_histogram(x, t, BOX, (p,), n_bins, 0.01) for x, t in zip(snaps, types)]
        counts = sum(c[p] for c, _ in parts)
        norm = sum(nm[p] for _, nm in parts)
        edges = np.arange(n_bins + 1) * 0.01
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        assert np.array_equal(counts / (norm * shell), g[p])
        assert counts.sum() > 0


@pytest.mark.parametrize("n, box, cutoff", [
    (260, BOX, 3.6),                        # nc = 1..4 per axis, every cell aliased
    (400, np.array([6.0, 14.0, 9.0]), 2.9),  # mixed: aliased along x, pruned stencil along y
    (900, np.array([9.0, 9.0, 9.0]), 1.3),   # many small cells
    (3, np.array([4.0, 4.0, 4.0]), 1.5),     # almost empty
])
def test_neighbor_list_matches_brute_force(n, box, cutoff):
    rng = np.random.default_rng(n)
    pos = rng.random((n, 3)) * box + box * rng.integers(-2, 3, size=(n, 3))
    nl = NeighborList(pos, box, cutoff)
    d, r = _pair_vectors(pos, box)
    for i in range(n):
        row = slice(nl.offsets[i], nl.offsets[i + 1])
        js = nl.neighbors[row]
        assert sorted(js.tolist()) == np.flatnonzero(r[i] < cutoff).tolist()
        np.testing.assert_allclose(nl.vectors[row], d[i, js], rtol=0, atol=1e-12)
        np.testing.assert_allclose(nl.distances[row], r[i, js], rtol=0, atol=1e-12)


def test_radial_uniform_runs_match_brute_force(config):
    """Equal-δ, equally spaced shells go through the exp recurrence; check it (and run edges) against brute force."""
    pos, unwrapped, types = config
    rr = np.concatenate([np.linspace(0.0, 2.0, 41), np.linspace(2.1, 2.7, 4), [1.0, 1.3]])
    dd = np.concatenate([np.full(41, 0.05), np.full(4, 0.1), [0.02, 0.3]])
    spec = DescriptorSpec(rr, dd, np.array([]), np.array([]), (), 2, 0)
    nl = NeighborList(unwrapped, BOX, spec.cutoff())
    np.testing.assert_allclose(radial_descriptors(nl, types, spec), _brute_radial(pos, types, BOX, spec),
                               rtol=0, atol=1e-10)


def test_radial_only_spec_through_compute_descriptors(config):
    pos, unwrapped, types = config
    spec = DescriptorSpec(np.array([1.0, 1.5]), np.array([0.1, 0.2]), np.array([]), np.array([]), (), 2, 0)
    np.testing.assert_allclose(compute_descriptors(unwrapped, types, BOX, spec), _brute_radial(pos, types, BOX, spec),
                               rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="finite"):
        compute_descriptors(np.full_like(pos, np.nan), types, BOX, spec)


# ------------------------------------------------------------------------------------------------ presets, sharp Q_l

def _brute_sharp_angular(pos, box, r_min, width, ls):
    """[SOFT] Eq. 3.2–3.3 by brute force: unweighted mean of Y_lm over r_min < r_ij < r_min + width (scipy)."""
    d, r = _pair_vectors(pos, box)
    n = len(pos)
    out = []
    for lo in r_min:
        inside = np.isfinite(r) & (r > lo) & (r < lo + width)
        ii, jj = np.nonzero(inside)
        dd, rr = d[ii, jj], r[ii, jj]
        theta = np.arccos(np.clip(dd[:, 2] / rr, -1, 1))
        phi = np.arctan2(dd[:, 1], dd[:, 0])
        nj = np.bincount(ii, minlength=n)
        for l in ls:
            acc = np.zeros(n)
            for m in range(-l, l + 1):
                y = sph_harm_y(l, m, theta, phi)
                qlm = (np.bincount(ii, y.real, minlength=n) + 1j * np.bincount(ii, y.imag, minlength=n)) \
                    / np.where(nj > 0, nj, 1)
                acc += np.abs(qlm) ** 2
            out.append(np.where(nj > 0, np.sqrt(4 * np.pi / (2 * l + 1) * acc), 0.0))
    return np.stack(out, axis=1)


def test_sharp_shell_Ql_matches_brute_force(config):
    pos, unwrapped, types = config
    r_min, width, ls = np.array([1.0, 1.5, 2.0, 2.5, 3.0]), 0.5, (2, 4, 6, 8, 10, 12, 14)
    spec = DescriptorSpec(np.array([0.0, 0.1]), np.array([0.2, 0.2]), r_min, np.full(5, width), ls, 2, 0,
                          angular_kind="sharp")
    assert spec.angular_cutoff() == pytest.approx(3.5)
    x = compute_descriptors(unwrapped, types, BOX, spec)
    ref = _brute_sharp_angular(pos, BOX, r_min, width, ls)
    assert np.count_nonzero(ref) > 0.9 * ref.size
    np.testing.assert_allclose(x[:, spec.n_radial:], ref, rtol=0, atol=1e-10)
    names = feature_names(spec)
    assert names[spec.n_radial] == "Q_2(1.00<r<1.50)" and names[-1] == "Q_14(3.00<r<3.50)"


def test_angular_equals_freud_weighted_steinhardt(config):
    """q_l(r, δ) = freud Steinhardt(weighted=True) fed our Gaussian shell weights (freud is single precision)."""
    from glasshpc.structure import voronoi
    if not voronoi.have_freud():
        pytest.skip("optional extra 'voronoi' (freud-analysis) not installed")
    # through glasshpc, never `import freud`: loaded with its own voro++ bound first, else it calls
    # the copy in liblammps once an earlier test has loaded LAMMPS, and segfaults (structure/voronoi.py)
    freud = voronoi._freud()
    pos, _, _ = config
    spec = _spec(generations=0)
    nl = NeighborList(pos, BOX, spec.cutoff())
    ours = angular_descriptors(nl, spec)
    n = len(pos)
    qi = np.repeat(np.arange(n), np.diff(nl.offsets))
    for a, (rk, dk) in enumerate(zip(spec.angular_r, spec.angular_delta)):
        w = np.exp(-(nl.distances - rk) ** 2 / (2 * dk * dk))
        keep = np.abs(nl.distances - rk) <= spec.truncation * dk
        fnl = freud.locality.NeighborList.from_arrays(n, n, qi[keep], nl.neighbors[keep], nl.vectors[keep], w[keep])
        fbox = freud.box.Box(*BOX)
        st = freud.order.Steinhardt(list(LS), weighted=True)
        st.compute((fbox, pos - BOX * np.floor(pos / BOX) - 0.5 * BOX), neighbors=fnl)
        ref = np.asarray(st.particle_order, dtype=np.float64).reshape(n, len(LS))
        np.testing.assert_allclose(ours[:, a * len(LS):(a + 1) * len(LS)], ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name, counts", [
    ("hs_cmp", (162, 192, 354, 1062)),       # [CMP] Sec. II.B
    ("ka_avg", (200, 192, 392, 1176)),       # [AVG] (200 + 192 per generation)
    ("melt_dw", (100, 192, 292, 876)),       # [DW] §2.2.1: 292 per generation, 876 in total
    ("softness_135", (100, 35, 135, 135)),   # [SOFT] §3.2.3: M = 135
])
def test_preset_feature_counts(name, counts):
    spec = preset(name)
    assert (spec.n_radial, spec.n_angular, spec.n_base_features, spec.n_features) == counts
    names = feature_names(spec)
    assert len(names) == spec.n_features == len(set(names))


def test_preset_shells_follow_the_papers():
    dw = preset("melt_dw")
    r, d = dw.radial_r, dw.radial_delta
    assert np.allclose(r[:60], np.linspace(0.5, 2.0, 60)) and np.all(d[:60] == 0.025)
    assert r[60] > 2.0 and r[79] == pytest.approx(3.0) and np.all(d[60:80] == 0.05)
    assert r[80] > 3.0 and r[-1] == pytest.approx(5.0) and np.all(d[80:] == 0.1)
    assert np.allclose(dw.angular_r, np.linspace(0.5, 2.5, 16)) and dw.angular_l == tuple(range(1, 13))
    assert dw.r_generation == 2.5 and dw.n_species == 1
    hs = preset("hs_cmp")
    rr = hs.radial_r
    assert rr[0] == pytest.approx(0.86) and rr[45] == pytest.approx(2.0)
    assert np.sum((rr > 2.0) & (rr <= 3.0 + 1e-12)) == 20 and np.sum(rr > 3.0 + 1e-12) == 15
    assert rr[-1] == pytest.approx(4.5) and np.allclose(hs.angular_r, np.linspace(1, 2.5, 16))
    soft = preset("softness_135")
    assert np.allclose(soft.radial_r, np.arange(50) * 0.1) and np.all(soft.radial_delta == 0.2)
    assert soft.angular_kind == "sharp" and soft.angular_l == (2, 4, 6, 8, 10, 12, 14)
    assert np.allclose(soft.angular_r, [1.0, 1.5, 2.0, 2.5, 3.0]) and np.all(soft.angular_delta == 0.5)
    assert feature_names(soft)[0] == "G_A(r=0.00,δ=0.20)" and feature_names(preset("ka_avg"))[0] == \
        "G_A(r=0.50,δ=0.025)"
    with pytest.raises(ValueError, match="unknown descriptor preset"):
        preset("nope")
    with pytest.raises(ValueError, match="angular_kind"):
        DescriptorSpec([1.0], [0.1], [1.0], [0.1], (2,), 1, 0, angular_kind="box")


def test_preset_from_yaml():
    from glasshpc import config

    base = """
output: x.h5
model: {name: kob_andersen, n_particles: %d, density: 1.2, temperature: 0.8}
snapshots: {count: 8}
iso: {replicas: 2, times: [0.1, 1.0]}
descriptors: {%s}
"""
    cfg = config.parse(base % (4096, "preset: ka_avg, generations: 2, r_generation: 1.9"))
    spec = spec_from_config(cfg.descriptors, 2, 1.9)
    assert spec == preset("ka_avg", 2, 2, 1.9) and spec.n_features == 1176
    # explicit blocks still work through the same helper
    cfg = config.parse(base % (400, "radial: [{r_min: 0.8, r_max: 2.2, count: 8, delta: 0.12}], l: [2, 4]"))
    spec = spec_from_config(cfg.descriptors, 2, 1.5)
    assert spec.n_radial == 16 and spec.angular_l == (2, 4) and np.allclose(spec.radial_r, np.linspace(0.8, 2.2, 8))
    with pytest.raises(config.ConfigError, match="descriptors.radial"):
        config.parse(base % (4096, "preset: ka_avg, radial: [{r_min: 1, r_max: 2, count: 3, delta: 0.1}]"))
    small = config.parse(base % (1000, "preset: softness_135"))  # box replicated for the long shells
    assert spec_from_config(small.descriptors, 2, 1.9).cutoff() > small.box_length / 2
    with pytest.raises(config.ConfigError, match="descriptors.preset"):
        config.parse(base % (4096, "preset: ka_avg2"))


def test_small_box_sums_over_all_periodic_images():
    """Cutoff beyond half the box: the descriptors are sums over every periodic image (brute force, scipy Y_lm)."""
    box = np.array([4.0, 4.5, 5.0])
    pos, unwrapped, types = _random_config(n=60, box=box, dmin=0.8, seed=5)
    spec = DescriptorSpec(np.array([0.9, 1.3, 2.6]), np.array([0.1, 0.15, 0.15]), np.array([1.1, 2.4]),
                          np.array([0.1, 0.2]), (2, 4, 6), 2, 1, r_generation=1.5)
    assert spec.cutoff() > box.max() / 2
    x = compute_descriptors(unwrapped, types, box, spec)
    img = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T * box
    d = (pos[None, :, None, :] + img[None, None]) - pos[:, None, None, :]       # (i, j, image, 3)
    r = np.linalg.norm(d, axis=-1)
    r[np.arange(60), np.arange(60), len(img) // 2] = np.inf                       # j = i, image 0
    assert r[np.isfinite(r)].max() > spec.cutoff() + 1.0                          # enough images
    G = [np.where((np.abs(r - rk) <= 7 * dk) & (types[None, :, None] == s), np.exp(-(r - rk) ** 2 / (2 * dk * dk)),
                  0).sum((1, 2)) for s in range(2) for rk, dk in zip(spec.radial_r, spec.radial_delta)]
    np.testing.assert_allclose(x[:, :6], np.stack(G, 1), rtol=0, atol=1e-10)
    ii, jj, kk = np.nonzero(r < spec.cutoff())
    rr, dd = r[ii, jj, kk], d[ii, jj, kk]
    theta, phi = np.arccos(np.clip(dd[:, 2] / rr, -1, 1)), np.arctan2(dd[:, 1], dd[:, 0])
    col = 6
    for rk, dk in zip(spec.angular_r, spec.angular_delta):
        w = np.where(np.abs(rr - rk) <= 7 * dk, np.exp(-(rr - rk) ** 2 / (2 * dk * dk)), 0.0)
        z = np.bincount(ii, w, minlength=60)
        for l in spec.angular_l:
            acc = 0.0
            for m in range(-l, l + 1):
                y = w * sph_harm_y(l, m, theta, phi)
                acc = acc + np.abs(np.bincount(ii, y.real, minlength=60) + 1j * np.bincount(ii, y.imag, minlength=60)
                                   ) ** 2 / z ** 2
            np.testing.assert_allclose(x[:, col], np.sqrt(4 * np.pi / (2 * l + 1) * acc), rtol=0, atol=1e-10)
            col += 1
    # without generations only the originals' rows are computed in the replicated box: the same bits
    x0 = compute_descriptors(unwrapped, types, box, dataclasses.replace(spec, generations=0))
    assert np.array_equal(x0, x[:, :x0.shape[1]])
