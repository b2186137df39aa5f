"""Voronoi volume / surface / asphericity ([DW] §2.2.1; glasshpc.structure.voronoi) and the Voronoi feature blocks.

Against lattice geometry (sc cube, bcc truncated octahedron, fcc rhombic dodecahedron), a brute-force
tessellation (scipy's Qhull on the periodically replicated system, double precision) and through the pipeline
(stored blocks, fits, 1 vs 2 ranks). Needs the optional extra 'voronoi' (freud-analysis), except the refusal
test, which hides it.
"""
import itertools
import os
import sys

import h5py
import numpy as np
import pytest
import yaml
from mpi4py import MPI

from glasshpc import config
from glasshpc.structure.voronoi import VORONOI_FEATURE_NAMES, have_freud, voronoi_features

# freud is imported by glasshpc only (structure/voronoi.py _freud: its own voro++ bound first), never here
needs_freud = pytest.mark.skipif(not have_freud(), reason="optional extra 'voronoi' (freud-analysis) not installed")


def _lattice(basis, n, c):
    g = np.arange(n)
    cells = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
    return ((cells[:, None, :] + np.asarray(basis)[None, :, :]) * c).reshape(-1, 3), np.full(3, n * c)


def _brute_force(pos, box):
    """(N, 2) volume and surface of every cell from scipy.spatial.Voronoi (Qhull, float64) on the 27 periodic
    copies: the cells of the central copy are complete when every cell is smaller than a box edge."""
    from scipy.spatial import ConvexHull, Voronoi
    n = len(pos)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * box
    vor = Voronoi((pos[None] + shifts[:, None]).reshape(-1, 3))
    centre = int(np.flatnonzero((shifts == 0).all(axis=1))[0])
    out = np.empty((n, 2))
    for i in range(n):
        region = vor.regions[vor.point_region[centre * n + i]]
        assert -1 not in region
        hull = ConvexHull(vor.vertices[region])
        out[i] = hull.volume, hull.area
    return out


@needs_freud
@pytest.mark.parametrize("noise", [0.0, 1e-6])
def test_simple_cubic_cell_is_a_cube(noise):
    c = 1.3
    pos, box = _lattice([[0, 0, 0]], 5, c)
    pos = pos + noise * c * np.random.default_rng(0).standard_normal(pos.shape)   # exact and broken degeneracy
    f = voronoi_features(pos, box)
    assert f.shape == (125, len(VORONOI_FEATURE_NAMES))
    np.testing.assert_allclose(f[:, 0], c ** 3, rtol=1e-5)
    np.testing.assert_allclose(f[:, 1], 6 * c ** 2, rtol=1e-5)
    np.testing.assert_allclose(f[:, 2], 6 / np.pi, rtol=1e-5)


@needs_freud
def test_bcc_cell_is_a_truncated_octahedron():
    c = 1.4   # cubic lattice constant: edge e = c√2/4, V = 8√2 e³ = c³/2, S = (6 + 12√3) e²
    e = c * np.sqrt(2) / 4
    vol, area = 8 * np.sqrt(2) * e ** 3, (6 + 12 * np.sqrt(3)) * e ** 2
    pos, box = _lattice([[0, 0, 0], [0.5, 0.5, 0.5]], 4, c)
    f = voronoi_features(pos, box)
    np.testing.assert_allclose(f[:, 0], c ** 3 / 2, rtol=1e-6)
    np.testing.assert_allclose(f[:, 0], vol, rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], area, rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], area ** 3 / (36 * np.pi * vol ** 2), rtol=1e-6)
    assert np.isclose(f[0, 2], 1.3274, atol=1e-4)


@needs_freud
def test_fcc_cell_is_a_rhombic_dodecahedron():
    c = 1.6  # cubic lattice constant: V = c³/4, S = (3√2/2) c², asphericity 3√2/π
    pos, box = _lattice([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], 4, c)
    f = voronoi_features(pos + 7 * box, box)  # any periodic image
    np.testing.assert_allclose(f[:, 0], c ** 3 / 4, rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], 1.5 * np.sqrt(2) * c ** 2, rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], 3 * np.sqrt(2) / np.pi, rtol=1e-6)


@needs_freud
@pytest.mark.parametrize("case", ["random", "jittered"])
def test_against_brute_force_tessellation(case):
    """Random points (many tiny faces; the cells reach half the box: face candidates from the replicated box)
    and a jittered sc crystal of 343 (candidates from the neighbour list) against Qhull in double precision."""
    rng = np.random.default_rng(5)
    if case == "random":
        box = np.full(3, 4.3)
        pos = rng.random((80, 3)) * box
    else:
        pos, box = _lattice([[0, 0, 0]], 7, 1.1)
        pos = pos + rng.uniform(-0.25, 0.25, pos.shape)
    f = voronoi_features(pos, box)
    ref = _brute_force(pos, box)
    # freud works on float32 sites (≤ 3e-8 L off): measured ≤ 1.1e-7 relative here
    np.testing.assert_allclose(f[:, 0], ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], ref[:, 1], rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], ref[:, 1] ** 3 / (36 * np.pi * ref[:, 0] ** 2), rtol=3e-6)


@needs_freud
def test_volumes_fill_the_box():
    rng = np.random.default_rng(3)
    cube = np.full(3, (400 / 1.2) ** (1 / 3))
    pos = rng.random((400, 3)) * cube
    f = voronoi_features(pos, cube)
    # cubic box: computed in units of L, exact in float32, so the cells tile it to double precision
    assert abs(f[:, 0].sum() / np.prod(cube) - 1) < 1e-10
    assert np.all(f[:, 2] > 1.0)  # the sphere minimises S³/V² (isoperimetric inequality)
    # any periodic image, any origin: the same cells (to the float32 rounding of the sites)
    np.testing.assert_allclose(voronoi_features(pos + np.array([2.5, -31.0, 0.3]), cube), f, rtol=1e-5)
    # a non-cubic box: its edges L_y/L_x, L_z/L_x are rounded to float32 too
    box = np.array([6.1, 7.3, 5.2])
    g = voronoi_features(rng.random((400, 3)) * box, box)
    assert abs(g[:, 0].sum() / np.prod(box) - 1) < 1e-6


@needs_freud
def test_bad_input():
    with pytest.raises(ValueError, match="coincide"):
        voronoi_features(np.array([[1.0, 1, 1], [1.0, 1, 1], [2, 2, 2]]), np.full(3, 4.0))
    with pytest.raises(ValueError, match="finite"):
        voronoi_features(np.array([[np.nan, 1, 1], [2, 2, 2]]), np.full(3, 4.0))
    with pytest.raises(ValueError, match="box"):
        voronoi_features(np.zeros((3, 3)) + np.arange(3)[:, None], np.array([4.0, 0, 4]))


def _voronoi_yaml(tiny_yaml, output):
    """The tiny config, smaller (4 snapshots × 2 replicas, 4 read-outs), fitting the Voronoi blocks."""
    data = yaml.safe_load(tiny_yaml(output))
    data["snapshots"]["count"] = 4
    data["iso"] = {"replicas": 2, "times": {"start": 0.01, "stop": 1.0, "count": 4}}
    data["fits"]["feature_sets"] = {"vor": {"features": "voronoi+voronoi_is+voronoi_cs", "generations": 0},
                                    "init_vor": {"features": "init+voronoi", "generations": 1}}
    return yaml.safe_dump(data, allow_unicode=True)


def test_refused_without_freud(tiny_yaml, tmp_path, monkeypatch):
    """Without freud (hidden: sys.modules entry None, as Python does for a blocked import) a config naming a
    Voronoi block is refused naming the key and the extra; a config without one is fine."""
    monkeypatch.setitem(sys.modules, "freud", None)
    assert not have_freud()
    text = _voronoi_yaml(tiny_yaml, str(tmp_path / "x.h5"))
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert err.value.key in ("fits.feature_sets.vor.features", "fits.feature_sets.init_vor.features")
    assert "pip install 'glasshpc[voronoi]'" in err.value.message
    config.parse(tiny_yaml(str(tmp_path / "y.h5")))
    with pytest.raises(ImportError, match=r"glasshpc\[voronoi\]"):
        voronoi_features(np.random.default_rng(0).random((10, 3)), np.ones(3))
    assert not os.listdir(tmp_path)


def test_blocks_need_their_states(tiny_yaml, tmp_path):
    data = yaml.safe_load(_voronoi_yaml(tiny_yaml, str(tmp_path / "x.h5")))
    data["cage"]["enabled"] = False
    with pytest.raises(config.ConfigError, match="cage.enabled") as err:
        config.parse(yaml.safe_dump(data, allow_unicode=True))
    assert err.value.key == "fits.feature_sets.vor.features"
    assert "voronoi_cs" in config.describe() and "voronoi_is" in config.describe()


def _check_output(path):
    """The stored blocks are voronoi_features of their states' coordinates; the fits name their columns and
    prediction_inputs rebuilds the stored predictions from them."""
    from glasshpc.learn.fits import prediction_inputs
    with h5py.File(path, "r") as f:
        box = f["snapshots/box"][()]
        S, N = f["snapshots/types"].shape
        for block, source in (("voronoi", "snapshots/positions"), ("voronoi_is", "states/inherent/positions"),
                              ("voronoi_cs", "states/cage/positions")):
            x = f[f"descriptors/{block}"][()]
            assert x.shape == (S, N, 3)
            for s in range(S):
                assert np.array_equal(x[s], voronoi_features(f[source][s], box[s]))
            assert np.all(np.abs(x[:, :, 0].sum(axis=1) / box.prod(axis=1) - 1) < 1e-10)
        names = [n.decode() for n in f["fits/vor/feature_names"][()]]
        assert names == [f"{b}:{c}" for b in ("voronoi", "voronoi_is", "voronoi_cs") for c in VORONOI_FEATURE_NAMES]
        n_desc = f["descriptors/init"].shape[2]           # generations 0..1 of init, then the 3 Voronoi columns
        assert len(f["fits/init_vor/feature_names"]) == n_desc + 3
        types = f["snapshots/types"][()]
        for name in ("vor", "init_vor"):
            g = f[f"fits/{name}"]
            assert np.all(np.isfinite(g["pearson"][()]))
            for s in range(S):
                X = prediction_inputs(f, g["feature_names"][()], s)
                for sp in range(2):
                    m = types[s] == sp
                    np.testing.assert_allclose(X[m] @ g["coef"][sp].T + g["intercept"][sp],
                                               g["prediction"][s][:, m].T, rtol=1e-9, atol=1e-9)


@needs_freud
def test_pipeline_stores_and_fits_the_blocks(tiny_yaml, tmp_path):
    from glasshpc import resources
    from glasshpc.parallel import Context
    from glasshpc.run import execute
    out = str(tmp_path / "vor.h5")
    text = _voronoi_yaml(tiny_yaml, out)
    cfg = config.parse(text)
    execute(cfg, text, Context(MPI.COMM_SELF))
    _check_output(out)
    # the resource plan counts the three [S, N, 3] blocks and the tessellation's memory
    plain = yaml.safe_load(text)
    plain["fits"]["feature_sets"] = {name: {"features": "init", "generations": 1} for name in ("vor", "init_vor")}
    a, b = resources.plan(cfg, 2, "shards"), resources.plan(config.parse(yaml.safe_dump(plain)), 2, "shards")
    assert a["output"] - b["output"] == 3 * 4 * 300 * 3 * 8
    assert a["stages"]["descriptors"] - b["stages"]["descriptors"] == resources.VORONOI_BYTES_PER_PARTICLE * 300


@needs_freud
@pytest.mark.mpi(min_size=2)
def test_one_and_two_ranks_identical(tiny_yaml, tmp_path):
    from glasshpc.parallel import Context
    from glasshpc.run import execute
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    one, two = os.path.join(folder, "one.h5"), os.path.join(folder, "two.h5")
    text = _voronoi_yaml(tiny_yaml, two)
    execute(config.parse(text), text, Context(comm))
    if comm.rank == 0:
        text = _voronoi_yaml(tiny_yaml, one)
        execute(config.parse(text), text, Context(MPI.COMM_SELF))
    comm.Barrier()
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in ("descriptors/voronoi", "descriptors/voronoi_is", "descriptors/voronoi_cs"):
            assert np.array_equal(a[name][()], b[name][()]), name
        for s in ("vor", "init_vor"):
            for key in ("pearson", "coef", "intercept", "prediction", "feature_names"):
                assert np.array_equal(a[f"fits/{s}/{key}"][()], b[f"fits/{s}/{key}"][()]), (s, key)
    if comm.rank == 0:
        _check_output(two)
