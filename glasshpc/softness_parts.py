"""The softness and energy-barrier stages of the pipeline ([SOFT] ch. 2–3; SCIENCE.md §2, §5, §6).

Reduced LJ units of species A. A config with a ``softness:`` section (glasshpc.config.SoftnessConfig)
runs, through ``glasshpc.run.execute``, the shared snapshot stage (:func:`glasshpc.stages.snapshots`)
for every state point (``state_points:``, :func:`glasshpc.stages.state_points`) and then these
stages, each with the contract of glasshpc/stages.py (task list = pure function of the config,
tasks pooled over the state points by :func:`glasshpc.stages.run_pooled`, journalled under the
task identity (k, snapshot[, block]), every random stream from ``task_rng(seed, stage, k, snapshot
[, replica])`` with the run's master seed — the identities of the former softness sweep, so its
numbers are kept —, results to the task's slot, resumable):

1. ``softness trajectories``  one task per (state point k, snapshot s): NVT/NVE trajectory with
   frames every ``frame_interval`` (any engine: LAMMPS :func:`glasshpc.md.trajectory.
   run_trajectory`; EDMD from the replica read-outs), the indicator (p_hop or CSD, :func:`indicator`);
   features and "rearranges in (t0, t0 + window]" at ``measure_frames`` structure frames t0; the
   features of the snapshot itself (for p_r); the task's share of the softness training set
   (training state point) or of a fluidity tail set (T ≥ fluidity_min_temperature), balanced and
   sampled with the task's rng.
2. ``softness p_r``  one task per (k, s, block of replicas): short NVE replicas from the snapshot
   with fresh Maxwell–Boltzmann velocities; counts of "rearranged by p_r.by".
3. :func:`fit_models` collective: gather the small training sets (in task-identity order), fit the
   SVC (softness), fluidity SVCs and the regressors of logit p_r, one model per rank.
4. :func:`barrier_stage` collective: per state point counts n, k of particles per x bin (integers
   summed over ranks: exact), Arrhenius/Kramers fits, onset, explained variance and JSD.

The features are the shared descriptors (``descriptors:``; :func:`glasshpc.stages.descriptor_spec`),
by default the [SOFT] set ``{preset: softness_135, generations: 0}`` (sharp-shell Q_l).

HDF5 layout (``<k>`` = ``state_points/<k>/``, empty without ``state_points:``):

====================================  =============================================================
``<k>/snapshots/positions, types,     the shared snapshot stage's datasets
box, sq_AA``
``<k>/softness/data/*``               per-task slots: ``features`` (S, K, N, M) f4, ``rearranged``
                                      (S, K, N) i1, ``snapshot_features`` (S, N, M) f4,
                                      ``train_X, train_label, train_frame, tails``,
                                      ``rearranging_fraction`` (S,), ``pr_counts`` (S, C, N) i4
``/softness/temperatures``            (P,) state-point T; ``densities`` (P,); ``snapshot_state``
                                      (J,) k of every snapshot, ``snapshot_index`` (J,) its s
                                      (J = all snapshots, in (k, s) order); ``measure_frames`` (K,)
``/softness/feature_names``           (M,) str; attrs ``species``, ``indicator``,
                                      ``training_temperature``, ``training_state_point``
``/softness/models/<m>/``             ``mean``, ``scale`` (M,) standardisation; ``normal`` (M,) unit
                                      normal (linear models); attrs ``intercept`` (b of S = ŵ·F̃ − b
                                      for svc, logit intercept for regressors), ``b_best``,
                                      ``sigma_tr``, ``params`` (JSON), ``pearson_heldout``,
                                      ``train_accuracy`` (svc)
``/softness/fluidity/T=<T>/``         same for the fluidity SVC trained at T
``/softness/dot_products``            (K, K) ŵ_a·ŵ_b, attr ``names``
``/softness/predictions/<m>``         (J, N) f8 per particle of every snapshot (t = 0 structure):
                                      softness S = ŵ·F̃ − b for svc, predicted logit p_r for a
                                      regressor; NaN for particles of the other species
``/softness/rfe/counts, pearson, ranking``  RFE curve of ridge on logit p_r (if configured)
``/softness/training``                examples per class at the training state point
``/barriers/edges``, ``centers``      (B+1,), (B,) bins of x (Z-score) or S (``svc_S``)
``/barriers/<m>/n``, ``k``            (P, B) particles / rearranging in the window per bin
``/barriers/<m>/sigma, delta_e, sigma_err, delta_e_err, chi2, dof``  (B,) per-bin fits
``/barriers/<m>/landscape``           (4,) S0, S1, E0, E1 of Σ = S0 + S1 x, ΔE = E0 + E1 x;
                                      ``landscape_cov`` (4, 4); attrs ``onset``, ``onset_err``, ``form``
``/barriers/<m>/explained_variance``  (P,) Var(E[logit p_r^true | output])/Var (NaN without p_r)
``/barriers/<m>/jsd_vs_svc``          (P,) JSD of the x distributions of m and svc (snapshots)
====================================  =============================================================
"""
import json

import numpy as np

from . import rearrangements as rr
from .config import softness_training_state
from .learn import barriers as br
from .learn import softness as sm
from .models import get_model
from .parallel import MPI, task_rng
from .stages import descriptor_spec, run_pooled, snapshot_layout
from .structure.descriptors import compute_descriptors


def feature_spec(cfg):
    """DescriptorSpec of the softness features: the config's ``descriptors:`` (r_generation a
    number, or irrelevant with generations 0)."""
    r_gen = cfg.descriptors.r_generation
    return descriptor_spec(cfg, 1.0 if r_gen == "auto" else r_gen)


def thresholds(s):
    """(rearranging threshold, quiet threshold) of the configured indicator (σ²)."""
    r = s.rearrangement
    return (r.p_c, r.p_l) if s.indicator == "phop" else (r.csd_threshold, r.csd_quiet)


def indicator(frames, s, frame_interval):
    """(F, N) float64 indicator of ``frames`` (F, N, 3): p_hop (half_window) or CSD (csd_steps
    frames), NaN where undefined (:func:`glasshpc.rearrangements.p_hop`, ``csd``)."""
    r = s.rearrangement
    if s.indicator == "phop":
        return rr.p_hop(frames, frame_interval, r.half_window)
    return rr.csd(frames, r.csd_steps)


def indicator_range(s, frame_interval, n_frames):
    """(lo, hi): first and last frame where the indicator is defined."""
    r = s.rearrangement
    if s.indicator == "phop":
        w = int(round(r.half_window / frame_interval))
        return w, n_frames - 1 - w
    return int(r.csd_steps), n_frames - 1


def trajectory(engine, positions, types, box, temperature, rng, duration, frame_interval,
               ensemble, tdamp=0.5):
    """(F, N, 3) unwrapped frames at t = 0, frame_interval, …, duration. LAMMPS engines:
    :func:`glasshpc.md.trajectory.run_trajectory`; the EDMD engine (hard spheres, NVE only): its
    replica read-outs at the frame times added to the start positions."""
    if hasattr(engine, "command"):
        from .md.trajectory import run_trajectory
        return run_trajectory(engine, positions, types, box, temperature, rng, duration,
                              frame_interval, ensemble, tdamp)
    if ensemble != "nve":
        raise ValueError(f"{type(engine).__name__} runs nve only, not {ensemble!r}")
    n = int(round(duration / frame_interval))
    per = int(round(frame_interval / engine.timestep))
    d = engine.run_replica(positions, types, box, temperature, rng, per * np.arange(1, n + 1))
    return np.concatenate([positions[None], positions[None] + d])


def snapshot_rng(cfg):
    """The snapshot stream of a softness run: task_rng(seed, 'soft-snapshot', k, s) (k = 0
    without state_points:), for :func:`glasshpc.stages.snapshots`."""
    return lambda p, s: task_rng(cfg.seed, "soft-snapshot", p.index or 0, s)


class Plan:
    """Derived sizes of a softness run (pure function of the config and its state points)."""

    def __init__(self, cfg, points):
        s = cfg.softness
        self.cfg, self.points = cfg, points
        self.P = len(points)
        self.S = [p.cfg.snapshots.count for p in points]
        self.slots = [(k, j) for k in range(self.P) for j in range(self.S[k])]   # flat J order
        self.J = len(self.slots)
        self.N = cfg.model.n_particles
        self.T = np.array([p.cfg.model.temperature for p in points], dtype=np.float64)
        self.rho = np.array([p.cfg.model.density for p in points], dtype=np.float64)
        self.spec = feature_spec(cfg)
        self.M = self.spec.n_features
        fi = s.trajectory.frame_interval
        self.fi = fi
        self.F = int(round(s.trajectory.duration / fi)) + 1
        self.lo, self.hi = indicator_range(s, fi, self.F)
        self.win = int(round(s.rearrangement.window / fi))
        # t0 such that the indicator is defined on the whole window (t0, t0 + window]
        self.t0 = np.unique(np.linspace(self.lo - 1, self.hi - self.win,
                                        s.trajectory.measure_frames).round().astype(int))
        self.K = self.t0.size
        self.train = softness_training_state([p.cfg for p in points], s.training.state_point)
        self.q_soft = -(-s.training.rearranging // self.S[self.train])
        self.fluid = [k for k in range(self.P) if self.T[k] >= s.training.fluidity_min_temperature
                      and k != self.train]
        self.q_fluid = max([-(-s.training.fluidity_examples // self.S[k]) for k in self.fluid]
                           or [0])
        self.Q = max(self.q_soft, self.q_fluid)                 # examples per class per slot
        chosen = s.p_r.state_points
        self.pr_points = [k for k in range(self.P) if s.p_r.replicas and
                          (not chosen or k in chosen)]
        self.C = s.p_r.replicas // s.p_r.replicas_per_task if s.p_r.replicas else 0
        self.species = get_model(cfg.model.name).species.index(s.species)

    def layout(self):
        """Store layout: name → (shape, dtype), every state point under its prefix."""
        N, M, K, Q = self.N, self.M, self.K, self.Q
        lay = {}
        for k, p in enumerate(self.points):
            S, d = self.S[k], p.prefix + "softness/data/"
            lay.update(snapshot_layout(S, N, p.prefix))
            lay.update({
                d + "features": ((S, K, N, M), np.float32),
                d + "rearranged": ((S, K, N), np.int8),
                d + "snapshot_features": ((S, N, M), np.float32),
                d + "train_X": ((S, 2 * Q, M), np.float64),
                d + "train_label": ((S, 2 * Q), np.int8),
                d + "train_frame": ((S, 2 * Q, 2), np.int32),
                d + "tails": ((S, 2), np.float64),
                d + "rearranging_fraction": ((S,), np.float64),
            })
            if self.C and k in self.pr_points:
                lay[d + "pr_counts"] = ((S, self.C, N), np.int32)
        return lay

    def read(self, store, k, name, slot):
        """Dataset ``name`` (relative to the state point) at ``slot`` of state point k."""
        return store.read(self.points[k].prefix + name, slot)


def plan_text(cfg, points, ctx):
    """What ``--dry-run`` prints for a softness run."""
    from .stages import prep_steps
    pl = Plan(cfg, points)
    s = cfg.softness
    traj = s.trajectory.duration / cfg.md.timestep
    n_pr = sum(pl.S[k] for k in pl.pr_points)
    pr = s.p_r.duration / cfg.md.timestep * s.p_r.replicas * n_pr
    N = pl.N
    prep = sum(pl.S[k] * prep_steps(p.cfg) for k, p in enumerate(points))
    return "\n".join([
        f"glasshpc softness sweep: {cfg.model.name}, N = {N}, {pl.P} state points "
        f"T = {pl.T.tolist()}, ρ = {pl.rho.tolist()}, {pl.J} snapshots, ranks {ctx.size}",
        f"  stage snapshots  : {pl.J} tasks ({prep * N / 1e9:.3g} G atom-steps)",
        f"  trajectories     : {pl.J} tasks × {s.trajectory.duration:g} τ "
        f"{s.trajectory.ensemble}, {pl.F} frames, indicator {s.indicator}, P_R at {pl.K} frames "
        f"({pl.J * traj * N / 1e9:.3g} G atom-steps); {pl.M} features "
        f"({cfg.descriptors.preset or 'descriptors: blocks'})",
        f"  p_r replicas     : {n_pr * pl.C} tasks, {s.p_r.replicas} replicas × "
        f"{s.p_r.duration:g} τ per snapshot at state points {pl.pr_points} "
        f"({pr * N / 1e9:.3g} G atom-steps)",
        f"  models           : {list(s.models)} trained at state point {pl.train} (T = "
        f"{pl.T[pl.train]:g}); fluidity at T = {[float(pl.T[k]) for k in pl.fluid]}",
        f"  barriers         : {s.barriers.form} fits for T ≤ {s.barriers.max_temperature}, "
        f"{s.barriers.bins.count} bins of x in [{s.barriers.bins.min}, {s.barriers.bins.max}]",
    ])


def _features_at(frames, types, box, spec, frame_ids):
    return {int(t): compute_descriptors(frames[t], types, box, spec) for t in np.unique(frame_ids)}


def trajectories(ctx, pl, store, engines):
    """Stage 1: trajectories → indicator → P_R samples, snapshot features and training examples,
    one task per (state point, snapshot). Returns the wall time (s)."""
    cfg = pl.cfg
    s = cfg.softness
    ind = s.rearrangement
    p_c, p_l = thresholds(s)

    def work(p, snap):
        k, v = p.index or 0, p.view(store)
        T = float(pl.T[k])
        pos = v.read("snapshots/positions", (snap,))
        types = v.read("snapshots/types", (snap,))
        box = v.read("snapshots/box", (snap,))
        rng = task_rng(cfg.seed, "soft-trajectory", k, snap)
        frames = trajectory(engines.get(), pos, types, box, T, rng, s.trajectory.duration,
                            pl.fi, s.trajectory.ensemble, cfg.md.tdamp)
        ph = indicator(frames, s, pl.fi)
        feats = _features_at(frames, types, box, pl.spec, np.r_[pl.t0, 0])
        d = "softness/data/"
        for m, t0 in enumerate(pl.t0):
            v.write(d + "features", (snap, m), feats[int(t0)].astype(np.float32))
            v.write(d + "rearranged", (snap, m),
                    rr.rearranged_within(ph, t0 + 1, t0 + pl.win, p_c).astype(np.int8))
        v.write(d + "snapshot_features", (snap,), feats[0].astype(np.float32))
        v.write(d + "rearranging_fraction", (snap,),
                float(np.mean(rr.rearranging(ph[pl.lo:pl.hi + 1], p_c))))
        # training examples of this trajectory (species of the models only)
        X = np.zeros((2 * pl.Q, pl.M))
        label = np.full(2 * pl.Q, -1, np.int8)
        where = np.full((2 * pl.Q, 2), -1, np.int32)
        tails = np.full(2, np.nan)
        sel = types == pl.species
        ph_s = np.where(sel[None, :], ph, np.nan)
        pick = task_rng(cfg.seed, "soft-training", k, snap)
        pos_set = neg_set = None
        if k == pl.train:
            pos_set = rr.rearranging_candidates(ph_s, p_c, ind.lag, pl.fi)
            neg_set = rr.quiet_candidates(ph_s, p_l, ind.quiet_time, pl.fi)
            q = pl.q_soft
        elif k in pl.fluid:
            lo_f, lo_p, hi_f, hi_p, tails = rr.tail_candidates(ph_s, s.training.fluidity_fraction,
                                                               ind.lag, pl.fi)
            pos_set, neg_set, q = (hi_f, hi_p), (lo_f, lo_p), pl.q_fluid
        if pos_set is not None:
            (pf, pp), (nf, npart) = rr.balanced_sample(pos_set, neg_set, q, pick)
            n = len(pf)
            fr = np.r_[pf, nf]
            rows = _features_at(frames, types, box, pl.spec, fr)
            for m, (t, i) in enumerate(zip(fr, np.r_[pp, npart])):
                X[m] = rows[int(t)][i]
                where[m] = (t, i)
            label[:n], label[n:2 * n] = 1, 0
        v.write(d + "train_X", (snap,), X)
        v.write(d + "train_label", (snap,), label)
        v.write(d + "train_frame", (snap,), where)
        v.write(d + "tails", (snap,), np.asarray(tails, dtype=np.float64))

    return run_pooled(ctx, "softness trajectories", pl.points, lambda p: range(p.cfg.snapshots.count),
                      work, store)


def pr_replicas(ctx, pl, store, engines):
    """Stage 2: counts of "rearranged by p_r.by" over blocks of short isoconfigurational replicas
    (NVE, fresh Maxwell–Boltzmann velocities at T; [SOFT] §3, SCIENCE.md §2), one task per
    (state point, snapshot, block). Returns the wall time (s)."""
    cfg = pl.cfg
    s = cfg.softness
    pr = s.p_r
    p_c, _ = thresholds(s)
    by = int(round(pr.by / pl.fi))

    def work(p, task):
        snap, c = task
        k, v = p.index or 0, p.view(store)
        pos = v.read("snapshots/positions", (snap,))
        types = v.read("snapshots/types", (snap,))
        box = v.read("snapshots/box", (snap,))
        counts = np.zeros(pl.N, np.int32)
        for r in range(c * pr.replicas_per_task, (c + 1) * pr.replicas_per_task):
            frames = trajectory(engines.get(), pos, types, box, float(pl.T[k]),
                                task_rng(cfg.seed, "soft-pr", k, snap, r), pr.duration, pl.fi,
                                "nve")
            counts += rr.rearranged_within(indicator(frames, s, pl.fi), pl.lo, by, p_c)
        v.write("softness/data/pr_counts", (snap, c), counts)

    def tasks(p):
        if (p.index or 0) not in pl.pr_points:
            return []
        return [(snap, c) for snap in range(p.cfg.snapshots.count) for c in range(pl.C)]

    return run_pooled(ctx, "softness p_r", pl.points, tasks, work, store)


def _pr_data(ctx, pl, store, slots):
    """(features, logit p_r, p_r) of the model species of the snapshots ``slots`` [(k, s)],
    gathered in slot order."""
    mine = ctx.mine(list(slots))
    X, y, pr = [], [], []
    R = pl.cfg.softness.p_r.replicas
    for k, j in mine:
        sel = pl.read(store, k, "snapshots/types", (j,)) == pl.species
        counts = np.sum([pl.read(store, k, "softness/data/pr_counts", (j, c))
                         for c in range(pl.C)], axis=0)[sel]
        X.append(pl.read(store, k, "softness/data/snapshot_features", (j,))[sel]
                 .astype(np.float64))
        y.append(rr.logit_rearrangement_probability(counts, R))
        pr.append(counts / R)
    return sm.gather_rows(ctx.comm, [tuple(t) for t in mine], X, y, pr)


def fit_models(ctx, pl, store):
    """Stage 3 (collective): softness SVC, fluidity SVCs and regressors of logit p_r.

    Returns dict with 'models' {name: model}, 'fluidity' {T: SoftnessSVC}, 'train' (X, y) of the
    softness set, 'heldout' {name: Pearson}, 'rfe' (counts, pearson, ranking) or None."""
    cfg = pl.cfg
    s = cfg.softness
    mine = ctx.mine(list(pl.slots))
    keys, Xs, ys, ps = [], [], [], []
    for k, j in mine:
        lab = pl.read(store, k, "softness/data/train_label", (j,))
        ok = lab >= 0
        keys.append((k, j))
        Xs.append(pl.read(store, k, "softness/data/train_X", (j,))[ok])
        ys.append(lab[ok])
        ps.append(np.full(ok.sum(), k))
    Xall, yall, pall = sm.gather_rows(ctx.comm, keys, Xs, ys, ps)
    tasks = {"svc": pl.train}
    tasks.update({f"fluidity:{k}": k for k in pl.fluid})
    for k, name in ((pl.train, "softness"), *((k, "fluidity") for k in pl.fluid)):
        n = int(np.sum(pall == k))
        if n < 4 or len(set(yall[pall == k].tolist())) < 2:
            raise RuntimeError(f"the {name} training set at T = {pl.T[k]} has {n} examples; "
                               "lengthen the trajectories or relax softness.rearrangement "
                               "thresholds")

    pr_train = pr_test = None
    regs = [m for m in s.models if m != "svc"]
    if regs:
        if pl.train not in pl.pr_points:
            raise RuntimeError("regressors need p_r at the training state point: add it to "
                               "softness.p_r.state_points and set p_r.replicas > 0")
        us = [(pl.train, j) for j in range(pl.S[pl.train])]
        n_test = min(s.p_r.test_snapshots, len(us) - 1)
        train_u, test_u = us[:len(us) - n_test], us[len(us) - n_test:]
        pr_train = _pr_data(ctx, pl, store, train_u)
        pr_test = _pr_data(ctx, pl, store, test_u) if test_u else None

    def fit_one(name):
        if name in tasks:
            sel = pall == tasks[name]
            return sm.SoftnessSVC(s.C).fit(Xall[sel], yall[sel] == 1)
        return sm.fit_regressor(name, pr_train[0], pr_train[1],
                                seed=int(task_rng(cfg.seed, "soft-fit", sm.MODELS.index(name))
                                         .integers(2 ** 31)))

    names = ["svc"] + regs + [n for n in tasks if n != "svc"]
    fitted = sm.fit_models(ctx.comm, names, fit_one)
    models = {m: fitted[m] for m in s.models}
    fluidity = {float(pl.T[k]): fitted[f"fluidity:{k}"] for k in pl.fluid}
    heldout = {}
    if pr_test is not None:
        for m in regs:
            heldout[m] = sm.pearson(models[m].predict(pr_test[0]), pr_test[1])
        heldout["svc"] = sm.pearson(models["svc"].softness(pr_test[0]), pr_test[1])
    rfe = None
    if s.rfe_counts and pr_test is not None:
        counts = [min(c, pl.M) for c in s.rfe_counts]
        rank, rho = sm.rfe_curve(pr_train[0], pr_train[1], pr_test[0], pr_test[1], counts) \
            if ctx.root else (None, None)
        rank, rho = ctx.comm.bcast((rank, rho), root=0)
        rfe = (np.array(counts), rho, rank)
    sel = pall == pl.train
    return {"models": models, "fluidity": fluidity, "train": (Xall[sel], yall[sel] == 1),
            "heldout": heldout, "rfe": rfe}


def _outputs(model, X):
    return model.raw_output(X)


def snapshot_predictions(ctx, pl, store, models):
    """Collective. Per model, the per-particle output of every snapshot's t = 0 structure
    (``softness/data/snapshot_features``): softness S for 'svc', predicted logit p_r for a
    regressor; NaN for particles not of the trained species. Each rank does its own snapshots
    (a snapshot's numbers do not depend on the rank). Returns on rank 0 {model: (J, N) float64}
    in (k, s) order, None elsewhere. Memory on rank 0: (number of models)·J·N float64."""
    mine = {}
    for k, j in ctx.mine(list(pl.slots)):
        sel = pl.read(store, k, "snapshots/types", (j,)) == pl.species
        X = pl.read(store, k, "softness/data/snapshot_features", (j,))[sel].astype(np.float64)
        out = {}
        for m, model in models.items():
            v = np.full(sel.size, np.nan)
            v[sel] = model.softness(X) if isinstance(model, sm.SoftnessSVC) else model.predict(X)
            out[m] = v
        mine[k, j] = out
    parts = ctx.comm.gather(mine, root=0)
    if not ctx.root:
        return None
    every = {kj: v for part in parts for kj, v in part.items()}
    return {m: np.stack([every[kj][m] for kj in pl.slots]) for m in models}


def barrier_stage(ctx, pl, store, fits):
    """Stage 4 (collective): P_R per bin and state point, barrier fits, onset, explained variance,
    JSD ([SOFT] §2.3, §3.3; SCIENCE.md §6). Returns (edges, {binning name: result dict}).
    The fits use the state points with T ≤ barriers.max_temperature; with fewer than two distinct
    such temperatures (e.g. a hard-sphere η sweep) they are NaN and the landscape None."""
    s = pl.cfg.softness
    b = s.barriers
    edges = np.linspace(b.bins.min, b.bins.max, b.bins.count + 1)
    models = fits["models"]
    Xtr, ytr = fits["train"]
    # b_best from the softness training set, σ_tr from the model's output at the training T
    train_j = [(pl.train, j) for j in range(pl.S[pl.train])]
    norm = {}
    mine = ctx.mine(train_j)
    parts = {m: [] for m in models}
    for k, j in mine:
        sel = pl.read(store, k, "snapshots/types", (j,)) == pl.species
        for t in range(pl.K):
            X = pl.read(store, k, "softness/data/features", (j, t))[sel].astype(np.float64)
            for m, model in models.items():
                parts[m].append(_outputs(model, X))
    for m, model in models.items():
        out = sm.gather_rows(ctx.comm, [tuple(kj) for kj in mine],
                             [np.concatenate(parts[m][i * pl.K:(i + 1) * pl.K])
                              for i in range(len(mine))])[0]
        norm[m] = (sm.best_bias(_outputs(model, Xtr), ytr), float(np.std(out)))
    binnings = {m: (models[m], norm[m]) for m in models}
    binnings["svc_S"] = (models["svc"], (models["svc"].intercept_, 1.0))   # x = S itself
    B = edges.size - 1
    n = {m: np.zeros((pl.P, B), np.int64) for m in binnings}
    kk = {m: np.zeros((pl.P, B), np.int64) for m in binnings}
    for k, j in ctx.mine(list(pl.slots)):
        sel = pl.read(store, k, "snapshots/types", (j,)) == pl.species
        for t in range(pl.K):
            X = pl.read(store, k, "softness/data/features", (j, t))[sel].astype(np.float64)
            r = pl.read(store, k, "softness/data/rearranged", (j, t))[sel].astype(bool)
            for m, (model, (bb, st)) in binnings.items():
                x = br.z_score(_outputs(model, X), bb, st)
                nn, kn = br.rearrangement_counts(x, r, edges)
                n[m][k] += nn
                kk[m][k] += kn
    for m in binnings:
        n[m] = ctx.comm.allreduce(n[m], op=MPI.SUM)
        kk[m] = ctx.comm.allreduce(kk[m], op=MPI.SUM)
    # logit p_r^true and model outputs on the snapshots with p_r, per state point
    ev_data = {}
    if pl.C:
        for k in pl.pr_points:
            ev_data[k] = _pr_data(ctx, pl, store, [(k, j) for j in range(pl.S[k])])[:2]
    fit_T = pl.T <= b.max_temperature
    can_fit = np.unique(pl.T[fit_T]).size >= 2
    if not can_fit:
        ctx.log(f"  barriers: fewer than two distinct temperatures ≤ {b.max_temperature}: no "
                "Arrhenius/Kramers fits")
    centers = 0.5 * (edges[1:] + edges[:-1])
    results = {}
    for m, (model, (bb, st)) in binnings.items():
        nm, km = n[m][fit_T], kk[m][fit_T]
        km = np.where(nm >= b.min_count, km, 0)       # too few particles: leave the point out
        res = {"n": n[m], "k": kk[m], "b_best": bb, "sigma_tr": st}
        res["fit"] = br.fit_barriers(pl.T[fit_T], km, nm, b.form) if can_fit else None
        res["landscape"] = None
        if can_fit:
            try:
                res["landscape"] = br.fit_landscape(centers, pl.T[fit_T], km, nm, b.form)
            except (ValueError, np.linalg.LinAlgError) as err:
                ctx.log(f"  {m}: no landscape fit ({err})")
        ev = np.full(pl.P, np.nan)
        jsd = np.full(pl.P, np.nan)
        for k, (X, y) in ev_data.items():
            x = br.z_score(_outputs(model, X), bb, st)
            ev[k] = br.explained_variance_fraction(y, x, n_bins=20)
            xs = br.z_score(_outputs(models["svc"], X), *norm["svc"])
            jsd[k] = br.jensen_shannon(x, xs, bins=40)
        res["explained_variance"], res["jsd_vs_svc"] = ev, jsd
        results[m] = res
    return edges, results


FIT_KEYS = ("sigma", "delta_e", "sigma_err", "delta_e_err", "chi2", "dof")


def write_results(h5, pl, fits, edges, bars, predictions, dot_names, dots, species):
    """Rank 0: the /softness and /barriers groups (module docstring)."""
    import h5py
    cfg = pl.cfg

    def write_model(g, model):
        g["mean"], g["scale"] = model.mean_ if hasattr(model, "mean_") else model.scaler.mean_, \
            model.scale_ if hasattr(model, "scale_") else model.scaler.scale_
        if model.coef_ is not None:
            g["normal"] = model.coef_
            g.attrs["intercept"] = model.intercept_
        if isinstance(model, sm.SoftnessSVC):
            g.attrs["train_accuracy"] = model.train_accuracy_
            g.attrs["params"] = json.dumps({"C": model.C, "n_support": model.n_support_})
        else:
            g.attrs["params"] = json.dumps(model.params)

    g = h5.require_group("softness")
    g["temperatures"] = pl.T
    g["densities"] = pl.rho
    g["snapshot_state"] = np.array([k for k, _ in pl.slots])
    g["snapshot_index"] = np.array([j for _, j in pl.slots])
    g["measure_frames"] = pl.t0
    g.create_dataset("feature_names", data=pl.spec.feature_names(species),
                     dtype=h5py.string_dtype())
    g.attrs["species"] = cfg.softness.species
    g.attrs["indicator"] = cfg.softness.indicator
    g.attrs["training_temperature"] = pl.T[pl.train]
    g.attrs["training_state_point"] = pl.train
    for m, model in fits["models"].items():
        mg = g.create_group(f"models/{m}")
        write_model(mg, model)
        mg.attrs["b_best"] = bars[m]["b_best"]
        mg.attrs["sigma_tr"] = bars[m]["sigma_tr"]
        mg.attrs["pearson_heldout"] = fits["heldout"].get(m, np.nan)
        g[f"predictions/{m}"] = predictions[m]
        g[f"predictions/{m}"].attrs["quantity"] = (
            "softness S" if m == "svc" else "predicted logit p_r")
    for T, f in fits["fluidity"].items():
        write_model(g.create_group(f"fluidity/T={T:g}"), f)
    g["dot_products"] = dots
    g["dot_products"].attrs["names"] = json.dumps(dot_names)
    if fits["rfe"] is not None:
        g["rfe/counts"], g["rfe/pearson"], g["rfe/ranking"] = fits["rfe"]
    ytr = fits["train"][1]
    g["training"] = np.array([ytr.sum(), (~ytr).sum()])
    g["training"].attrs["columns"] = "rearranging, non-rearranging (training state point)"
    b = h5.create_group("barriers")
    b["edges"] = edges
    b["centers"] = 0.5 * (edges[1:] + edges[:-1])
    b["temperatures"] = pl.T
    b.attrs["form"] = cfg.softness.barriers.form
    b.attrs["fit_temperatures"] = pl.T[pl.T <= cfg.softness.barriers.max_temperature]
    B = edges.size - 1
    for m, res in bars.items():
        mg = b.create_group(m)
        mg["n"], mg["k"] = res["n"], res["k"]
        fit = res["fit"]
        for key in FIT_KEYS:
            mg[key] = getattr(fit, key) if fit is not None else np.full(B, np.nan)
        lg = res["landscape"]
        if lg is not None:
            mg["landscape"], mg["landscape_cov"] = lg.params, lg.cov
            mg.attrs["onset"], mg.attrs["onset_err"] = lg.onset, lg.onset_err
            mg.attrs["chi2_dof"] = lg.chi2 / max(lg.dof, 1)
        mg["explained_variance"] = res["explained_variance"]
        mg["jsd_vs_svc"] = res["jsd_vs_svc"]
        mg.attrs["b_best"], mg.attrs["sigma_tr"] = res["b_best"], res["sigma_tr"]


def report_text(pl, fits, edges, bars, dot_names, dots):
    """ΔE(x), Σ(x) per model, onset temperatures, dot products (what rank 0 prints)."""
    c = 0.5 * (edges[1:] + edges[:-1])
    lines = [f"softness: {int(fits['train'][1].sum())} + {int((~fits['train'][1]).sum())} "
             f"training examples at T = {pl.T[pl.train]:g}; SVC training accuracy "
             f"{fits['models']['svc'].train_accuracy_:.3f}"]
    if fits["heldout"]:
        lines.append("held-out Pearson with logit p_r: " + ", ".join(
            f"{m} {v:.3f}" for m, v in fits["heldout"].items()))
    for m, res in bars.items():
        f = res["fit"]
        lines.append(f"[{m}] x = (output − {res['b_best']:.3g})/{res['sigma_tr']:.3g}")
        if f is not None:
            lines.append(f"  {'x':>6s} {'ΔE':>16s} {'Σ':>16s}")
            for i in range(c.size):
                if np.isfinite(f.delta_e[i]):
                    lines.append(f"  {c[i]:6.2f} {f.delta_e[i]:8.3f} ± {f.delta_e_err[i]:5.3f} "
                                 f"{f.sigma[i]:8.3f} ± {f.sigma_err[i]:5.3f}")
        lg = res["landscape"]
        if lg is not None:
            lines.append(f"  linear: ΔE = {lg.params[2]:.3f} + {lg.params[3]:.3f} x, Σ = "
                         f"{lg.params[0]:.3f} + {lg.params[1]:.3f} x; onset T = {lg.onset:.3f} ± "
                         f"{lg.onset_err:.3f} (χ²/dof {lg.chi2 / max(lg.dof, 1):.2f})")
        ev = res["explained_variance"]
        if np.isfinite(ev).any():
            lines.append("  explained Var(logit p_r): " + ", ".join(
                f"T={pl.T[p]:g}: {ev[p]:.3f}" for p in range(pl.P) if np.isfinite(ev[p]))
                + "; JSD vs svc: " + ", ".join(f"{v:.3g}" for v in res["jsd_vs_svc"]
                                               if np.isfinite(v)))
    lines.append("hyperplane normal dot products ŵ_a·ŵ_b:")
    lines.append("  " + " ".join(f"{n:>14s}" for n in [""] + dot_names))
    for a, n in enumerate(dot_names):
        lines.append("  " + f"{n:>14s} " + " ".join(f"{v:14.3f}" for v in dots[a]))
    return "\n".join(lines)
