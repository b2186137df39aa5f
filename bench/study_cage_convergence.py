"""Study: how long must the cage-state MC run? (issue 15; [CAGE] Eq. 10, SCIENCE.md §3)

On a finished run with propensity (e.g. the KA demo, reduced), for each snapshot K independent
chains of ``--sweeps`` measurement sweeps are run after ``--tune`` step-tuning sweeps, recording
the configuration every ``--every`` sweeps. Every (equilibration E, measurement M) window of the
table is then an average over the recorded configurations of sweeps [tune + E, tune + E + M) of
the same trajectories (nested windows: the rows differ by the window only, not by the noise of
a new chain). Columns, per species (pooled over the snapshots studied):

  ⟨Δr⟩       mean Δr^CS = |r^CS − r^init| of one chain (chain 0), σ
  ρ(t)       Pearson(Δr^CS, propensity) at read-outs in the caging regime and near τ_α
  R̂          median split-R̂ across the 2K half-windows of the K chains (states.chains.split_rhat,
             within-half variances from the recorded samples)
  1×KM / K×M the same ρ for one chain measuring K·M sweeps against the mean of K chains measuring
             M sweeps each after the same E (equal measurement cost; the K chains pay K·E
             equilibration sweeps)

With ``--long L`` chain 0 measures L sweeps (the others ``--sweeps``), so the 1×KM windows reach
E + K·M ≤ L at the cost of one long chain.

``--ridge`` (needs the windows of every snapshot of the run: merge the per-process npz with
``--table``): the {X^init, X^CS, Δr^CS} ridge ρ(t) of the pipeline — glasshpc.learn.fits
.fit_propensity itself (serial), the run's own train/test split, CV folds and α rule, Pearson
pooled over the held-out snapshots — with r^CS of every snapshot from one (E, M) window and
estimator: K×M, 1×KM, and the single chain where M ≥ 10 000 or (E, M) = (300, 3000)
(RIDGE_E × RIDGE_M, --ridge-E/-M).
X^CS by glasshpc.structure.descriptors.compute_descriptors with the run's DescriptorSpec
(stages.descriptor_spec at the run's stored r_generation; X^init is the run's, checked against a
recomputation), Δr^CS = |r^CS − r^init| as the cage stage writes it. Also printed: ρ of X^init alone
(no cage state: the baseline) and of the run's own r^CS (checked against the run's stored fits).
--ridge-part I N computes every N-th row (N processes); the table merges their npz.

Reduced LJ units. Machine shared: the figures are statistics, not speeds.

usage: python bench/study_cage_convergence.py RUN.h5 [--snapshots 0 1] [--chains 4]
           [--sweeps 20000] [--long 60000] [--every 20] [--moves-per-visit 4]
           [--out study.npz]                                            (MC; then the table)
       python bench/study_cage_convergence.py RUN.h5 --table a.npz b.npz   (merge, table only)
       python bench/study_cage_convergence.py RUN.h5 --table a.npz b.npz --ridge r.npz
           [--ridge-part 0 2]                       (+ the ridge; r.npz r2.npz: merge and print)
Cluster (T = 0.44): jobs/study_cage_t044.sh.
"""
import argparse
import time

import h5py
import numpy as np

from glasshpc import config
from glasshpc.models import cage_potential, get_model
from glasshpc.states.cage import cage_state
from glasshpc.states.chains import split_rhat

E_GRID = (0, 100, 300, 1000, 3000, 10000)
M_GRID = (100, 300, 1000, 3000, 10000, 15000, 30000, 100000)


def load(path):
    with h5py.File(path, "r") as f:
        cfg = config.parse(f["provenance"].attrs["config_yaml"])
        d = dict(pos=f["snapshots/positions"][()], types=f["snapshots/types"][()].astype(np.int64),
                 box=f["snapshots/box"][()], prop=f["propensity"][()], times=f["iso/times"][()],
                 tau=np.asarray(f["dynamics"].attrs["tau_alpha"]))
    return cfg, d


def run_chains(cfg, d, s, K, sweeps, every, tune, seed0, long=None, visit=None):
    """[(csum, qsum)] of K chains: csum (n_rec + 1, N, 3) prefix sums of the recorded
    displacements from r^init, qsum (n_rec + 1, N) prefix sums of their coordinate-mean squares.
    Chain 0 measures ``long`` sweeps (default ``sweeps``; the 1×KM estimator), chains 1..K-1
    ``sweeps``; ``visit``: trial moves per particle visit (default the run's
    cage.moves_per_visit)."""
    m = get_model(cfg.model.name)
    sig = m.sigma_self()
    c = cfg.cage
    out = []
    for k in range(K if sweeps > 0 else 1):   # --sweeps 0: chain 0 only (the 1×KM windows)
        n = (long or sweeps) if k == 0 else sweeps
        t0 = time.perf_counter()
        r = cage_state(d["pos"][s], d["types"][s], d["box"][s], cage_potential(cfg.model.name),
                       cfg.model.temperature, tune, n, seed0 + 1000 * s + k, cage=c.cage,
                       cage_radius=c.radius * sig, cage_sigma=sig,
                       target_acceptance=c.target_acceptance, record_every=every,
                       moves_per_visit=visit or c.moves_per_visit)
        smp = r["samples"] - d["pos"][s][None]
        z = np.zeros((1,) + smp.shape[1:])
        out.append((np.concatenate([z, np.cumsum(smp, axis=0)]),
                    np.concatenate([z[..., 0], np.cumsum((smp ** 2).mean(axis=2), axis=0)])))
        del r, smp
        print(f"  snapshot {s} chain {k}: {tune} + {n} sweeps in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return out


def windows(sweeps, every, long=None):
    """(E, M) of the grid that chain 0 covers (E + M ≤ long) with ≥ 10 records."""
    return [(E, M) for E in E_GRID for M in M_GRID
            if E + M <= (long or sweeps) and M >= 10 * every]


def analyse(chains, every, sweeps, K, long=None):
    """{(E, M): dict} of window means of the displacement from r^init (r^CS − r^init): single
    (N, 3) chain 0 over [E, E+M); kmean (N, 3) the mean of the K chains over [E, E+M) and rhat
    (N,) their split-R̂ (if E + M ≤ sweeps); long (N, 3) chain 0 over [E, E+K·M) (if it fits)."""
    res = {}
    for E, M in windows(sweeps, every, long):
        a, b = E // every, (E + M) // every
        n = b - a
        c0 = chains[0][0]
        r = dict(single=(c0[b] - c0[a]) / n)
        if E + M <= sweeps:
            csum = np.stack([c[:b + 1] for c, _ in chains])
            qsum = np.stack([q[:b + 1] for _, q in chains])
            h = n // 2
            win = (csum[:, b] - csum[:, a]) / n                                   # (K, N, 3)
            halves = np.stack([(csum[:, a + h] - csum[:, a]) / h,
                               (csum[:, b] - csum[:, a + h]) / (n - h)], axis=1)  # (K, 2, N, 3)
            var = []
            for lo, hi, hm in ((a, a + h, halves[:, 0]), (a + h, b, halves[:, 1])):
                cnt = hi - lo
                var.append(((qsum[:, hi] - qsum[:, lo]) - cnt * (hm ** 2).mean(axis=2))
                           / (cnt - 1))
            r["kmean"] = win.mean(axis=0)
            r["rhat"] = split_rhat(halves, np.stack(var, axis=1), n / 2)
            del csum, qsum
        bl = (E + K * M) // every
        if bl < c0.shape[0]:
            r["long"] = (c0[bl] - c0[a]) / (bl - a)
        res[(E, M)] = r
    return res


def pearson(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def table(d, results, snaps, K, species):
    times = d["times"]
    picks = [int(np.argmin(np.abs(np.log(times / t)))) for t in (0.5, 3.0)]
    tau = d["tau"][0] if np.isfinite(d["tau"][0]) else times[-1]
    picks.append(int(np.argmin(np.abs(np.log(times / tau)))))
    tnames = [f"{times[i]:.3g}" for i in picks]
    keys = sorted(set.intersection(*(set(results[s]) for s in snaps)))   # windows all have
    for sp, name in enumerate(species):
        print(f"\nspecies {name}: ρ = Pearson(Δr^CS, propensity) at t = {', '.join(tnames)} τ "
              f"(τ_α ≈ {tau:.3g} τ); {len(snaps)} snapshots pooled; K = {K}")
        print(f"{'E':>6} {'M':>7} {'<dr>':>7} " + " ".join(f"ρ1({t:>5})" for t in tnames)
              + f" {'R̂med':>6} " + " ".join(f"1×KM({t:>5}) K×M({t:>5})" for t in tnames[1:]))
        for E, M in keys:
            def dr(kind):
                return np.concatenate([np.linalg.norm(results[s][(E, M)][kind], axis=1)
                                       [d["types"][s] == sp] for s in snaps])

            def prop(i):
                return np.concatenate([d["prop"][s, i][d["types"][s] == sp] for s in snaps])

            one = dr("single")
            w0 = set.intersection(*(set(results[s][(E, M)]) for s in snaps))   # estimators
            rh = (np.concatenate([results[s][(E, M)]["rhat"][d["types"][s] == sp] for s in snaps])
                  if "rhat" in w0 else np.full(1, np.nan))
            line = f"{E:6d} {M:7d} {one.mean():7.4f} " + " ".join(
                f"{pearson(one, prop(i)):9.3f}" for i in picks) + f" {np.nanmedian(rh):6.3f} "
            lg = dr("long") if "long" in w0 else None
            km = dr("kmean") if "kmean" in w0 else None
            line += " ".join(
                (f"{pearson(lg, prop(i)):11.3f}" if lg is not None else f"{'':>11}") + " "
                + (f"{pearson(km, prop(i)):10.3f}" if km is not None else f"{'':>10}")
                for i in picks[1:])
            print(line, flush=True)


# ---- the pipeline's ridge on the window estimates ------------------------------------------------
RIDGE_E = (0, 300, 3000)
RIDGE_M = (300, 1000, 3000, 10000, 30000)
ESTIMATORS = (("single", "1×M"), ("long", "1×KM"), ("kmean", "K×M"))
SETS = ("init", "init+cs+drcs")


class ArrayStore:
    """The two calls fit_propensity makes on a run's store — read(name, (s,)) and write — on
    in-memory arrays {name: (S, ...) array}; writes (the predictions) are dropped."""

    def __init__(self, arrays):
        self.arrays = arrays

    def read(self, name, index):
        return self.arrays[name][index]

    def write(self, name, index, value):
        pass


def ridge_setup(path, cfg, d):
    """(fit config, DescriptorSpec, descriptor names, X^init (S, N, F)) of the run: the run's
    r_generation and its 'init' and 'init+cs+drcs' feature sets (the pipeline's split, folds and
    α rule), the MLP / GNN baselines and feature selection off."""
    import dataclasses

    from glasshpc import stages
    from glasshpc.config import GNNConfig, MLPConfig, SelectionConfig
    from glasshpc.structure.descriptors import compute_descriptors

    missing = [k for k in SETS if k not in cfg.fits.feature_sets]
    if missing:
        raise SystemExit(f"the run has no feature set {missing}: the ridge columns need "
                         f"fits.feature_sets {SETS}")
    fcfg = dataclasses.replace(cfg, fits=dataclasses.replace(
        cfg.fits, feature_sets={k: cfg.fits.feature_sets[k] for k in SETS}, mlp=MLPConfig(),
        gnn=GNNConfig(), selection=SelectionConfig()))
    with h5py.File(path, "r") as f:
        r_gen = float(f["descriptors"].attrs["r_generation"])
        x_init = f["descriptors/init"][()] if "descriptors/init" in f else None
    spec = stages.descriptor_spec(cfg, r_gen)
    names = spec.feature_names(get_model(cfg.model.name).species)
    if x_init is None:
        x_init = np.stack([compute_descriptors(d["pos"][s], d["types"][s], d["box"][s], spec)
                           for s in range(d["pos"].shape[0])])
    else:   # the stored X^init must be what this spec computes: same descriptors as the run
        x0 = compute_descriptors(d["pos"][0], d["types"][0], d["box"][0], spec)
        err = float(np.max(np.abs(x0 - x_init[0])))
        print(f"X^init of snapshot 0 recomputed: max |Δ| = {err:.2e} against the run's", flush=True)
        if err > 1e-8:
            raise SystemExit("the run's descriptors differ from this spec: not the same features")
    return fcfg, spec, names, x_init


def ridge_rho(fcfg, spec, names, x_init, d, disp, sets=SETS):
    """{set: FitResult} of the pipeline's fit (glasshpc.learn.fits.fit_propensity, serial) with
    r^CS = r^init + disp[s] for every snapshot s (disp: (S, N, 3) mean displacement of a window);
    X^CS by glasshpc's compute_descriptors, Δr^CS = |r^CS − r^init| as the cage stage writes it."""
    from mpi4py import MPI

    from glasshpc.learn.fits import fit_propensity
    from glasshpc.parallel import Context
    from glasshpc.structure.descriptors import compute_descriptors

    S = d["pos"].shape[0]
    x_cs = np.stack([compute_descriptors(d["pos"][s] + disp[s], d["types"][s], d["box"][s], spec)
                     for s in range(S)])
    store = ArrayStore({"snapshots/types": d["types"], "propensity": d["prop"],
                        "descriptors/init": x_init, "descriptors/cs": x_cs,
                        "states/cage/displacement": np.linalg.norm(disp, axis=2)})
    import dataclasses
    import warnings
    fcfg = dataclasses.replace(fcfg, fits=dataclasses.replace(
        fcfg.fits, feature_sets={k: fcfg.fits.feature_sets[k] for k in sets}))
    with warnings.catch_warnings():   # α-grid edge notes at the earliest read-outs (no signal)
        warnings.simplefilter("ignore", RuntimeWarning)
        res, _, _ = fit_propensity(Context(MPI.COMM_SELF), fcfg, store, names,
                                   len(get_model(fcfg.model.name).species))
    return res


DEFAULT_WINDOW = (300, 3000)   # inputs/ka_demo.yaml: chains × (300 + 3000) sweeps


def ridge_keys(results, K):
    """(E, M, estimator) of the ridge, every snapshot having the window: the K×M and 1×KM
    estimators of the RIDGE_E × RIDGE_M windows, and the single chain where M ≥ 10 000 (the
    longest chains) and at the demo default (one chain of its length); the demo default first, so
    a stopped study has the key rows."""
    keys = []
    for E in RIDGE_E:
        for M in RIDGE_M:
            for kind, _ in ESTIMATORS:
                if kind == "single" and M < 10000 and (E, M) != DEFAULT_WINDOW:
                    continue
                if all(kind in r.get((E, M), {}) for r in results.values()):
                    keys.append((E, M, kind))
    return sorted(keys, key=lambda k: (k[:2] != DEFAULT_WINDOW, k[0], k[1]))


def ridge_study(path, cfg, d, results, K, out=None, part=(0, 1)):
    """{key: (n_species, T) held-out pooled ρ of 'init+cs+drcs'} for the keys of
    :func:`ridge_keys` (``part`` = (i, n): every n-th key from the i-th, for n processes), plus
    'init' (the chain-independent baseline) and 'run' (the run's own r^CS, checked against the
    run's stored fits). Needs the windows of every snapshot of the run."""
    import os
    os.environ.setdefault("GLASSHPC_PROGRESS_SECONDS", "1e9")   # no fit progress lines
    S = d["pos"].shape[0]
    if sorted(results) != list(range(S)):
        raise SystemExit(f"the ridge needs every snapshot 0..{S - 1}; have {sorted(results)}")
    fcfg, spec, names, x_init = ridge_setup(path, cfg, d)
    rho = {}
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        run_cs = f["states/cage/positions"][()] if "states/cage/positions" in f else None
        stored = f["fits/init+cs+drcs/pearson"][()] if "fits/init+cs+drcs/pearson" in f else None
    if part[0] == 0 and run_cs is not None:
        res = ridge_rho(fcfg, spec, names, x_init, d, run_cs - d["pos"], SETS)
        rho["init"] = res["init"].pearson
        rho["run"] = res["init+cs+drcs"].pearson
        if stored is not None:   # the same r^CS through the same code: the run's own figures
            print(f"ridge on the run's r^CS: max |Δρ| = "
                  f"{np.nanmax(np.abs(rho['run'] - stored)):.2e} against the run's fits", flush=True)
    for key in ridge_keys(results, K)[part[0]::part[1]]:
        E, M, kind = key
        disp = np.stack([results[s][(E, M)][kind] for s in range(S)])
        sets = SETS if "init" not in rho else SETS[1:]
        res = ridge_rho(fcfg, spec, names, x_init, d, disp, sets)
        rho[key] = res["init+cs+drcs"].pearson
        if "init" in res:
            rho["init"] = res["init"].pearson
        print(f"  ridge E = {E}, M = {M}, {kind}: {time.perf_counter() - t0:.0f} s", flush=True)
        if out:
            np.savez(out, rho=np.array(rho, dtype=object), K=K)
    return rho


def ridge_table(d, rho, K, species, run_label=""):
    times = d["times"]
    picks = [int(np.argmin(np.abs(np.log(times / t)))) for t in (0.5, 3.0)]
    tau = d["tau"][0] if np.isfinite(d["tau"][0]) else times[-1]
    picks.append(int(np.argmin(np.abs(np.log(times / tau)))))
    tn = [f"{times[i]:.3g}" for i in picks]
    for sp, name in enumerate(species):
        print(f"\nspecies {name}: ridge ρ(t) of init+cs+drcs (pipeline fit, held-out snapshots "
              f"pooled) at t = {', '.join(tn)} τ (τ_α ≈ {tau:.3g} τ); K = {K}")
        print("  init alone (no cage state):  " + " ".join(f"{rho['init'][sp, i]:6.3f}"
                                                         for i in picks))
        if "run" in rho:
            print(f"  the run's own r^CS{run_label}: " + " ".join(f"{rho['run'][sp, i]:6.3f}"
                                                             for i in picks))
        print(f"{'E':>6} {'M':>6} " + "  ".join(f"{lab + ' (' + ', '.join(tn) + ')':>26}"
                                                 for _, lab in ESTIMATORS))
        for E in RIDGE_E:
            for M in RIDGE_M:
                cells = []
                for kind, _ in ESTIMATORS:
                    r = rho.get((E, M, kind))
                    cells.append(" ".join(f"{r[sp, i]:8.3f}" for i in picks) if r is not None
                                 else " " * 26)
                if any(c.strip() for c in cells):
                    print(f"{E:6d} {M:6d} " + "  ".join(cells))


def main():
    global RIDGE_E, RIDGE_M
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="finished output with propensity (HDF5)")
    ap.add_argument("--snapshots", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sweeps", type=int, default=20000,
                    help="measurement sweeps of chains 1..K-1 (and of chain 0 without --long); "
                         "0 with --long: chain 0 only (its single and 1×KM windows)")
    ap.add_argument("--long", type=int, default=None,
                    help="measurement sweeps of chain 0 (1×KM windows up to E + K·M ≤ long)")
    ap.add_argument("--every", type=int, default=20,
                    help="record every this many sweeps (a multiple of the moves per visit)")
    ap.add_argument("--moves-per-visit", type=int, default=None,
                    help="trial moves per particle visit (default: the run's cage setting)")
    ap.add_argument("--tune", type=int, default=100, help="step-tuning sweeps before E = 0")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", default=None, help="save the window means (npz)")
    ap.add_argument("--table", nargs="+", default=None, help="only merge saved npz and print")
    ap.add_argument("--ridge", nargs="+", default=None, metavar="NPZ",
                    help="also the pipeline's ridge ρ of init+cs+drcs per (E, M) window and "
                         "estimator (needs every snapshot): computed and saved to NPZ, or, "
                         "if the files exist, merged from them and printed")
    ap.add_argument("--ridge-E", type=int, nargs="+", default=list(RIDGE_E),
                    help="equilibration sweeps of the ridge rows")
    ap.add_argument("--ridge-M", type=int, nargs="+", default=list(RIDGE_M),
                    help="measurement sweeps of the ridge rows")
    ap.add_argument("--ridge-part", type=int, nargs=2, default=(0, 1), metavar=("I", "N"),
                    help="compute every N-th ridge row from the I-th (N processes)")
    a = ap.parse_args()
    RIDGE_E, RIDGE_M = tuple(a.ridge_E), tuple(a.ridge_M)
    cfg, d = load(a.run)
    species = get_model(cfg.model.name).species
    results = {}
    if a.table:
        for p in a.table:
            z = np.load(p, allow_pickle=True)
            results.update(z["results"].item())
            K = int(z["K"])
    else:
        K = a.chains
        print(f"{cfg.model.name} N = {cfg.model.n_particles}, T = {cfg.model.temperature}, "
              f"cage {cfg.cage.cage}; {K} chains × ({a.tune} + {a.sweeps}) sweeps per snapshot "
              f"(chain 0: {a.tune} + {a.long or a.sweeps}), "
              f"recorded every {a.every}", flush=True)
        for s in a.snapshots:
            chains = run_chains(cfg, d, s, K, a.sweeps, a.every, a.tune, a.seed, a.long,
                                a.moves_per_visit)
            results[s] = analyse(chains, a.every, a.sweeps, K, a.long)
            del chains
            if a.out:   # after every snapshot: a stopped study keeps what it did
                np.savez(a.out, results=np.array(results, dtype=object), K=K)
        if a.out:
            np.savez(a.out, results=np.array(results, dtype=object), K=K)
    table(d, results, sorted(results), K, species)
    if a.ridge:
        import os
        if all(os.path.exists(p) for p in a.ridge):
            rho = {}
            for p in a.ridge:
                rho.update(np.load(p, allow_pickle=True)["rho"].item())
        else:
            rho = ridge_study(a.run, cfg, d, results, K, a.ridge[0], tuple(a.ridge_part))
        run = f" ({cfg.cage.chains} × ({cfg.cage.equilibration_sweeps} + " \
              f"{cfg.cage.measurement_sweeps}))"
        ridge_table(d, rho, K, species, run)


if __name__ == "__main__":
    main()
