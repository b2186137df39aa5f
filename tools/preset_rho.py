#!/usr/bin/env python
"""Held-out Pearson ρ(t) of every descriptor preset on the snapshots and propensities of a glasshpc output file.

    python tools/preset_rho.py OUTPUT.h5 [--presets hs_cmp,ka_avg,melt_dw,softness_135] [--select forward|rfe]

For each preset (glasshpc.structure.descriptors.preset; n_species from the file, generations as in the paper,
r_c = the file's /descriptors r_generation except melt_dw's 2.5) the descriptors of every snapshot are computed,
ridge is fitted per species on the training snapshots of /fits (attrs train_snapshots, test_snapshots) with
grouped CV as in the pipeline (GroupedRidgeCV), and ρ(t) on the held-out snapshots is printed. With --select the
forward selection / RFE curve at the time of the best ρ is printed too. Serial; reduced LJ units (t in τ).
"""
import argparse
import time
import warnings

import h5py
import numpy as np

from glasshpc.learn.ridge import GroupedRidgeCV, pearson
from glasshpc.learn.selection import select_features
from glasshpc.structure.descriptors import PRESETS, compute_descriptors, feature_names, preset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--select", choices=("forward", "rfe"))
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args(argv)
    with h5py.File(args.h5, "r") as f:
        pos, types, box = f["snapshots/positions"][()], f["snapshots/types"][()], f["snapshots/box"][()]
        prop, times = f["propensity"][()], f["iso/times"][()]
        train, test = f["fits"].attrs["train_snapshots"], f["fits"].attrs["test_snapshots"]
        r_gen = float(f["descriptors"].attrs["r_generation"])
        species = [s.decode() for s in f.attrs["species"]]
    n_species = len(species)
    table = {}
    for name in args.presets.split(","):
        spec = preset(name, n_species=n_species, r_generation=2.5 if name == "melt_dw" else r_gen)
        t0 = time.perf_counter()
        X = np.stack([compute_descriptors(pos[s], types[s], box[s], spec) for s in range(len(pos))])
        t_desc = (time.perf_counter() - t0) / len(pos)
        names = feature_names(spec, species)
        for sp in range(n_species):
            def rows(ids):
                m = types[ids] == sp
                return (X[ids][m], prop[ids].transpose(0, 2, 1)[m], np.repeat(ids, m.sum(1)))
            Xtr, Ytr, gtr = rows(train)
            Xte, Yte, _ = rows(test)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                model = GroupedRidgeCV(alphas=np.logspace(-5, 7, 49), n_splits=args.folds).fit(Xtr, Ytr, gtr)
            rho = pearson(Yte, model.predict(Xte))
            table[(name, sp)] = rho
            k = int(np.nanargmax(rho))
            print(f"{name:13s} {species[sp]}: {spec.n_features:5d} features, {t_desc:.2f} s/config; "
                  f"max ρ = {rho[k]:.3f} at t = {times[k]:.3g} τ", flush=True)
            if args.select:
                sel = select_features(Xtr, Ytr[:, k], Xte, Yte[:, k], method=args.select, alpha=model.alpha_[k],
                                      max_features=200, names=names)
                ns = [n for n in (1, 2, 5, 10, 20, 50, 100, 200) if n <= sel.rho.shape[1]]
                print("   " + ", ".join(f"ρ({n}) = {sel.rho[0, n - 1]:.3f}" for n in ns) + f"; full {rho[k]:.3f}")
                print("   first features: " + ", ".join(sel.names[0][:8]))
    cols = list(table)
    print(f"{'t (τ)':>9s} " + " ".join(f"{n[:8] + ':' + species[s]:>11s}" for n, s in cols))
    for i, t in enumerate(times):
        print(f"{t:9.3g} " + " ".join(f"{table[c][i]:11.3f}" for c in cols))


if __name__ == "__main__":
    main()
