"""Graph network baseline of [CMP] Sec. II.C (after Bapst et al., Nat. Phys. 16, 448 (2020)), in plain PyTorch.

Each snapshot is one graph: a node per particle, a directed edge j → i for every pair closer than the cutoff
(periodic minimum image; [CMP]: 2.1 σ_L, σ_L the large particles' size), edge input |r_ij| (σ_AA), node input
the generation-0 descriptors of the feature set (and its per-particle scalar blocks), standardised over the
training snapshots, plus the one-hot species. Architecture (:func:`build_network`, hidden width H):

    encoder      h⁰_i = f_n(x_i),  e⁰_ij = f_e(|r_ij|)
    graph layer  ĥ = [h, h⁰], ê = [e, e⁰]           (the encoder output fed to every layer, as Bapst et al.)
                 e'_ij = g_e([ê_ij, ĥ_j, ĥ_i])
                 h'_i  = g_n([ĥ_i, Σ_j e'_ij, (1/deg_i) Σ_j e'_ij])   ([CMP] Fig. 3: added and averaged edges)
    decoder      y_i = d(h_i)   (T outputs: every read-out time at once)

every f, g, d an MLP Linear(·, H) → ReLU → Linear(H, ·). One network per (feature set, species) ([CMP]'s 'Sep':
the graph holds every particle, the loss only the particles of that species), trained with Adam on whole snapshots
(one graph per step, mean squared error of the standardised propensity), scored like the ridge: Pearson ρ(t) and
R²(t) pooled over the particles of the species in the held-out snapshots (:func:`glasshpc.learn.ridge.pearson_r2`).

Numbers: float32 (the edge MLPs dominate the cost); one torch thread and a seeded, restored torch RNG per training
(:func:`glasshpc.learn.mlp.torch_session`), so a task gives the same bits on whichever rank runs it. The edges of a
node are ordered by distance and summed in that order (index_add_ over edges sorted by receiver), so relabelling
the particles permutes the predictions bit for bit (tests/test_gnn.py) — unless two neighbours of a node lie at
exactly the same distance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mlp import adam, torch_session
from .ridge import pearson_r2

__all__ = ["Graph", "graph_edges", "build_network", "TrainedGNN", "fit_gnn", "GNNResult", "gnn_baseline",
           "snapshot_graphs", "gnn_task"]


def graph_edges(positions, box, cutoff):
    """Directed edges between particles closer than ``cutoff`` (periodic minimum image).

    Parameters
    ----------
    positions : (N, 3) float64 (σ_AA, any image); box : (3,) orthorhombic edges (σ_AA), origin 0;
    cutoff : float (σ_AA), below half the shortest edge.

    Returns
    -------
    senders, receivers : (E,) int64, both directions of every pair (j → i and i → j), sorted by receiver and,
        within a receiver, by distance; distances : (E,) float64 |r_j − r_i| (σ_AA).

    Raises ValueError for a cutoff ≥ half the box or non-finite positions
    (:class:`glasshpc.structure.neighbors.NeighborList`).
    """
    from ..structure.neighbors import NeighborList
    nl = NeighborList(positions, box, cutoff)
    receivers = np.repeat(np.arange(nl.counts.size, dtype=np.int64), nl.counts)
    order = np.lexsort((nl.distances, receivers))   # label-free order within a node's edges
    return nl.neighbors[order].astype(np.int64), receivers[order], nl.distances[order]


@dataclass
class Graph:
    """One snapshot. nodes : (N, F) float64 raw node inputs; types : (N,) int species; senders, receivers,
    distances : (E,) as :func:`graph_edges`; targets : (N, T) float64 propensity (σ_AA) or None; snapshot :
    its index (the pooled ρ sums per snapshot)."""
    nodes: np.ndarray
    types: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    distances: np.ndarray
    targets: np.ndarray = None
    snapshot: int = 0


def _mlp(torch, n_in, hidden, n_out):
    nn = torch.nn
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def build_network(n_in, n_out, hidden=16, layers=4):
    """The :class:`torch.nn.Module` of the module docstring: ``n_in`` node inputs, ``n_out`` outputs per node
    (read-out times), latent width ``hidden``, ``layers`` graph layers; float32. Call it as
    ``net(x (N, n_in), senders (E,), receivers (E,), r (E, 1), inv_deg (N, 1))`` → (N, n_out)."""
    from .mlp import require_torch
    torch = require_torch()
    H = int(hidden)

    class _EdgeUpdate(torch.nn.Module):
        """g_e([ê_ij, ĥ_j, ĥ_i]) with its first Linear split by input block: the node blocks are projected
        once per node (N rows) and gathered H wide, instead of gathering 2H-wide rows per edge and
        concatenating (same function, ~2× less work: edges outnumber nodes ~45 : 1 at 2.1 σ)."""

        def __init__(self):
            super().__init__()
            self.edge = torch.nn.Linear(2 * H, H)
            self.sender = torch.nn.Linear(2 * H, H, bias=False)
            self.receiver = torch.nn.Linear(2 * H, H, bias=False)
            self.out = torch.nn.Linear(H, H)

        def forward(self, ec, hc, senders, receivers):
            z = self.edge(ec) + self.sender(hc)[senders] + self.receiver(hc)[receivers]
            return self.out(torch.relu(z))

    class _GraphNetwork(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.node_encoder = _mlp(torch, n_in, H, H)
            self.edge_encoder = _mlp(torch, 1, H, H)
            self.edge_updates = torch.nn.ModuleList(_EdgeUpdate() for _ in range(int(layers)))
            self.node_updates = torch.nn.ModuleList(_mlp(torch, 4 * H, H, H) for _ in range(int(layers)))
            self.decoder = _mlp(torch, H, H, int(n_out))

        def forward(self, x, senders, receivers, r, inv_deg):
            h0, e0 = self.node_encoder(x), self.edge_encoder(r)
            h, e = h0, e0
            for g_e, g_n in zip(self.edge_updates, self.node_updates):
                hc = torch.cat([h, h0], 1)
                e = g_e(torch.cat([e, e0], 1), hc, senders, receivers)
                agg = torch.zeros(h.shape[0], H, dtype=e.dtype).index_add_(0, receivers, e)
                h = g_n(torch.cat([hc, agg, agg * inv_deg], 1))
            return self.decoder(h)

    return _GraphNetwork().to(torch.float32)


class TrainedGNN:
    """A trained network with its standardisation. ``predict(graph)`` → (N, T) float64 propensity (σ_AA) of every
    node (meaningful for nodes of ``species``)."""

    def __init__(self, net, species, n_species, x_mean, x_std, r_mean, r_std, y_mean, y_std, seed):
        self.net, self.species, self.n_species = net, species, n_species
        self.x_mean, self.x_std, self.r_mean, self.r_std = x_mean, x_std, r_mean, r_std
        self.y_mean, self.y_std, self.seed = y_mean, y_std, seed

    def inputs(self, torch, g):
        """Tensors (x, senders, receivers, r, inv_deg) of graph ``g`` (float32 / int64)."""
        N = g.nodes.shape[0]
        onehot = np.zeros((N, self.n_species))
        onehot[np.arange(N), g.types] = 1.0
        x = np.concatenate([(g.nodes - self.x_mean) / self.x_std, onehot], 1)
        deg = np.bincount(g.receivers, minlength=N).astype(np.float64)
        inv = np.divide(1.0, deg, out=np.zeros(N), where=deg > 0)
        f32 = np.float32
        return (torch.from_numpy(x.astype(f32)), torch.from_numpy(g.senders), torch.from_numpy(g.receivers),
                torch.from_numpy(((g.distances - self.r_mean) / self.r_std).astype(f32)[:, None]),
                torch.from_numpy(inv.astype(f32)[:, None]))

    def predict(self, g):
        """(N, T) float64 predicted propensity (σ_AA) of every node of graph ``g``."""
        with torch_session(self.seed) as torch, torch.no_grad():
            self.net.eval()
            out = self.net(*self.inputs(torch, g)).numpy().astype(np.float64)
        return out * self.y_std + self.y_mean


def _standardiser(a):
    """(mean, population std with 0 → 1) over the rows of ``a``."""
    m = a.mean(0)
    s = a.std(0)
    return m, np.where(s > 0, s, 1.0)


def fit_gnn(graphs, species, n_species, *, hidden=16, layers=4, epochs=30, learning_rate=1e-3, weight_decay=0.0,
            seed=0):
    """Train one network on the training ``graphs`` (list of :class:`Graph` with targets) for the particles of
    ``species`` (int), one graph per Adam step, graphs in a seeded random order each epoch.

    Node inputs, |r_ij| and the species' targets are standardised over the training graphs (population std).
    ``seed`` : int ≥ 0, the whole random stream (initial weights, order). Returns :class:`TrainedGNN`.
    Raises ValueError without graphs, targets or particles of the species; ImportError (naming the extra)
    without PyTorch."""
    if not graphs or any(g.targets is None for g in graphs):
        raise ValueError("fit_gnn needs training graphs with targets")
    sel = [g.types == species for g in graphs]
    if not any(s.any() for s in sel):
        raise ValueError(f"no particle of species {species} in the training graphs")
    x_mean, x_std = _standardiser(np.concatenate([g.nodes for g in graphs]))
    r_mean, r_std = _standardiser(np.concatenate([g.distances for g in graphs])[:, None])
    y_mean, y_std = _standardiser(np.concatenate([g.targets[s] for g, s in zip(graphs, sel)]))
    T = graphs[0].targets.shape[1]
    with torch_session(seed) as torch:
        net = build_network(graphs[0].nodes.shape[1] + n_species, T, hidden, layers)
        model = TrainedGNN(net, species, n_species, x_mean, x_std, r_mean[0], r_std[0], y_mean, y_std, seed)
        data = [(model.inputs(torch, g), torch.from_numpy(np.flatnonzero(s)),
                 torch.from_numpy(((g.targets[s] - y_mean) / y_std).astype(np.float32)))
                for g, s in zip(graphs, sel) if s.any()]
        opt = adam(torch, net, learning_rate, weight_decay)
        net.train()
        for _ in range(int(epochs)):
            for k in torch.randperm(len(data)).tolist():
                inputs, idx, y = data[k]
                opt.zero_grad()
                loss = torch.mean((net(*inputs)[idx] - y) ** 2)
                loss.backward()
                opt.step()
        net.eval()
    return model


@dataclass
class GNNResult:
    """pearson, r2 : (T,) held-out Pearson ρ and R² per time (pooled over the species' particles of the
    held-out graphs, per-snapshot sums combined exactly); n_train : training graphs; epochs; hidden; layers."""
    pearson: np.ndarray
    r2: np.ndarray
    n_train: int
    epochs: int
    hidden: int
    layers: int


def gnn_baseline(train_graphs, test_graphs, species, n_species, **kw):
    """Train on ``train_graphs`` (:func:`fit_gnn`, keywords ``kw``) and score on ``test_graphs`` (with targets).
    Returns :class:`GNNResult` ((T,) float64 ρ, R²)."""
    model = fit_gnn(train_graphs, species, n_species, **kw)
    Y, P, G = [], [], []
    for g in test_graphs:
        s = g.types == species
        Y.append(g.targets[s])
        P.append(model.predict(g)[s])
        G.append(np.full(np.count_nonzero(s), g.snapshot, np.int64))
    rho, r2 = pearson_r2(np.concatenate(Y), np.concatenate(P), groups=np.concatenate(G))
    return GNNResult(rho, r2, len(train_graphs), int(kw.get("epochs", 30)), int(kw.get("hidden", 16)),
                     int(kw.get("layers", 4)))


def snapshot_graphs(cfg, store, fset, descriptor_names, ids):
    """[:class:`Graph`] of snapshots ``ids`` read from the run's ``store``: edges on the initial positions
    (``snapshots/positions``, ``snapshots/box``) within ``cfg.fits.gnn.cutoff`` · σ_L, node inputs the
    generation-0 columns of ``fset``'s descriptor blocks and its scalar blocks (:func:`fits.feature_layout`),
    targets ``propensity`` (N, T)."""
    import dataclasses

    from ..models import get_model
    from .fits import read_snapshot, feature_layout
    parts, _ = feature_layout(dataclasses.replace(fset, generations=0), descriptor_names)
    cutoff = cfg.fits.gnn.cutoff * float(max(get_model(cfg.model.name).sigma_self()))
    out = []
    for s in ids:
        d = read_snapshot(store, int(s), {b for b, _ in parts})
        x = np.concatenate([d[b][:, c] if c is not None else d[b][:, None] for b, c in parts], 1)
        senders, receivers, dist = graph_edges(store.read("snapshots/positions", (int(s),)),
                                               store.read("snapshots/box", (int(s),)), cutoff)
        out.append(Graph(x.astype(np.float64), np.asarray(d["types"]), senders, receivers, dist,
                         np.asarray(d["propensity"], dtype=np.float64).T, int(s)))
    return out


def gnn_task(cfg, store, fset, descriptor_names, n_species, species, train, test, seed):
    """The fit stage's ('gnn', (set, species)) task: :func:`gnn_baseline` on the train / test snapshots read from
    the store with ``cfg.fits.gnn``'s settings; ``seed`` from the task identity. Returns :class:`GNNResult`."""
    c = cfg.fits.gnn
    return gnn_baseline(snapshot_graphs(cfg, store, fset, descriptor_names, train),
                        snapshot_graphs(cfg, store, fset, descriptor_names, test), species, n_species,
                        hidden=c.hidden, layers=c.layers, epochs=c.epochs, learning_rate=c.learning_rate,
                        weight_decay=c.weight_decay, seed=seed)
