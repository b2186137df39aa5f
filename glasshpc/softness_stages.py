"""Softness and energy-barrier sweep over state points ([SOFT] ch. 2–3; SCIENCE.md §2, §5, §6).

Reduced LJ units of species A. Run by ``python -m glasshpc.run INPUT`` when INPUT has a top-level
``softness:`` key (schema :class:`glasshpc.config.SoftnessRunConfig`). Stages, each following the
contract of glasshpc/stages.py (task list = pure function of the config, every random stream from
``task_rng(seed, stage, *task)``, results to the task's store slot, ranks round-robin):

1. ``sweep_snapshots``  one task per (state point, snapshot): LAMMPS preparation at (T, ρ).
2. ``trajectories``     one task per snapshot: NVT/NVE trajectory with frames every 1 τ, p_hop;
   features and "rearranges in (t0, t0 + 2τ]" at ``measure_frames`` structure frames t0; features
   of the snapshot itself (for p_r); the task's share of the softness training set (training T) or
   of a fluidity tail set (T ≥ fluidity_min_temperature), balanced and sampled with the task's rng.
3. ``pr_replicas``      one task per (snapshot, block of replicas): short NVE replicas (30 τ) from
   the snapshot with fresh Maxwell–Boltzmann velocities; counts of "rearranged by 25 τ".
4. ``fit_models``       collective: gather the small training sets, fit SVC (softness), fluidity SVCs
   (one per fluid T) and the regressors of logit p_r, spread over ranks (one model per rank).
5. ``barrier_stage``    collective: per snapshot counts n, k of particles per x bin (summed over
   ranks; integers, so exact), Arrhenius/Kramers fits, onset, explained variance and JSD.

HDF5 layout written (besides the per-task slots under ``/softness/data``):

====================================  =============================================================
``/softness/temperatures``            (P,) state-point T; ``densities`` (P,); ``snapshot_state`` (J,)
``/softness/feature_names``           (M,) str
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
``/softness/training``                attrs: examples per class, ``p_hop`` tails of fluidity sets
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
import time

import numpy as np

from . import rearrangements as rr
from .learn import barriers as br
from .learn import softness as sm
from .md.trajectory import run_trajectory
from .models import get_model
from .parallel import task_rng
from .stages import run_tasks
from .structure.descriptors import DescriptorSpec, compute_descriptors


def feature_spec(cfg):
    """DescriptorSpec of the softness features (generation 0 only; SCIENCE.md §4 softness set)."""
    f = cfg.softness.features

    def shells(blocks):
        return (np.concatenate([np.linspace(b.r_min, b.r_max, b.count) for b in blocks]),
                np.concatenate([np.full(b.count, b.delta) for b in blocks]))

    rr_, rd = shells(f.radial)
    ar, ad = shells(f.angular)
    return DescriptorSpec(rr_, rd, ar, ad, tuple(f.l), len(get_model(cfg.model.name).species),
                          generations=0, r_generation=1.0, truncation=f.truncation)


class Plan:
    """Derived sizes of a sweep (pure function of the config)."""

    def __init__(self, cfg):
        s = cfg.softness
        self.cfg = cfg
        self.slots = cfg.snapshot_slots()                       # j → (p, s)
        self.J = len(self.slots)
        self.N = cfg.model.n_particles
        self.T = cfg.temperatures()
        self.P = self.T.size
        self.spec = feature_spec(cfg)
        self.M = self.spec.n_features
        fi = s.trajectory.frame_interval
        self.fi = fi
        self.F = int(round(s.trajectory.duration / fi)) + 1
        self.w = int(round(s.indicator.half_window / fi))
        self.win = int(round(s.indicator.window / fi))
        # t0 such that p_hop is defined on the whole window (t0, t0 + window]
        first, last = self.w - 1, self.F - 1 - self.w - self.win
        self.t0 = np.unique(np.linspace(first, last, s.trajectory.measure_frames).round()
                            .astype(int))
        self.K = self.t0.size
        self.train_state = cfg.training_state()
        n_train_snaps = s.state_points[self.train_state].snapshots
        self.q_soft = -(-s.training.rearranging // n_train_snaps)
        self.fluid_states = [p for p in range(self.P)
                             if self.T[p] >= s.training.fluidity_min_temperature
                             and p != self.train_state]
        self.q_fluid = max([-(-s.training.fluidity_examples // s.state_points[p].snapshots)
                            for p in self.fluid_states] or [0])
        self.Q = max(self.q_soft, self.q_fluid)                 # examples per class per slot
        pr_T = s.p_r.temperatures
        self.pr_states = [p for p in range(self.P) if s.p_r.replicas and
                          (not pr_T or np.any(np.isclose(pr_T, self.T[p])))]
        self.C = s.p_r.replicas // s.p_r.replicas_per_task if s.p_r.replicas else 0
        self.pr_slots = [j for j, (p, _) in enumerate(self.slots) if p in self.pr_states]
        self.species = get_model(cfg.model.name).species.index(s.species)

    def layout(self):
        J, N, M, K, Q = self.J, self.N, self.M, self.K, self.Q
        lay = {
            "softness/data/positions": ((J, N, 3), np.float64),
            "softness/data/types": ((J, N), np.int32),
            "softness/data/box": ((J, 3), np.float64),
            "softness/data/features": ((J, K, N, M), np.float32),
            "softness/data/rearranged": ((J, K, N), np.int8),
            "softness/data/snapshot_features": ((J, N, M), np.float32),
            "softness/data/train_X": ((J, 2 * Q, M), np.float64),
            "softness/data/train_label": ((J, 2 * Q), np.int8),
            "softness/data/train_frame": ((J, 2 * Q, 2), np.int32),
            "softness/data/tails": ((J, 2), np.float64),
            "softness/data/rearranging_fraction": ((J,), np.float64),
        }
        if self.C:
            lay["softness/data/pr_counts"] = ((len(self.pr_slots), self.C, N), np.int32)
        return lay


def plan_text(cfg, ctx):
    """What ``--dry-run`` prints for a sweep."""
    pl = Plan(cfg)
    s, md = cfg.softness, cfg.md
    prep = (md.melt_time + md.nvt_time + md.nve_time) / md.timestep
    traj = s.trajectory.duration / md.timestep
    pr = s.p_r.duration / md.timestep * s.p_r.replicas * len(pl.pr_slots)
    N = pl.N
    return "\n".join([
        f"glasshpc softness sweep: {cfg.model.name}, N = {N}, {pl.P} state points "
        f"T = {pl.T.tolist()}, {pl.J} snapshots, ranks {ctx.size}",
        f"  sweep_snapshots: {pl.J} tasks ({pl.J * prep * N / 1e9:.3g} G atom-steps)",
        f"  trajectories   : {pl.J} tasks × {s.trajectory.duration:g} τ {s.trajectory.ensemble}, "
        f"{pl.F} frames, P_R at {pl.K} frames ({pl.J * traj * N / 1e9:.3g} G atom-steps); "
        f"{pl.M} features",
        f"  pr_replicas    : {len(pl.pr_slots) * pl.C} tasks, {s.p_r.replicas} replicas × "
        f"{s.p_r.duration:g} τ per snapshot at T = {[float(pl.T[p]) for p in pl.pr_states]} "
        f"({pr * N / 1e9:.3g} G atom-steps)",
        f"  models         : {list(s.models)} trained at T = {pl.T[pl.train_state]}; fluidity at "
        f"T = {[float(pl.T[p]) for p in pl.fluid_states]}",
        f"  barriers       : {s.barriers.form} fits for T ≤ {s.barriers.max_temperature}, "
        f"{s.barriers.bins.count} bins of x in [{s.barriers.bins.min}, {s.barriers.bins.max}]",
    ])


class _Engines:
    def __init__(self, cfg):
        self.cfg, self.engine = cfg, None

    def get(self):
        if self.engine is None:
            from .md.lammps import LammpsEngine
            self.engine = LammpsEngine(get_model(self.cfg.model.name), self.cfg.md.timestep,
                                       self.cfg.md.skin, suffix=self.cfg.md.suffix)
        return self.engine


def sweep_snapshots(ctx, cfg, pl, store, engines):
    """Stage 1: equilibrated snapshots at every state point (SCIENCE.md §1 preparation)."""
    md = cfg.md

    def work(j):
        p, s = pl.slots[j]
        sp = cfg.softness.state_points[p]
        pos, types, box = engines.get().prepare_snapshot(
            pl.N, sp.density, sp.temperature, task_rng(cfg.seed, "soft-snapshot", p, s),
            md.melt_temperature, md.melt_time, md.nvt_time, md.nve_time, md.tdamp)
        store.write("softness/data/positions", (j,), pos)
        store.write("softness/data/types", (j,), types)
        store.write("softness/data/box", (j,), box)

    return run_tasks(ctx, "sweep_snapshots", list(range(pl.J)), work, store)


def _features_at(frames, types, box, spec, frame_ids):
    return {int(t): compute_descriptors(frames[t], types, box, spec) for t in np.unique(frame_ids)}


def trajectories(ctx, cfg, pl, store, engines):
    """Stage 2: trajectories → p_hop → P_R samples, snapshot features and training examples."""
    s = cfg.softness
    ind = s.indicator

    def work(j):
        p, snap = pl.slots[j]
        T = float(pl.T[p])
        pos = store.read("softness/data/positions", (j,))
        types = store.read("softness/data/types", (j,))
        box = store.read("softness/data/box", (j,))
        rng = task_rng(cfg.seed, "soft-trajectory", p, snap)
        frames = run_trajectory(engines.get(), pos, types, box, T, rng, s.trajectory.duration,
                                pl.fi, s.trajectory.ensemble, cfg.md.tdamp)
        ph = rr.p_hop(frames, pl.fi, ind.half_window)
        feats = _features_at(frames, types, box, pl.spec, np.r_[pl.t0, 0])
        for k, t0 in enumerate(pl.t0):
            store.write("softness/data/features", (j, k), feats[int(t0)].astype(np.float32))
            store.write("softness/data/rearranged", (j, k),
                        rr.rearranged_within(ph, t0 + 1, t0 + pl.win, ind.p_c).astype(np.int8))
        store.write("softness/data/snapshot_features", (j,), feats[0].astype(np.float32))
        store.write("softness/data/rearranging_fraction", (j,),
                    float(np.mean(rr.rearranging(ph[pl.w:pl.F - pl.w], ind.p_c))))
        # training examples of this trajectory (species of the models only)
        X = np.zeros((2 * pl.Q, pl.M))
        label = np.full(2 * pl.Q, -1, np.int8)
        where = np.full((2 * pl.Q, 2), -1, np.int32)
        tails = np.full(2, np.nan)
        sel = types == pl.species
        ph_s = np.where(sel[None, :], ph, np.nan)
        pick = task_rng(cfg.seed, "soft-training", p, snap)
        pos_set = neg_set = None
        if p == pl.train_state:
            pos_set = rr.rearranging_candidates(ph_s, ind.p_c, ind.lag, pl.fi)
            neg_set = rr.quiet_candidates(ph_s, ind.p_l, ind.quiet_time, pl.fi)
            q = pl.q_soft
        elif p in pl.fluid_states:
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
        store.write("softness/data/train_X", (j,), X)
        store.write("softness/data/train_label", (j,), label)
        store.write("softness/data/train_frame", (j,), where)
        store.write("softness/data/tails", (j,), np.asarray(tails, dtype=np.float64))

    return run_tasks(ctx, "trajectories", list(range(pl.J)), work, store)


def pr_replicas(ctx, cfg, pl, store, engines):
    """Stage 3: counts of "rearranged by p_r.by" over blocks of short isoconfigurational replicas
    (NVE, fresh Maxwell–Boltzmann velocities at T; [SOFT] §3, SCIENCE.md §2)."""
    s = cfg.softness
    ind, pr = s.indicator, s.p_r
    by = int(round(pr.by / pl.fi))

    def work(task):
        u, c = task
        j = pl.pr_slots[u]
        p, snap = pl.slots[j]
        pos = store.read("softness/data/positions", (j,))
        types = store.read("softness/data/types", (j,))
        box = store.read("softness/data/box", (j,))
        counts = np.zeros(pl.N, np.int32)
        for r in range(c * pr.replicas_per_task, (c + 1) * pr.replicas_per_task):
            frames = run_trajectory(engines.get(), pos, types, box, float(pl.T[p]),
                                    task_rng(cfg.seed, "soft-pr", p, snap, r), pr.duration,
                                    pl.fi, "nve")
            ph = rr.p_hop(frames, pl.fi, ind.half_window)
            counts += rr.rearranged_within(ph, pl.w, by, ind.p_c)
        store.write("softness/data/pr_counts", (u, c), counts)

    tasks = [(u, c) for u in range(len(pl.pr_slots)) for c in range(pl.C)]
    return run_tasks(ctx, "pr_replicas", tasks, work, store)


def _pr_data(ctx, cfg, pl, store, slots):
    """(features, logit p_r, p_r) of the model species for the given p_r slot indices u, gathered."""
    mine = ctx.mine(list(slots))
    X, y, pr = [], [], []
    R = cfg.softness.p_r.replicas
    for u in mine:
        j = pl.pr_slots[u]
        sel = store.read("softness/data/types", (j,)) == pl.species
        counts = np.sum([store.read("softness/data/pr_counts", (u, c)) for c in range(pl.C)],
                        axis=0)[sel]
        X.append(store.read("softness/data/snapshot_features", (j,))[sel].astype(np.float64))
        y.append(rr.logit_rearrangement_probability(counts, R))
        pr.append(counts / R)
    return sm.gather_rows(ctx.comm, [(u,) for u in mine], X, y, pr)


def fit_models(ctx, cfg, pl, store):
    """Stage 4 (collective): softness SVC, fluidity SVCs and regressors of logit p_r.

    Returns dict with 'models' {name: model}, 'fluidity' {T: SoftnessSVC}, 'train' (X, y) of the
    softness set, 'heldout' {name: Pearson}, 'rfe' (counts, pearson, ranking) or None."""
    s = cfg.softness
    mine = ctx.mine(list(range(pl.J)))
    keys, Xs, ys, ps = [], [], [], []
    for j in mine:
        lab = store.read("softness/data/train_label", (j,))
        ok = lab >= 0
        keys.append((j,))
        Xs.append(store.read("softness/data/train_X", (j,))[ok])
        ys.append(lab[ok])
        ps.append(np.full(ok.sum(), pl.slots[j][0]))
    Xall, yall, pall = sm.gather_rows(ctx.comm, keys, Xs, ys, ps)
    tasks = {"svc": pl.train_state}
    tasks.update({f"fluidity:{p}": p for p in pl.fluid_states})
    for p, name in ((pl.train_state, "softness"), *((p, "fluidity") for p in pl.fluid_states)):
        n = int(np.sum(pall == p))
        if n < 4 or len(set(yall[pall == p].tolist())) < 2:
            raise RuntimeError(f"the {name} training set at T = {pl.T[p]} has {n} examples; "
                               "lengthen the trajectories or relax softness.indicator thresholds")

    pr_train = pr_test = None
    regs = [m for m in s.models if m != "svc"]
    if regs:
        if pl.train_state not in pl.pr_states:
            raise RuntimeError("regressors need p_r at the training temperature: add it to "
                               "softness.p_r.temperatures and set p_r.replicas > 0")
        us = [u for u, j in enumerate(pl.pr_slots) if pl.slots[j][0] == pl.train_state]
        n_test = min(s.p_r.test_snapshots, len(us) - 1)
        train_u, test_u = us[:len(us) - n_test], us[len(us) - n_test:]
        pr_train = _pr_data(ctx, cfg, pl, store, train_u)
        pr_test = _pr_data(ctx, cfg, pl, store, test_u) if test_u else None

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
    fluidity = {float(pl.T[p]): fitted[f"fluidity:{p}"] for p in pl.fluid_states}
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
    sel = pall == pl.train_state
    return {"models": models, "fluidity": fluidity, "train": (Xall[sel], yall[sel] == 1),
            "heldout": heldout, "rfe": rfe}


def _outputs(model, X):
    return model.raw_output(X)


def snapshot_predictions(ctx, pl, store, models):
    """Collective. Per model, the per-particle output of every snapshot's t = 0 structure
    (``softness/data/snapshot_features``): softness S for 'svc', predicted logit p_r for a
    regressor; NaN for particles not of the trained species. Each rank does its own snapshots
    (a snapshot's numbers do not depend on the rank). Returns on rank 0 {model: (J, N) float64},
    None elsewhere. Memory on rank 0: (number of models)·J·N float64."""
    mine = {}
    for j in ctx.mine(list(range(pl.J))):
        sel = store.read("softness/data/types", (j,)) == pl.species
        X = store.read("softness/data/snapshot_features", (j,))[sel].astype(np.float64)
        out = {}
        for m, model in models.items():
            v = np.full(sel.size, np.nan)
            v[sel] = model.softness(X) if isinstance(model, sm.SoftnessSVC) else model.predict(X)
            out[m] = v
        mine[j] = out
    parts = ctx.comm.gather(mine, root=0)
    if not ctx.root:
        return None
    every = {j: v for part in parts for j, v in part.items()}
    return {m: np.stack([every[j][m] for j in range(pl.J)]) for m in models}


def barrier_stage(ctx, cfg, pl, store, fits):
    """Stage 5 (collective): P_R per bin and temperature, barrier fits, onset, explained variance,
    JSD ([SOFT] §2.3, §3.3; SCIENCE.md §6). Returns {binning name: result dict}."""
    s = cfg.softness
    b = s.barriers
    edges = np.linspace(b.bins.min, b.bins.max, b.bins.count + 1)
    models = fits["models"]
    Xtr, ytr = fits["train"]
    # b_best from the softness training set, σ_tr from the model's output at the training T
    train_j = [j for j in range(pl.J) if pl.slots[j][0] == pl.train_state]
    norm = {}
    mine = ctx.mine(train_j)
    parts = {m: [] for m in models}
    for j in mine:
        sel = store.read("softness/data/types", (j,)) == pl.species
        for k in range(pl.K):
            X = store.read("softness/data/features", (j, k))[sel].astype(np.float64)
            for m, model in models.items():
                parts[m].append(_outputs(model, X))
    for m, model in models.items():
        out = sm.gather_rows(ctx.comm, [(j,) for j in mine],
                             [np.concatenate(parts[m][i * pl.K:(i + 1) * pl.K])
                              for i in range(len(mine))])[0]
        norm[m] = (sm.best_bias(_outputs(model, Xtr), ytr), float(np.std(out)))
    binnings = {m: (models[m], norm[m]) for m in models}
    binnings["svc_S"] = (models["svc"], (models["svc"].intercept_, 1.0))   # x = S itself
    B = edges.size - 1
    n = {m: np.zeros((pl.P, B), np.int64) for m in binnings}
    k = {m: np.zeros((pl.P, B), np.int64) for m in binnings}
    for j in ctx.mine(list(range(pl.J))):
        p = pl.slots[j][0]
        sel = store.read("softness/data/types", (j,)) == pl.species
        for t in range(pl.K):
            X = store.read("softness/data/features", (j, t))[sel].astype(np.float64)
            r = store.read("softness/data/rearranged", (j, t))[sel].astype(bool)
            for m, (model, (bb, st)) in binnings.items():
                x = br.z_score(_outputs(model, X), bb, st)
                nn, kk = br.rearrangement_counts(x, r, edges)
                n[m][p] += nn
                k[m][p] += kk
    from .parallel import MPI
    for m in binnings:
        n[m] = ctx.comm.allreduce(n[m], op=MPI.SUM)
        k[m] = ctx.comm.allreduce(k[m], op=MPI.SUM)
    # logit p_r^true and model outputs on the snapshots with p_r, per state point
    ev_data = {}
    if pl.C:
        for p in pl.pr_states:
            us = [u for u, j in enumerate(pl.pr_slots) if pl.slots[j][0] == p]
            X, y, _ = _pr_data(ctx, cfg, pl, store, us)
            ev_data[p] = (X, y)
    fit_T = pl.T <= b.max_temperature
    centers = 0.5 * (edges[1:] + edges[:-1])
    results = {}
    for m, (model, (bb, st)) in binnings.items():
        nm, km = n[m][fit_T], k[m][fit_T]
        km = np.where(nm >= b.min_count, km, 0)       # too few particles: leave the point out
        res = {"n": n[m], "k": k[m], "b_best": bb, "sigma_tr": st}
        res["fit"] = br.fit_barriers(pl.T[fit_T], km, nm, b.form)
        try:
            res["landscape"] = br.fit_landscape(centers, pl.T[fit_T], km, nm, b.form)
        except (ValueError, np.linalg.LinAlgError) as err:
            res["landscape"] = None
            ctx.log(f"  {m}: no landscape fit ({err})")
        ev = np.full(pl.P, np.nan)
        jsd = np.full(pl.P, np.nan)
        for p, (X, y) in ev_data.items():
            x = br.z_score(_outputs(model, X), bb, st)
            ev[p] = br.explained_variance_fraction(y, x, n_bins=20)
            xs = br.z_score(_outputs(models["svc"], X), *norm["svc"])
            jsd[p] = br.jensen_shannon(x, xs, bins=40)
        res["explained_variance"], res["jsd_vs_svc"] = ev, jsd
        results[m] = res
    return edges, results


def execute_softness(cfg, yaml_text, ctx, store_mode="auto", resume=False, overwrite=False):
    """Run the whole sweep and write the HDF5 file; returns a summary dict (also printed).
    ``resume``/``overwrite`` as for the propensity pipeline (:class:`glasshpc.store.Store`)."""
    import dataclasses
    import os

    import h5py

    from .store import Store
    from .md.accel import resolve_suffix
    t_start = time.perf_counter()
    cfg, suffix = resolve_suffix(cfg, ctx, resume=resume)   # before the store: part of the config
    pl = Plan(cfg)
    store = Store(cfg.output, ctx, pl.layout(), mode=store_mode, resume=resume,
                  overwrite=overwrite, config=dataclasses.asdict(cfg))
    engines = _Engines(cfg)
    wall = {}
    try:
        ctx.log(plan_text(cfg, ctx))
        wall["sweep_snapshots"] = sweep_snapshots(ctx, cfg, pl, store, engines)
        wall["trajectories"] = trajectories(ctx, cfg, pl, store, engines)
        if pl.C:
            wall["pr_replicas"] = pr_replicas(ctx, cfg, pl, store, engines)
        lmp_log = list(engines.engine.log) if engines.engine is not None else []
        if engines.engine is not None:
            engines.engine.close()
        t0 = time.perf_counter()
        fits = fit_models(ctx, cfg, pl, store)
        wall["models"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        t0 = time.perf_counter()
        edges, bars = barrier_stage(ctx, cfg, pl, store, fits)
        wall["barriers"] = ctx.comm.bcast(time.perf_counter() - t0, root=0)
        predictions = snapshot_predictions(ctx, pl, store, fits["models"])
        normals = {m: mod.coef_ for m, mod in fits["models"].items() if mod.coef_ is not None}
        normals.update({f"fluidity:T={T:g}": f.coef_ for T, f in fits["fluidity"].items()})
        dot_names, dots = sm.normal_dot_products(normals)
        ctx.log(report_text(pl, fits, edges, bars, dot_names, dots))
        lmp_log = next((log for log in ctx.comm.allgather(lmp_log) if log), [])
        wall["total"] = time.perf_counter() - t_start
        ctx.log("wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in wall.items()))
        species = get_model(cfg.model.name).species

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

        def extra(h5):
            g = h5.require_group("softness")
            g["temperatures"] = pl.T
            g["densities"] = [sp.density for sp in cfg.softness.state_points]
            g["snapshot_state"] = np.array([p for p, _ in pl.slots])
            g["measure_frames"] = pl.t0
            g.create_dataset("feature_names", data=pl.spec.feature_names(species),
                             dtype=h5py.string_dtype())
            g.attrs["species"] = cfg.softness.species
            g.attrs["training_temperature"] = pl.T[pl.train_state]
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
            g["training"].attrs["columns"] = "rearranging, non-rearranging (training T)"
            b = h5.create_group("barriers")
            b["edges"] = edges
            b["centers"] = 0.5 * (edges[1:] + edges[:-1])
            b["temperatures"] = pl.T
            b.attrs["form"] = cfg.softness.barriers.form
            b.attrs["fit_temperatures"] = pl.T[pl.T <= cfg.softness.barriers.max_temperature]
            for m, res in bars.items():
                mg = b.create_group(m)
                mg["n"], mg["k"] = res["n"], res["k"]
                fit = res["fit"]
                for key in ("sigma", "delta_e", "sigma_err", "delta_e_err", "chi2", "dof"):
                    mg[key] = getattr(fit, key)
                lg = res["landscape"]
                if lg is not None:
                    mg["landscape"], mg["landscape_cov"] = lg.params, lg.cov
                    mg.attrs["onset"], mg.attrs["onset_err"] = lg.onset, lg.onset_err
                    mg.attrs["chi2_dof"] = lg.chi2 / max(lg.dof, 1)
                mg["explained_variance"] = res["explained_variance"]
                mg["jsd_vs_svc"] = res["jsd_vs_svc"]
                mg.attrs["b_best"], mg.attrs["sigma_tr"] = res["b_best"], res["sigma_tr"]
            from .run import write_provenance
            write_provenance(h5, yaml_text, ctx, store, wall, lmp_log, species, suffix)

        store.finalize(extra)
        ctx.log(f"wrote {os.path.abspath(cfg.output)}")
        return {"fits": fits, "barriers": bars, "edges": edges, "dots": (dot_names, dots),
                "wall": wall}
    finally:
        store.close()


def report_text(pl, fits, edges, bars, dot_names, dots):
    """ΔE(x), Σ(x) per model, onset temperatures, dot products (what rank 0 prints)."""
    c = 0.5 * (edges[1:] + edges[:-1])
    lines = [f"softness: {int(fits['train'][1].sum())} + {int((~fits['train'][1]).sum())} "
             f"training examples at T = {pl.T[pl.train_state]:g}; SVC training accuracy "
             f"{fits['models']['svc'].train_accuracy_:.3f}"]
    if fits["heldout"]:
        lines.append("held-out Pearson with logit p_r: " + ", ".join(
            f"{m} {v:.3f}" for m, v in fits["heldout"].items()))
    for m, res in bars.items():
        f = res["fit"]
        lines.append(f"[{m}] x = (output − {res['b_best']:.3g})/{res['sigma_tr']:.3g}")
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
