"""The fit stage: ridge regression of propensity on named feature sets, per species and time.

Reduced LJ units. SCIENCE.md §5: α by cross-validation grouped by snapshot, quality = Pearson ρ(t)
between predicted and measured propensity on held-out snapshots. A feature set joins blocks with
'+' ([CAGE] Figs. 3 and 5): descriptor blocks ``init``, ``is``, ``cs`` (X^init, X^IS, X^CS,
generations 0..n each) and per-particle scalars ``drcs`` (Δr^CS), ``dris`` (Δr^IS), ``fnet``
(|F^net| at t = 0), ``energy`` (potential energy at t = 0), ``dw`` (local Debye–Waller factor,
[DW]); Voronoi blocks ``voronoi``, ``voronoi_is``, ``voronoi_cs`` (volume, surface, asphericity,
[DW], 3 columns each).

Parallel layout (every number is a function of the config and the data only, never of the ranks):

0. the plan — with at least two (feature set, species) problems per rank, each problem is one task
   ("whole"): its owner computes its statistics alone from every training snapshot (read from the
   store once; no collective), all its CV folds, the α choice and the refit. With fewer problems
   (many ranks) there is one task per (set, species, fold) in wave A and a refit wave B, and the
   statistics are distributed as in 1.  Feature selection always uses the distributed statistics.
1. statistics — each rank reads a round-robin share of the training and of the held-out
   snapshots from the store; per (feature set, species) every rank accumulates its snapshots'
   Gram matrices per CV fold; the per-snapshot terms are combined by reproducible summation
   (:mod:`glasshpc.learn.exact`), so the sums are bitwise the same on any rank count and equal to
   the ones a whole problem's owner computes alone.  All T times of one species share one Gram.
2. wave A, dealt over ranks: the whole problems, or one task per (set, species, fold) —
   eigendecomposition of the fold's training Gram and its validation errors on every α the grid
   rule can reach — and one per (set, species) for the MLP and one for the GNN baseline (each
   reads its rows / graphs from the store and trains on its rank alone: the same bits on any rank
   count).  The α are scored in the blocks of :attr:`AlphaPath.blocks` (the grid, then one
   decade per extension), so a whole problem asks only for the blocks its α rule reaches and
   gets the same bits as the full tables of the per-fold tasks.  Results are all-gathered; with
   per-fold tasks every rank replays the α choice (:class:`AlphaPath`) on the same tables.
3. wave B, dealt over ranks: the refit on all training rows per (set, species) (per-fold plan
   only) and the feature selection per (set, species, time).  Results are all-gathered.
4. predictions, held-out ρ(t), R²(t): every rank predicts all its snapshots (training and held
   out), one snapshot at a time, and writes them to the store (``fits/<set>/prediction``
   [S, T, N], each particle by its species' model); pooled ρ(t), R²(t) over the held-out rows from
   per-snapshot sums combined exactly, and the per-snapshot ρ(t) of each held-out snapshot
   (benchmark convention: mean ± std over snapshots), all-gathered.

CV score (``fits.cv_score``): 'mse' = the unweighted mean over folds of the validation MSE
(:func:`mean_mse`, sklearn's RidgeCV convention); 'pearson' = the unweighted mean over folds of the
mean per-snapshot Pearson ρ of the fold's validation snapshots (:func:`fold_pearson`; a wave-A task
then reads its fold's validation rows from the store), maximised — the criterion of the papers.

Tasks are dealt longest-first to the least-loaded rank by an estimated cost (:func:`deal`). The
fits run with one BLAS thread per rank: a threaded BLAS sums in a thread-count dependent order.
Memory per rank: the per-fold statistics of every (set, species) it has a task of, K·(F² + F·T)
float64 each (≈ 12 MB per fold at F = 1200), plus 4·K·F²/2 while reducing one of them, plus K
eigenbases F² while a whole problem is solved; a whole problem's owner also holds the feature
blocks of every training snapshot it needs (S_train·N·F float64, e.g. 8 × 1000 × 1100 ≈ 70 MB for
the KA demo; the whole plan only runs on few ranks, P ≤ problems / 2); in step 4
the predictions of its snapshots for one feature set, (S/P)·T·N float64.
"""
import heapq
from dataclasses import dataclass, field

import numpy as np

from ..config import DESCRIPTOR_BLOCKS, VORONOI_BLOCKS
from ..parallel import TaskQueue, lpt_order, task_rng
from ..structure.voronoi import VORONOI_FEATURE_NAMES
from .mlp import mlp_baseline
from .ridge import (AlphaPath, _Rows, _Standardised, _Stats, _warn_grid, assign_folds, binned_stats,
                    fold_pearson_scorer, fold_sse_scorer, frame, frame_for, mean_mse, pearson, pearson_r2, refit)
from .selection import Problem, SelectionResult, select_one

# the per-particle scalar features and the datasets holding them
SCALAR_SOURCES = {"drcs": "states/cage/displacement", "dris": "states/inherent/displacement",
                  "fnet": "snapshots/net_force", "energy": "snapshots/energy",
                  "dw": "dynamics/debye_waller"}


@dataclass
class FitResult:
    """Per feature set. Arrays: pearson, r2, alpha (n_species, T) (pearson, r2 pooled over the
    held-out rows); coef (n_species, T, F) in the order of ``feature_names`` (F,); intercept
    (n_species, T); grid_extended (n_species,) bool; pearson_per_snapshot (n_species, T, S_test)
    the ρ(t) of each held-out snapshot (in the order of the test ids; NaN if the species is
    absent), pearson_snapshot_mean / pearson_snapshot_std (n_species, T) their mean and population
    std (ddof 0) over the snapshots where it is defined. With ``fits.selection``: ``selection``
    [SelectionResult per species]; with ``fits.mlp``: ``mlp_pearson``, ``mlp_r2`` (n_species, T)
    of the MLP baseline on the same split; with ``fits.gnn``: ``gnn_pearson``, ``gnn_r2`` likewise
    for the graph network (:mod:`glasshpc.learn.gnn`). The predictions are in the store
    (``fits/<set>/prediction``), not here."""
    pearson: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    grid_extended: np.ndarray
    feature_names: list
    selection: list = field(default_factory=list)
    mlp_pearson: np.ndarray = None
    mlp_r2: np.ndarray = None
    gnn_pearson: np.ndarray = None
    gnn_r2: np.ndarray = None
    pearson_per_snapshot: np.ndarray = None
    pearson_snapshot_mean: np.ndarray = None
    pearson_snapshot_std: np.ndarray = None


def feature_layout(fset, descriptor_names):
    """[(block, columns or None)] and the feature names of a set; descriptor blocks take the
    columns of generations 0..fset.generations (``descriptor_names`` lists all columns, generation
    by generation, as :meth:`DescriptorSpec.feature_names`)."""
    n_base = sum(1 for n in descriptor_names if not n.startswith("gen"))
    cols = np.arange((fset.generations + 1) * n_base)
    parts, names = [], []   # cols is always a prefix of the block's columns (feature_rows relies on it)
    for block in fset.blocks:
        if block in DESCRIPTOR_BLOCKS:
            parts.append((block, cols))
            names += [f"{block}:{descriptor_names[c]}" for c in cols]
        elif block in VORONOI_BLOCKS:   # its own columns, generation 0 only (config.VORONOI_BLOCKS)
            parts.append((block, np.arange(len(VORONOI_FEATURE_NAMES))))
            names += [f"{block}:{c}" for c in VORONOI_FEATURE_NAMES]
        else:
            parts.append((block, None))
            names.append(block)
    return parts, names


def feature_rows(parts, data, ids, species, T, store=None):
    """(X, Y, groups) of ``species`` in snapshots ``ids`` (in that order): from ``data`` (this rank's
    snapshots, {s: :func:`read_snapshot` dict}), or, with ``store``, read from the store whatever is
    missing. ``parts``: the (block, columns) layout of :func:`feature_layout`; ``T``: read-out times.
    X (n, F) float64 features, Y (n, T) float64 propensity (σ_AA), groups (n,) int64 snapshot of
    each row; n = particles of ``species`` in those snapshots (a snapshot's rows in particle order)."""
    snaps = []
    for s in ids:
        if s in data:
            snaps.append((s, data[s]))
        elif store is not None:
            snaps.append((s, read_snapshot(store, s, {b for b, _ in parts})))
    widths = [c.size if c is not None else 1 for _, c in parts]
    idx = [np.flatnonzero(d["types"] == species) for _, d in snaps]
    n = sum(i.size for i in idx)
    X, Y = np.empty((n, sum(widths))), np.empty((n, T))
    G = np.empty(n, np.int64)
    a = 0
    for (s, d), i in zip(snaps, idx):
        b = a + i.size
        col = 0
        for (block, c), w in zip(parts, widths):
            # the columns of a descriptor block are a prefix (generations 0..g): one gather per block
            X[a:b, col:col + w] = d[block][i, :w] if c is not None else d[block][i, None]
            col += w
        Y[a:b] = d["propensity"][:, i].T
        G[a:b] = s
        a = b
    return X, Y, G


def read_snapshot(store, s, blocks):
    """{"types": (N,) int, "propensity": (N, T) float, block: its per-particle array} of snapshot
    ``s`` read from the run's store, for the feature blocks ``blocks`` (descriptor, Voronoi or
    scalar blocks; KeyError for an unknown block)."""
    d = {"types": store.read("snapshots/types", (s,)), "propensity": store.read("propensity", (s,))}
    for b in blocks:
        d[b] = store.read(f"descriptors/{b}" if b in DESCRIPTOR_BLOCKS or b in VORONOI_BLOCKS
                          else SCALAR_SOURCES[b], (s,))
    return d


def deal(costs, size):
    """Owner rank of each task: longest first, each to the least-loaded rank (ties: lowest rank).

    A pure function of (costs, size); results never depend on it (every task is computed from its
    identity and the gathered statistics only)."""
    owner = [0] * len(costs)
    heap = [(0.0, r) for r in range(size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owner[i] = r
        heapq.heappush(heap, (load + float(costs[i]), r))
    return owner


def _gather(comm, mine):
    """Union over ranks of the {task: result} dicts (every rank gets all)."""
    out = {}
    for part in comm.allgather(mine):
        out.update(part)
    return out


class _Problem:
    """One (feature set, species): its columns, frame, per-fold statistics, held-out statistics."""

    def __init__(self, layout, names, fr=None, parts=None, fr_te=None, te=None):
        self.layout, self.names = layout, names
        self.fr, self.parts, self.fr_te, self.te = fr, parts, fr_te, te


def fit_propensity(ctx, cfg, store, descriptor_names, n_species, timings=None):
    """Collective. Ridge fit of every feature set in ``cfg.fits.feature_sets`` (module docstring:
    the parallel layout); results bitwise identical on any number of ranks.

    ``timings``: optional dict, filled with this rank's wall time (s) of each phase ('read',
    'statistics', 'wave A', 'wave B', 'held-out').
    Returns ({feature set name: FitResult}, train snapshot ids, test snapshot ids), the same on
    every rank."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_propensity(ctx, cfg, store, descriptor_names, n_species,
                               {} if timings is None else timings)


def _fit_propensity(ctx, cfg, store, descriptor_names, n_species, timings):
    import time

    clock = [time.perf_counter()]

    def lap(name):
        clock.append(time.perf_counter())
        timings[name] = clock[-1] - clock[-2]

    comm = ctx.comm
    S = cfg.snapshots.count
    T = cfg.replica_steps().size
    K = cfg.fits.cv_folds
    train, test = cfg.fit_split()
    by_pearson = cfg.fits.cv_score == "pearson"
    from ..models import get_model
    species_names = get_model(cfg.model.name).species
    times = cfg.replica_times()
    needed = {b for fs in cfg.fits.feature_sets.values() for b in fs.blocks}
    # training and held-out snapshots dealt separately: equal shares of the Gram work
    mine = ctx.mine([int(s) for s in train]) + ctx.mine([int(s) for s in test])
    data = {s: read_snapshot(store, s, needed) for s in mine}
    lap("read")
    g = cfg.fits.alphas
    path = AlphaPath(np.unique(np.logspace(np.log10(g.min), np.log10(g.max), g.count)))
    n_cand = path.candidates.size
    method = cfg.fits.selection.method
    mlp_cfg = cfg.fits.mlp
    sets = list(cfg.fits.feature_sets.items())
    taus = [(k, sp) for k in range(len(sets)) for sp in range(n_species)]
    probs = {}
    for k, (name, fset) in enumerate(sets):
        layout, names = feature_layout(fset, descriptor_names)
        for sp in range(n_species):
            probs[k, sp] = _Problem(layout, names)

    # snapshots holding rows of each species (the folds are made from these, as GroupedRidgeCV does)
    counts = np.zeros((S, n_species), np.int64)
    for s, d in data.items():
        counts[s] = np.bincount(d["types"], minlength=n_species)[:n_species]
    counts = comm.allreduce(counts)

    # ---- the task plan (pure function of the config, F and the number of ranks; results are not)
    def F_of(tau):
        return len(probs[tau].names)
    # whole problems (no feature selection, at least two problems per rank): one task per (set,
    # species) — its statistics from every training snapshot (no collective; the exact sums make
    # them bitwise the distributed ones), every CV fold, the α rule asking for the extensions only
    # at an edge (about half the α loop), the refit — dealt dynamically (TaskQueue: balance and
    # progress lines). Otherwise the statistics are distributed (every rank adds its snapshots,
    # Allreduce) and the solves dealt statically: one task per fold, then a refit wave.
    whole = whole_problems(len(taus), ctx.size, method)
    if whole:
        wave_a = [("fit", tau) for tau in taus]
    else:
        wave_a = [("cv", tau, f) for tau in taus for f in range(K)]
    if mlp_cfg.layers:
        wave_a += [("mlp", tau) for tau in taus]
    if cfg.fits.gnn.enabled:
        wave_a += [("gnn", tau) for tau in taus]
    wave_b = [] if whole else [("refit", tau) for tau in taus]
    if method != "none":
        wave_b += [("select", tau, t) for tau in taus for t in range(T)]
    n_rows = {tau: int(counts[train, tau[1]].sum()) for tau in taus}

    def cost(task):
        F = F_of(task[1])
        if task[0] == "fit":
            # fitted to the wall times of one rank (KA demo, F = 366 and 734): K + 1 eigh and K
            # GEMM ≈ 48 F³; the α grid (lazy: the extensions seldom) ≈ 7 units per 2F²T flop;
            # statistics: the Gram matrices of every training row, and the exact sums of F² terms
            # per snapshot and per fold
            n_snap = int(np.count_nonzero(counts[train, task[1][1]]))
            extra = (path.alphas.size * (2.0 * F * F * T + 2.0 * n_rows[task[1]] / K * F * T)
                     if by_pearson else 0.0)
            return (48.0 * F ** 3 + K * (14.4 * path.alphas.size * T * F * F + extra)
                    + 2.5 * n_rows[task[1]] * F * F + 800.0 * (n_snap + K) * F * F)
        if task[0] == "cv":
            extra = (n_cand * (2.0 * F * F * T + 2.0 * n_rows[task[1]] / K * F * T)
                     if by_pearson else 0.0)   # explicit predictions of the fold's rows per α
            return 13.0 * F ** 3 + 2.0 * F * F * n_cand * T + extra
        if task[0] == "refit":
            return 9.0 * F ** 3
        if task[0] == "select":
            k_sel = F if method == "rfe" else min(cfg.fits.selection.max_features, F)
            return 2.0 * F ** 3 if method == "rfe" else 4.0 * k_sel * F * F
        if task[0] == "gnn":
            return gnn_cost(cfg.fits.gnn, train.size, cfg.model.n_particles, F)
        return mlp_cost(mlp_cfg, n_rows[task[1]], F, T)
    folds = {}
    for tau in taus:
        folds[tau] = assign_folds(train[counts[train, tau[1]] > 0], K, cfg.seed)

    def statistics(tau, on, rows_of):
        """(frame, per-fold statistics) of one problem; ``on``: the communicator (collective) or
        None (this rank alone, from ``rows_of``: every training snapshot)."""
        present = train[counts[train, tau[1]] > 0]

        def bin_of(s, present=present, fold_of_id=folds[tau]):
            return int(fold_of_id[np.searchsorted(present, s)])
        rows = _Rows(*feature_rows(probs[tau].layout, rows_of, train, tau[1], T))
        fr = frame(on, rows)
        return fr, binned_stats(on, rows, bin_of, K, fr)

    # ---- 1. statistics, distributed (the per-fold plan)
    mine_a = mine_b = []
    if not whole:
        owner_a = dict(zip(wave_a, deal([cost(t) for t in wave_a], ctx.size)))
        owner_b = dict(zip(wave_b, deal([cost(t) for t in wave_b], ctx.size)))
        mine_a = [t for t in wave_a if owner_a[t] == ctx.rank]
        mine_b = [t for t in wave_b if owner_b[t] == ctx.rank]
        keep = {t[1] for t in mine_a + mine_b if t[0] not in ("mlp", "gnn")}
        for tau in taus:
            pb = probs[tau]
            fr, parts = statistics(tau, comm, data)
            fr_te = te = None
            if method != "none":
                rows_te = _Rows(*feature_rows(pb.layout, data, test, tau[1], T))
                fr_te = frame_for(comm, fr, rows_te)
                te = binned_stats(comm, rows_te, lambda s: 0, 1, fr_te)[0]
            if tau in keep:
                pb.fr, pb.parts, pb.fr_te, pb.te = fr, parts, fr_te, te
    lap("statistics")

    # ---- 2. wave A: whole problems (CV, α choice, refit) or CV tables per fold; MLP baselines
    def fold_scorer(tau, f, fd, parts):
        """``alphas -> (A, T)`` validation score table of fold f (α in the blocks of the path: a
        value never depends on the other α, so lazy and precomputed tables agree bitwise)."""
        pb = probs[tau]
        if by_pearson:   # per-snapshot ρ needs the fold's rows, not only its statistics
            present = train[counts[train, tau[1]] > 0]
            ids = present[folds[tau] == f]
            return fold_pearson_scorer(fd, _Rows(*feature_rows(pb.layout, data, ids, tau[1], T, store)),
                                       path.blocks)
        return fold_sse_scorer(fd, parts[f], path.blocks)

    def choose(tau, tables):
        """The α rule on ``tables`` (per fold: alphas -> (A, T)), as GroupedRidgeCV replays it."""
        n_fold = [float(c) for c in _fold_counts(counts, train, tau[1], folds[tau], K)]

        def cv_mse_of(a):
            if by_pearson:   # loss = −(mean over folds of the mean per-snapshot ρ), folds in order
                acc = tables[0](a)
                for tb in tables[1:]:
                    acc = acc + tb(a)
                return -acc / len(tables)
            return mean_mse([tb(a) for tb in tables], n_fold)
        alphas_, _, best, extended, edge = path.choose(cv_mse_of)
        return alphas_, best, extended, edge

    cache = dict(data)   # whole problems: the training snapshots read so far (all, at most)

    def run(task):
        tau = task[1]
        pb = probs[tau]
        if task[0] == "fit":
            for s in train:
                if s not in cache:
                    cache[s] = read_snapshot(store, s, needed)
            fr, parts = statistics(tau, None, cache)
            tables = [fold_scorer(tau, f, _fold_problem(parts, f), parts) for f in range(K)]
            alphas_, best, extended, edge = choose(tau, tables)
            tables.clear()
            coef, intercept, _, _ = refit(parts, True, fr, alphas_, best)
            return alphas_, best, extended, edge, coef, intercept
        if task[0] == "cv":
            f = task[2]
            return fold_scorer(tau, f, _fold_problem(pb.parts, f), pb.parts)(path.candidates)
        k_set, sp = tau
        if task[0] == "gnn":
            from .gnn import gnn_task
            seed = int(task_rng(cfg.seed, "gnn", cfg.fits.gnn.seed, k_set, sp).integers(2 ** 31))
            return gnn_task(cfg, store, sets[k_set][1], descriptor_names, n_species, sp, train,
                            test, seed)
        Xtr, Ytr, Gtr = feature_rows(pb.layout, data, train, sp, T, store)
        Xte, Yte, _ = feature_rows(pb.layout, data, test, sp, T, store)
        seed = int(task_rng(cfg.seed, "mlp", mlp_cfg.seed, k_set, sp).integers(2 ** 31))
        return mlp_baseline(Xtr, Ytr, Gtr, Xte, Yte, layers=mlp_cfg.layers, width=mlp_cfg.width,
                            dropout=mlp_cfg.dropout, l2=mlp_cfg.l2, max_iter=mlp_cfg.max_iter,
                            batch_size=mlp_cfg.batch_size, learning_rate=mlp_cfg.learning_rate,
                            outputs=mlp_cfg.outputs, max_rows=mlp_cfg.max_rows, seed=seed)

    res_a = {}
    if whole:
        order, costs = lpt_order(wave_a, [cost(t) for t in wave_a])
        # costs are flop estimates: at a pessimistic 1 Gflop/s, 5 × the longest task must pass
        # before a rank waiting at the end counts another as hung (a GNN can train for an hour)
        queue = TaskQueue(ctx, "fits", order, costs, stall_floor=5.0 * costs[0] / 1e9)
        for task in queue:
            res_a[task] = run(task)
        queue.close()      # the boundary, watched for a hung rank
    else:
        for task in mine_a:
            res_a[task] = run(task)
        # uneven work: a hung rank aborts, no hang (limit as the queue's above)
        ctx.sync("fits, wave A", since=clock[-1],
                 limit=5.0 * max((cost(t) for t in wave_a), default=0.0) / 1e9)
    cache.clear()
    res_a = _gather(comm, res_a)
    lap("wave A")

    # the α choice: made by the owner of a whole problem, else replayed on every rank from the
    # gathered fold tables (the same decision either way)
    choice = {}
    for tau in taus:
        if whole:
            alphas_, best, extended, edge = res_a["fit", tau][:4]
        else:
            alphas_, best, extended, edge = choose(
                tau, [path.lookup(res_a["cv", tau, f]) for f in range(K)])
        if ctx.root:   # only rank 0 says it
            _warn_grid(extended, edge, alphas_, path.max_extensions,
                       where=f"feature set {sets[tau[0]][0]!r}, species {species_names[tau[1]]}",
                       best=best, times=times, grid=path.alphas, score=cfg.fits.cv_score)
        choice[tau] = (alphas_, best, extended)

    # ---- 3. wave B: refits, feature selection
    res_b = {}
    sel_problems = {}
    for task in mine_b:
        tau = task[1]
        pb = probs[tau]
        alphas_, best, _ = choice[tau]
        if task[0] == "refit":
            coef, intercept, _, _ = refit(pb.parts, True, pb.fr, alphas_, best)
            res_b[task] = (coef, intercept)
        else:
            t = task[2]
            if tau not in sel_problems:
                sel_problems.clear()   # one held-out problem at a time (tasks come in (set, species) order)
                sel_problems[tau] = Problem(_Stats.total(pb.parts), pb.te, pb.fr)
            prob = sel_problems[tau]
            K_sel = prob.n_steps(method, cfg.fits.selection.max_features)
            res_b[task] = select_one(prob, method, alphas_[best[t]], K_sel, t)
    sel_problems.clear()
    ctx.sync("fits, wave B", since=clock[-1],
             limit=5.0 * max((cost(t) for t in wave_b), default=0.0) / 1e9)
    res_b = _gather(comm, res_b)
    if whole:
        res_b.update({("refit", tau): res_a["fit", tau][4:] for tau in taus})
    lap("wave B")

    # ---- 4. predictions of this rank's snapshots (to the store); held-out ρ(t), R²(t) pooled
    # (sums exact over snapshots and ranks) and per held-out snapshot
    results = {}
    local = sorted(data)
    is_test = np.zeros(S, bool)
    is_test[test] = True
    for k_set, (name, fset) in enumerate(sets):
        names = probs[k_set, 0].names
        F = len(names)
        res = FitResult(*(np.full((n_species, T), np.nan) for _ in range(3)),
                        np.zeros((n_species, T, F)), np.zeros((n_species, T)),
                        np.zeros(n_species, bool), names)
        predictions = {s: np.full((T, data[s]["types"].size), np.nan) for s in local}
        per_snap = {}
        for sp in range(n_species):
            tau = (k_set, sp)
            alphas_, best, extended = choice[tau]
            coef, intercept = res_b["refit", tau]
            X, Y, G = feature_rows(probs[tau].layout, data, local, sp, T)
            pred = predict_rows(X, G, coef, intercept)
            for s in local:
                sel = G == s
                predictions[s][:, data[s]["types"] == sp] = pred[sel].T
                if is_test[s]:
                    per_snap[s, sp] = (pearson(Y[sel], pred[sel]) if np.count_nonzero(sel) > 1
                                       else np.full(T, np.nan))
            te = is_test[G]
            res.pearson[sp], res.r2[sp] = pearson_r2(Y[te], pred[te], comm=comm, groups=G[te])
            res.alpha[sp] = alphas_[best]
            res.coef[sp] = coef
            res.intercept[sp] = intercept
            res.grid_extended[sp] = extended
            if method != "none":
                rows = [res_b["select", tau, t] for t in range(T)]
                order, rho, r2, trr = (np.stack([r[i] for r in rows]) for i in range(4))
                nm = [[str(names[j]) for j in row if j >= 0] for row in order]
                res.selection.append(SelectionResult(order, rho, r2, trr, nm, method,
                                                     alphas_[best].copy()))
            if mlp_cfg.layers:
                mlp = res_a["mlp", tau]
                if res.mlp_pearson is None:
                    res.mlp_pearson = np.full((n_species, T), np.nan)
                    res.mlp_r2 = np.full((n_species, T), np.nan)
                res.mlp_pearson[sp], res.mlp_r2[sp] = mlp.pearson, mlp.r2
            if cfg.fits.gnn.enabled:
                gnn = res_a["gnn", tau]
                if res.gnn_pearson is None:
                    res.gnn_pearson = np.full((n_species, T), np.nan)
                    res.gnn_r2 = np.full((n_species, T), np.nan)
                res.gnn_pearson[sp], res.gnn_r2[sp] = gnn.pearson, gnn.r2
        for s in local:
            store.write(f"fits/{name}/prediction", (s,), predictions[s])
        predictions.clear()
        per_snap = _gather(comm, per_snap)
        rho = np.full((n_species, T, test.size), np.nan)
        for (s, sp), r in per_snap.items():
            rho[sp, :, np.searchsorted(test, s)] = r
        res.pearson_per_snapshot = rho
        res.pearson_snapshot_mean, res.pearson_snapshot_std = snapshot_mean_std(rho)
        results[name] = res
    lap("held-out")
    return results, train, test


def whole_problems(n_problems, ranks, method):
    """True when the fits solve whole (set, species) problems, one task each (module docstring,
    plan 0): no feature selection (``method`` 'none') and at least two problems per rank."""
    return method == "none" and n_problems >= 2 * max(1, ranks)


def mlp_cost(mlp_cfg, n_rows, F, T):
    """Estimated flops of one ('mlp', (set, species)) task, for :func:`deal` and the dry-run: forward +
    backward (×3, 2 flops per multiply-add) of every layer for each of ``n_rows`` training rows (at most
    ``max_rows``) and Adam epoch; ``F`` inputs, ``T`` read-out times, one network per time with
    ``outputs: per_time``."""
    w, L = mlp_cfg.width, mlp_cfg.layers
    heads = T if mlp_cfg.outputs == "per_time" else 1
    return heads * 6.0 * min(n_rows, mlp_cfg.max_rows) * (F * w + (L - 1) * w * w + w * T) * mlp_cfg.max_iter


def gnn_cost(gnn_cfg, n_train, n_particles, F, degree=50.0):
    """Estimated flops of one ('gnn', (set, species)) task, for :func:`deal`: per epoch and training
    snapshot, forward + backward (×3) of the edge MLPs (≈ ``degree`` edges per particle, 3H² each) and
    the node MLPs (5H²) of every graph layer, plus the encoder (F·H)."""
    H = float(gnn_cfg.hidden)
    per_node = gnn_cfg.layers * (degree * 3.0 * H * H + 5.0 * H * H) + F * H
    return 6.0 * gnn_cfg.epochs * n_train * n_particles * per_node


def snapshot_mean_std(rho):
    """(mean, std) over the last axis of ``rho`` (…, S_test), ignoring NaN (snapshots without the
    species); std is the population std (ddof 0); NaN where no snapshot is defined."""
    ok = np.isfinite(rho)
    n = ok.sum(-1)
    v = np.where(ok, rho, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = v.sum(-1) / n
        std = np.sqrt(np.where(ok, (rho - mean[..., None]) ** 2, 0.0).sum(-1) / n)
    return mean, std


def prediction_inputs(h5, feature_names, s):
    """(N, F) float64 inputs of snapshot ``s`` of a finished output ``h5`` (h5py.File) for a
    feature set's ``feature_names`` (``/fits/<set>/feature_names``): ``block:name`` is column
    ``name`` of ``/descriptors/feature_names`` in ``/descriptors/<block>`` (of
    ``structure.voronoi.VORONOI_FEATURE_NAMES`` for a Voronoi block); a scalar name is the
    per-particle dataset of :data:`SCALAR_SOURCES` (also ``/fits`` attrs ``scalar_sources``).
    ``X @ coef[sp, t] + intercept[sp, t]`` over the particles of species ``sp`` is then
    ``/fits/<set>/prediction[s, t]`` there."""
    import json
    sources = json.loads(h5["fits"].attrs["scalar_sources"]) if "scalar_sources" in \
        h5["fits"].attrs else SCALAR_SOURCES
    columns = {str(n.decode() if isinstance(n, bytes) else n): j
               for j, n in enumerate(h5["descriptors/feature_names"][()])}
    cols, blocks = [], {}
    for raw in feature_names:
        fname = raw.decode() if isinstance(raw, bytes) else str(raw)
        block, _, col = fname.partition(":")
        if col:
            if block not in blocks:   # one read per block, not per column
                blocks[block] = h5[f"descriptors/{block}"][s]
            cols.append(blocks[block][:, VORONOI_FEATURE_NAMES.index(col) if block in VORONOI_BLOCKS
                                      else columns[col]])
        else:
            cols.append(h5[sources[block]][s])
    return np.stack(cols, axis=1).astype(np.float64)


def predict_rows(X, groups, coef, intercept):
    """X @ coefᵀ + intercept: X (n, F), groups (n,) snapshot of each row (a snapshot's rows
    contiguous), coef (T, F), intercept (T,) → (n, T) float64. One snapshot at a time: the rounding
    of a BLAS product can depend on its number of rows, and a snapshot's rows are the same matrix
    on any rank count."""
    pred = np.empty((X.shape[0], coef.shape[0]))
    cut = np.flatnonzero(np.diff(groups)) + 1
    for a, b in zip(np.r_[0, cut], np.r_[cut, X.shape[0]]):
        pred[a:b] = X[a:b] @ coef.T + intercept[None, :]
    return pred


def _fold_problem(parts, f):
    """Standardised training problem of fold ``f`` (all other folds, summed in fold order, as
    GroupedRidgeCV does)."""
    return _Standardised(_Stats.total([p for j, p in enumerate(parts) if j != f]), True)


def _fold_counts(counts, train, sp, fold_of_id, K):
    present = train[counts[train, sp] > 0]
    return [counts[present[fold_of_id == f], sp].sum() for f in range(K)]


def single_variable_pearson(ctx, cfg, store, n_species):
    """Collective. Pearson ρ(t) of each available per-particle scalar (Δr^CS, Δr^IS, |F^net|,
    energy, Debye–Waller factor) with the propensity, per species, over all snapshots — no fit
    ([CAGE] Figs. 2, 5; [DW]).

    The Debye–Waller factor is dynamical (``config.DYNAMICAL_BLOCKS``, labelled by the tables) and left
    out when no read-out lies near its time (:func:`glasshpc.dynamics.debye_waller_near`).

    Returns {scalar name: (n_species, T) float64}."""
    from ..dynamics import debye_waller_near
    available = ["fnet", "energy"]
    if debye_waller_near(cfg.replica_times()):
        available.append("dw")
    if cfg.inherent.enabled:
        available.insert(0, "dris")
    if cfg.cage.enabled:
        available.insert(0, "drcs")
    T = cfg.replica_steps().size
    mine = ctx.mine(list(range(cfg.snapshots.count)))
    types = {s: store.read("snapshots/types", (s,)) for s in mine}
    prop = {s: store.read("propensity", (s,)) for s in mine}
    out = {}
    for name in available:
        value = {s: store.read(SCALAR_SOURCES[name], (s,)) for s in mine}
        rho = np.full((n_species, T), np.nan)
        for sp in range(n_species):
            ys = [prop[s][:, types[s] == sp].T for s in mine] or [np.empty((0, T))]
            xs = [value[s][types[s] == sp] for s in mine] or [np.empty(0)]
            gs = [np.full(np.count_nonzero(types[s] == sp), s) for s in mine] or [np.empty(0, int)]
            y = np.concatenate(ys)
            x = np.repeat(np.concatenate(xs)[:, None], T, axis=1)
            # per-snapshot sums combined exactly: bitwise the same on any rank count
            rho[sp] = pearson(y, x, comm=ctx.comm, groups=np.concatenate(gs))
        out[name] = rho
    return out
