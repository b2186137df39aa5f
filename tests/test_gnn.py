"""GNN baseline (glasshpc.learn.gnn): the edge list equals a brute-force O(N²) minimum-image search; a network
overfits one snapshot (ρ > 0.95 on it); relabelling the particles permutes the predictions bit for bit; training is
reproducible from its seed; inside the pipeline (tiny KA run, fits.gnn and fits.mlp on) the stored ρ are the same
bits on 1 and 2 ranks. Skips (with the install line) without PyTorch.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch missing: pip install '.[nn]' (the network baselines)")

from glasshpc.learn.gnn import Graph, fit_gnn, graph_edges  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def brute_force_edges(positions, box, cutoff):
    """{(sender, receiver): distance} by the O(N²) minimum-image double loop (numpy, no cell list)."""
    d = positions[None, :, :] - positions[:, None, :]          # d[i, j] = r_j − r_i
    d -= box * np.round(d / box)
    r = np.sqrt((d ** 2).sum(-1))
    i, j = np.nonzero((r < cutoff) & ~np.eye(len(positions), dtype=bool))
    return {(int(b), int(a)): r[a, b] for a, b in zip(i, j)}


def random_snapshot(seed, N=200, density=1.2, box=None):
    rng = np.random.default_rng(seed)
    box = np.full(3, (N / density) ** (1 / 3)) if box is None else np.asarray(box, float)
    return rng.random((N, 3)) * box, box, rng


def test_edges_equal_brute_force_minimum_image():
    pos, box, rng = random_snapshot(1, N=180, box=(5.0, 5.6, 6.3))
    pos += box * rng.integers(-2, 3, size=pos.shape)          # unwrapped images
    senders, receivers, dist = graph_edges(pos, box, 2.1)
    ref = brute_force_edges(pos, box, 2.1)
    got = {(int(s), int(r)): d for s, r, d in zip(senders, receivers, dist)}
    assert len(got) == senders.size and got.keys() == ref.keys() and len(ref) > 20 * 180
    np.testing.assert_allclose([got[k] for k in ref], [ref[k] for k in ref], rtol=0, atol=1e-12)
    assert np.all(np.diff(receivers) >= 0)                    # by receiver, then by distance
    same = receivers[1:] == receivers[:-1]
    assert np.all(np.diff(dist)[same] >= 0)
    with pytest.raises(ValueError, match="half the shortest box edge"):
        graph_edges(pos, box, 2.6)


def local_targets(pos, box, x, senders, receivers, dist):
    """Two propensity-like targets that need the neighbourhood: the neighbour count within 1.3 σ and the
    neighbour average of an input column plus the node's own second column."""
    N = len(pos)
    count = np.bincount(receivers[dist < 1.3], minlength=N).astype(float)
    mean = np.bincount(receivers, weights=x[senders, 0], minlength=N) / np.maximum(np.bincount(receivers,
                                                                                              minlength=N), 1)
    return np.stack([count, 2.0 * mean + x[:, 1]], 1)


@pytest.fixture(scope="module")
def overfit():
    """(graph, trained model, positions, box) of one snapshot of 200 particles, 20 % of species B."""
    pos, box, rng = random_snapshot(0)
    types = (rng.random(len(pos)) < 0.2).astype(np.int64)
    x = rng.normal(size=(len(pos), 3))
    s, r, d = graph_edges(pos, box, 2.1)
    g = Graph(x, types, s, r, d, local_targets(pos, box, x, s, r, d), 0)
    model = fit_gnn([g], 0, 2, hidden=16, layers=4, epochs=250, learning_rate=3e-3, seed=1)
    return g, model, pos, box


def test_overfits_one_snapshot(overfit):
    g, model, _, _ = overfit
    pred = model.predict(g)
    a = g.types == 0
    rho = [np.corrcoef(pred[a, k], g.targets[a, k])[0, 1] for k in range(2)]
    assert pred.shape == (200, 2) and pred.dtype == np.float64
    assert min(rho) > 0.95, rho


def test_permuting_particles_permutes_predictions_exactly(overfit):
    """Bitwise, not to round-off: a node's edges are ordered by distance, not by label, and summed in that order
    (index_add_ on one thread), and every other operation acts row by row — so relabelling changes no sum."""
    g, model, pos, box = overfit
    perm = np.random.default_rng(5).permutation(len(pos))
    s, r, d = graph_edges(pos[perm], box, 2.1)
    g2 = Graph(g.nodes[perm], g.types[perm], s, r, d, g.targets[perm], 0)
    assert np.array_equal(model.predict(g2), model.predict(g)[perm])


def test_training_reproducible_from_its_seed():
    pos, box, rng = random_snapshot(3, N=120, density=0.8)
    types = (rng.random(len(pos)) < 0.3).astype(np.int64)
    x = rng.normal(size=(len(pos), 2))
    graphs = []
    for k in range(2):   # two "snapshots" (the order of the steps is drawn too)
        s, r, d = graph_edges(pos + 0.1 * k, box, 2.1)
        graphs.append(Graph(x + k, types, s, r, d, local_targets(pos, box, x, s, r, d), k))
    kw = dict(hidden=8, layers=2, epochs=5)
    a, b, c = (fit_gnn(graphs, 1, 2, seed=seed, **kw).predict(graphs[0]) for seed in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="no particle of species 2"):
        fit_gnn(graphs, 2, 3, seed=0, **kw)


GNN_FITS = {"feature_sets": {"g0": {"generations": 0}, "fn": {"features": "init+fnet", "generations": 1}},
            "gnn": {"enabled": True, "hidden": 8, "layers": 2, "epochs": 3},
            "mlp": {"layers": 2, "max_iter": 5}}


@pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")
def test_pipeline_networks_same_on_1_and_2_ranks(tiny_yaml, tmp_path):
    """fits.gnn and fits.mlp inside the tiny KA run: /fits/<set>/gnn_pearson, mlp_pearson [2, T] stored,
    finite, printed in the Pearson table next to ridge, and bitwise equal on 1 and 2 ranks."""
    import yaml
    out = {}
    for ranks in (1, 2):
        data = yaml.safe_load(tiny_yaml(str(tmp_path / f"r{ranks}.h5")))
        data["fits"].update(GNN_FITS)
        data["inherent"]["enabled"] = data["cage"]["enabled"] = False   # not needed here: cheaper
        cfg = tmp_path / f"r{ranks}.yaml"
        cfg.write_text(yaml.safe_dump(data))
        cmd = [sys.executable, "-m", "glasshpc.run", str(cfg)]
        cmd = cmd if ranks == 1 else [MPIEXEC, "-n", "2"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
        assert p.returncode == 0, p.stderr[-3000:]
        out[ranks] = p.stdout + p.stderr
        assert "g0 gnn" in out[ranks] and "fn mlp" in out[ranks]
    with h5py.File(tmp_path / "r1.h5", "r") as a, h5py.File(tmp_path / "r2.h5", "r") as b:
        for name in ("g0", "fn"):
            for key in ("gnn_pearson", "gnn_r2", "mlp_pearson", "mlp_r2"):
                x = a[f"fits/{name}/{key}"][()]
                assert x.shape == (2, 8) and np.all(np.isfinite(x)), (name, key)
                assert np.array_equal(x, b[f"fits/{name}/{key}"][()]), (name, key)
