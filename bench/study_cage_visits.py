"""Study: do k trial moves per particle visit sample r^CS as well as one? (issue 15; [CAGE] Eq. 10)

glasshpc.states.cage gives each particle k = moves_per_visit trial moves in a row (its neighbours'
coordinates gathered once per visit).  Every trial move is a Metropolis move, so the sampled
distribution is the same for any k; what could differ is the statistical efficiency per trial
move (k moves in a frozen neighbourhood).  Here C independent chains per k, all of the same
length E + M sweeps (N trial moves each) from r^init, are compared:

  ⟨Δr⟩        mean Δr^CS = |r^CS − r^init| per species, mean ± standard error over the C chains
  rms within  rms over particles of r^CS(chain a) − r^CS(chain b), pairs of chains of one k:
              the chain-to-chain noise at this length
  rms across  the same between chains of different k: equals "within" if k changes nothing
  ρ(t)        Pearson(Δr^CS of the C-chain mean, propensity) per species at the run's read-outs
              nearest to ``--times`` (in units of τ_α), with a run file
  CPU s       CPU seconds per chain

Reduced LJ units.  Snapshots: a finished run with propensity (``RUN.h5``, e.g. the KA demo), or
``--bench ka|hs`` for bench/bench_cage.py's N = 2000 snapshots (no propensity).

usage: python bench/study_cage_visits.py RUN.h5 [--snapshots 0 1] [--visits 1 4] [--chains 4]
                                         [--equil 300] [--measure 3000]
       python bench/study_cage_visits.py --bench hs [--snapshot-dir DIR] ...
"""
import argparse
import itertools
import os
import sys
import time

import numpy as np

from glasshpc.models import cage_potential, get_model
from glasshpc.states.cage import PairPotential, cage_state


def load_run(path, snapshots):
    import h5py

    from glasshpc import config
    with h5py.File(path, "r") as f:
        cfg = config.parse(f["provenance"].attrs["config_yaml"])
        sel = list(snapshots)
        d = dict(pos=f["snapshots/positions"][sel], types=f["snapshots/types"][sel].astype(np.int64),
                 box=f["snapshots/box"][sel], prop=f["propensity"][sel], times=f["iso/times"][()],
                 tau=float(np.asarray(f["dynamics"].attrs["tau_alpha"]).ravel()[0]))
    m = get_model(cfg.model.name)
    sig = m.sigma_self()
    c = cfg.cage
    kw = dict(cage=c.cage, cage_radius=c.radius * sig, cage_sigma=sig,
              target_acceptance=c.target_acceptance)
    return d, cage_potential(cfg.model.name), cfg.model.temperature, kw, m.species


def load_bench(kind, folder):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_cage
    if kind == "ka":
        pos, types, box = bench_cage.ka_snapshot(0.55, folder)
        pot, sig = bench_cage.ka_potential()
        T, species = 0.55, ("A", "B")
    else:
        pos, types, box = bench_cage.hs_snapshot(folder)
        pot, sig, T, species = PairPotential.hard_spheres(0.85), np.array([1.0, 0.85]), 1.0, \
            ("large", "small")
    d = dict(pos=pos[None], types=types[None], box=box[None])
    kw = dict(cage="voronoi", cage_radius=0.5 * sig, cage_sigma=sig, target_acceptance=0.3)
    return d, pot, T, kw, species


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="finished output with propensity (HDF5)")
    ap.add_argument("--bench", choices=("ka", "hs"), default=None)
    ap.add_argument("--snapshot-dir", default=None, help="bench_cage's snapshot cache")
    ap.add_argument("--snapshots", type=int, nargs="+", default=[0])
    ap.add_argument("--visits", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--equil", type=int, default=300)
    ap.add_argument("--measure", type=int, default=3000)
    ap.add_argument("--times", type=float, nargs="+", default=[0.03, 1.0],
                    help="read-outs for ρ, in units of τ_α")
    a = ap.parse_args()
    if (a.run is None) == (a.bench is None):
        ap.error("give a run file or --bench ka|hs")
    d, pot, T, kw, species = load_run(a.run, a.snapshots) if a.run else load_bench(
        a.bench, a.snapshot_dir)
    S = len(d["pos"])
    print(f"{S} snapshot(s), N = {d['pos'].shape[1]}, T = {T}, {a.chains} chains × "
          f"({a.equil} + {a.measure}) sweeps per k; load {os.getloadavg()[0]:.2f}", flush=True)
    cs, cpu = {}, {}
    cage_state(d["pos"][0], d["types"][0], d["box"][0], pot, T, 8, 8, seed=0, **kw)  # compile
    for k in a.visits:
        for s in range(S):
            for c in range(a.chains):
                t0 = time.process_time()
                r = cage_state(d["pos"][s], d["types"][s], d["box"][s], pot, T, a.equil, a.measure,
                               seed=1000 * s + c + 1, moves_per_visit=k, **kw)
                cpu.setdefault(k, []).append(time.process_time() - t0)
                cs[(k, s, c)] = r["positions"]
    nsp = len(species)
    for k in a.visits:
        print(f"\nk = {k}: {np.mean(cpu[k]):.1f} CPU s per chain "
              f"({(a.equil + a.measure) * d['pos'].shape[1] / np.mean(cpu[k]) / 1e6:.2f} M moves/s)")
        for sp in range(nsp):
            dr = [np.mean([np.linalg.norm(cs[(k, s, c)] - d["pos"][s], axis=1)[d["types"][s] == sp]
                           .mean() for s in range(S)]) for c in range(a.chains)]
            print(f"  {species[sp]:6s} ⟨Δr⟩ = {np.mean(dr):.4f} ± {np.std(dr, ddof=1) / np.sqrt(len(dr)):.4f}")

    def rms(x, y):
        return np.sqrt(np.mean(np.sum((x - y) ** 2, axis=1)))
    print("\nrms of r^CS differences (σ), mean over snapshots and chain pairs:")
    for k1, k2 in itertools.combinations_with_replacement(a.visits, 2):
        pairs = [(c1, c2) for c1 in range(a.chains) for c2 in range(a.chains)
                 if (c1 < c2 if k1 == k2 else c1 != c2)]
        v = [rms(cs[(k1, s, c1)], cs[(k2, s, c2)]) for s in range(S) for c1, c2 in pairs]
        print(f"  k = {k1} vs k = {k2}: {np.mean(v):.4f} ± {np.std(v, ddof=1) / np.sqrt(len(v)):.4f}"
              f"  ({'within' if k1 == k2 else 'across'})")
    if a.run:
        idx = [int(np.argmin(np.abs(d["times"] - x * d["tau"]))) for x in a.times]
        print("\nPearson(Δr^CS of the chain mean, propensity):")
        for k in a.visits:
            cells = []
            for sp in range(nsp):
                for j in idx:
                    x, y = [], []
                    for s in range(S):
                        m = np.mean([cs[(k, s, c)] for c in range(a.chains)], axis=0)
                        sel = d["types"][s] == sp
                        x.append(np.linalg.norm(m - d["pos"][s], axis=1)[sel])
                        y.append(d["prop"][s][j][sel])
                    cells.append(f"{species[sp]} t = {d['times'][j] / d['tau']:.2f} τ_α: "
                                 f"{np.corrcoef(np.concatenate(x), np.concatenate(y))[0, 1]:.3f}")
            print(f"  k = {k}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
