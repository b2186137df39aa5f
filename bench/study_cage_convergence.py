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

Reduced LJ units. Machine shared: the figures are statistics, not speeds.

usage: python bench/study_cage_convergence.py RUN.h5 [--snapshots 0 1] [--chains 4]
           [--sweeps 20000] [--every 10] [--out study.npz]        (MC; then the table)
       python bench/study_cage_convergence.py RUN.h5 --table a.npz b.npz   (merge, table only)
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


def run_chains(cfg, d, s, K, sweeps, every, tune, seed0, long=None):
    """[(csum, qsum)] of K chains: csum (n_rec + 1, N, 3) prefix sums of the recorded
    displacements from r^init, qsum (n_rec + 1, N) prefix sums of their coordinate-mean squares.
    Chain 0 measures ``long`` sweeps (default ``sweeps``; the 1×KM estimator), chains 1..K-1
    ``sweeps``."""
    m = get_model(cfg.model.name)
    sig = m.sigma_self()
    c = cfg.cage
    out = []
    for k in range(K):
        n = (long or sweeps) if k == 0 else sweeps
        t0 = time.perf_counter()
        r = cage_state(d["pos"][s], d["types"][s], d["box"][s], cage_potential(cfg.model.name),
                       cfg.model.temperature, tune, n, seed0 + 1000 * s + k, cage=c.cage,
                       cage_radius=c.radius * sig, cage_sigma=sig,
                       target_acceptance=c.target_acceptance, record_every=every)
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
    keys = sorted(results[snaps[0]])
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
            w0 = results[snaps[0]][(E, M)]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="finished output with propensity (HDF5)")
    ap.add_argument("--snapshots", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sweeps", type=int, default=20000,
                    help="measurement sweeps of chains 1..K-1 (and of chain 0 without --long)")
    ap.add_argument("--long", type=int, default=None,
                    help="measurement sweeps of chain 0 (1×KM windows up to E + K·M ≤ long)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--tune", type=int, default=100, help="step-tuning sweeps before E = 0")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", default=None, help="save the window means (npz)")
    ap.add_argument("--table", nargs="+", default=None, help="only merge saved npz and print")
    a = ap.parse_args()
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
            chains = run_chains(cfg, d, s, K, a.sweeps, a.every, a.tune, a.seed, a.long)
            results[s] = analyse(chains, a.every, a.sweeps, K, a.long)
            del chains
            if a.out:   # after every snapshot: a stopped study keeps what it did
                np.savez(a.out, results=np.array(results, dtype=object), K=K)
        if a.out:
            np.savez(a.out, results=np.array(results, dtype=object), K=K)
    table(d, results, sorted(results), K, species)


if __name__ == "__main__":
    main()
