"""Non-linear baseline: a small multilayer perceptron (PyTorch) on the same train/held-out snapshots as the ridge.

[CMP] Sec. II.B, Table I and [DW] §2.3 (SCIENCE.md §5): 2–3 hidden layers of 16 ReLU units, dropout and an L2
penalty, trained with Adam on mini-batches; one network per species, predicting all T read-out times at once
([DW], ``outputs='all'``) or one network per time ([CMP], ``outputs='per_time'``). Propensity in σ_AA (reduced LJ
units); features and targets are standardised with the training rows' mean and population std (SCIENCE.md §4)
before training. Needs the optional extra ``nn`` (``pip install 'glasshpc[nn]'``, PyTorch); the config refuses
``fits.mlp`` without it before any work. This replaces the earlier scikit-learn ``MLPRegressor`` wrapper (no
dropout): one MLP, here. Unlike [CMP] the network of the last epoch is kept (they kept the epoch with the best
held-out ρ, which selects on the test set).

Determinism: float64; every random stream (initial weights, mini-batch order, dropout masks) comes from a torch
generator state seeded by ``seed`` inside :func:`torch_session` (the global torch RNG is restored afterwards), with
one intra-op thread, so the same inputs give the same bits on any rank.

Parallel layout: the training rows (at most ``max_rows``, a deterministic subsample drawn per snapshot from
``seed`` and the snapshot id) are gathered in snapshot order, rank 0 trains, and the weights are broadcast; every
rank then predicts its own held-out rows and ρ, R² are summed over ranks. In the fit stage
(:mod:`glasshpc.learn.fits`) one (feature set, species) is one task: its rank reads every row from the store and
calls :func:`mlp_baseline` with ``comm=None``, so the result is bitwise the same on any rank count.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .ridge import _allreduce, pearson, r2_score

__all__ = ["MLPResult", "mlp_baseline", "require_torch", "torch_session", "NN_EXTRA"]

NN_EXTRA = "pip install 'glasshpc[nn]'"
OUTPUTS = ("all", "per_time")


def require_torch():
    """The ``torch`` module; ImportError naming the extra when PyTorch is not installed."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"the network baselines need PyTorch: {NN_EXTRA}") from e
    return torch


@contextlib.contextmanager
def torch_session(seed):
    """Context for one deterministic training: one torch thread, the global torch RNG seeded with
    ``seed`` (int ≥ 0) and restored on exit (fork_rng), so nothing leaks into other tasks of the rank.
    Yields the torch module."""
    torch = require_torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # intra-op threads split sums in a thread-count dependent order
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) % 2**63)
            yield torch
    finally:
        torch.set_num_threads(threads)


def build_mlp(torch, n_in, n_out, layers, width, dropout, dtype):
    """``nn.Sequential``: ``layers`` × (Linear(·, width) → ReLU → Dropout(dropout)) → Linear(width, n_out)."""
    nn = torch.nn
    mods, n = [], n_in
    for _ in range(int(layers)):
        mods += [nn.Linear(n, int(width)), nn.ReLU()]
        if dropout > 0:
            mods.append(nn.Dropout(float(dropout)))
        n = int(width)
    mods.append(nn.Linear(n, int(n_out)))
    return nn.Sequential(*mods).to(dtype)


def adam(torch, model, learning_rate, l2):
    """Adam over ``model``'s parameters; L2 as Adam ``weight_decay`` (gradient += l2·W, i.e. the penalty
    (l2/2)·Σ W² added to the mean-squared loss) on the weight matrices only, biases unpenalised (as sklearn)."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return torch.optim.Adam([{"params": decay, "weight_decay": float(l2)},
                             {"params": rest, "weight_decay": 0.0}], lr=float(learning_rate))


@dataclass
class MLPResult:
    """pearson, r2 : (T,) held-out Pearson ρ and R² per time; n_train : rows used for training;
    n_iter : epochs run; hidden : hidden layer sizes; outputs : 'all' (one network, T outputs) or
    'per_time' (T networks, one output each)."""
    pearson: np.ndarray
    r2: np.ndarray
    n_train: int
    n_iter: int
    hidden: tuple
    outputs: str = "all"


def _subsample(groups, n_total, max_rows, seed):
    """Boolean mask of the rows kept: within snapshot g, rows whose uniform draw (stream (seed, g)) < max_rows/n."""
    frac = min(1.0, max_rows / max(n_total, 1))
    keep = np.ones(groups.size, bool)
    if frac >= 1.0:
        return keep
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        u = np.random.default_rng([int(seed), int(g)]).random(rows.size)
        keep[rows] = u < frac
    return keep


def _train(torch, Z, U, layers, width, dropout, l2, epochs, batch_size, learning_rate):
    """One network trained on standardised rows Z (n, F), targets U (n, k) float64; returns it (eval mode)."""
    model = build_mlp(torch, Z.shape[1], U.shape[1], layers, width, dropout, torch.float64)
    opt = adam(torch, model, learning_rate, l2)
    z, u = torch.from_numpy(Z), torch.from_numpy(U)
    n = z.shape[0]
    model.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(n)   # from the session's seeded generator
        for a in range(0, n, int(batch_size)):
            idx = perm[a:a + int(batch_size)]
            opt.zero_grad()
            loss = torch.mean((model(z[idx]) - u[idx]) ** 2)
            loss.backward()
            opt.step()
    model.eval()   # dropout off for prediction
    return model


def mlp_baseline(X_train, Y_train, groups_train, X_test, Y_test, *, layers=2, width=16, dropout=0.25, l2=1e-2,
                 max_iter=200, batch_size=50, learning_rate=1e-3, outputs="all", max_rows=100_000, seed=0,
                 comm=None):
    """Train the MLP on the training snapshots and score it on the held-out ones (collective over ``comm``).

    Parameters
    ----------
    X_train : (n_tr, F) this rank's training rows (float64); Y_train : (n_tr,) or (n_tr, T) propensities (σ_AA);
    groups_train : (n_tr,) int snapshot id of each training row (rows of one snapshot must sit on one rank, in a
        fixed order — as the pipeline distributes them);
    X_test, Y_test : this rank's held-out rows;
    layers : 1..3 hidden layers of ``width`` ReLU units, each followed by dropout of probability ``dropout``
        (0 ≤ dropout < 1; [CMP] Table I: 0.25); l2 : L2 penalty (:func:`adam`; [CMP]: α = 0.01);
    max_iter : Adam epochs; batch_size : rows per step ([CMP]: 50); learning_rate : Adam step size;
    outputs : 'all' = one network with T outputs ([DW]) or 'per_time' = T networks ([CMP]);
    max_rows : cap on the gathered training rows; seed : int ≥ 0, weights, batch order, dropout, subsample.

    Returns
    -------
    :class:`MLPResult`, identical on every rank.

    Raises ValueError for mismatched shapes, non-finite data, layers outside 1..3, dropout outside [0, 1), an
    unknown ``outputs`` or no training rows; ImportError (naming the extra) without PyTorch.
    """
    if not 1 <= int(layers) <= 3:
        raise ValueError(f"layers must be 1, 2 or 3, got {layers}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    Ytr = np.asarray(Y_train, dtype=np.float64)
    Yte = np.asarray(Y_test, dtype=np.float64)
    Ytr = Ytr[:, None] if Ytr.ndim == 1 else Ytr
    Yte = Yte[:, None] if Yte.ndim == 1 else Yte
    groups_train = np.asarray(groups_train).ravel()
    if X_train.shape[0] != Ytr.shape[0] or groups_train.size != X_train.shape[0]:
        raise ValueError("X_train, Y_train and groups_train disagree on the number of rows")
    if X_test.shape[0] != Yte.shape[0]:
        raise ValueError("X_test and Y_test disagree on the number of rows")
    F, T = X_train.shape[1], Ytr.shape[1]
    if X_test.shape[1] != F or Yte.shape[1] != T:
        raise ValueError(f"test data must have {F} features and {T} targets")
    tot = _allreduce(comm, np.concatenate([[X_train.shape[0]], X_train.sum(0), Ytr.sum(0)]))
    if not np.all(np.isfinite(tot)):
        raise ValueError("X_train or Y_train contains NaN or inf")
    n = int(tot[0])
    if n < 2:
        raise ValueError("need at least two training rows")
    mx, my = tot[1:F + 1] / n, tot[F + 1:] / n
    sq = _allreduce(comm, np.concatenate([((X_train - mx) ** 2).sum(0), ((Ytr - my) ** 2).sum(0)]))
    sx, sy = np.sqrt(sq[:F] / n), np.sqrt(sq[F:] / n)
    sx[sx == 0] = 1.0
    sy[sy == 0] = 1.0

    keep = _subsample(groups_train, n, max_rows, seed)
    part = (groups_train[keep], (X_train[keep] - mx) / sx, (Ytr[keep] - my) / sy)
    parts = [part] if comm is None else comm.gather(part, root=0)
    torch = require_torch()
    heads = [slice(None)] if outputs == "all" else [slice(t, t + 1) for t in range(T)]
    states, n_used = None, 0
    if comm is None or comm.Get_rank() == 0:
        g = np.concatenate([p[0] for p in parts])
        order = np.argsort(g, kind="stable")  # snapshot order, whatever the rank layout
        Z = np.ascontiguousarray(np.concatenate([p[1] for p in parts])[order])
        U = np.concatenate([p[2] for p in parts])[order]
        n_used = Z.shape[0]
        states = []
        for h, cols in enumerate(heads):
            # per_time: each time its own stream (seed, h), so network t does not depend on T
            with torch_session(seed if outputs == "all" else np.random.SeedSequence([int(seed), h])
                               .generate_state(1, np.uint64)[0]):
                net = _train(torch, Z, np.ascontiguousarray(U[:, cols]), layers, width, dropout, l2,
                             max_iter, batch_size, learning_rate)
            states.append({k: v.numpy().copy() for k, v in net.state_dict().items()})
    if comm is not None:
        states, n_used = comm.bcast((states, n_used), root=0)
    pred = np.empty((X_test.shape[0], T))
    Zte = torch.from_numpy(np.ascontiguousarray((X_test - mx) / sx))
    with torch_session(seed), torch.no_grad():   # one thread here too (no randomness is drawn)
        for state, cols in zip(states, heads):
            net = build_mlp(torch, F, pred[:, cols].shape[1], layers, width, dropout, torch.float64)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            net.eval()
            pred[:, cols] = net(Zte).numpy() if X_test.shape[0] else 0.0
    pred = pred * sy + my
    return MLPResult(pearson(Yte, pred, comm=comm), r2_score(Yte, pred, comm=comm), int(n_used),
                     int(max_iter), (int(width),) * int(layers), outputs)
