#!/usr/bin/env python
"""Plot held-out Pearson ρ vs the number of selected features (forward selection [AVG] or RFE [SOFT]).

    python tools/plot_selection.py OUTPUT.h5 [-o OUTPUT_selection.png] [--set NAME] [--times 0,5,9] [--top 10]
                                   [--state-point K]

Reads, for every feature set that has one, /fits/<set>/selection/{rho [n_species, T, K], names [n_species, T, K],
order} (written by glasshpc.learn.selection.write_selection; attr ``method``), /iso/times [T] and the file attr
``species``. One panel per (feature set, species); one line per read-out time (default: every time, coloured by
log t), with the full-model ρ of /fits/<set>/pearson as a dashed level when present. Prints the first ``--top``
feature names at the time of highest ρ. Times in τ (reduced LJ units). A sweep's file (``state_points:``) needs
``--state-point K`` (the same layout under /state_points/<K>/).
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from glasshpc.io.results import open_results  # noqa: E402


def read(h5, only=None, state_point=None):
    """{set: dict(rho, names, method, full)} for the feature sets with a selection group; times; species."""
    with open_results(h5, state_point, cli=True) as f:
        times = f["iso/times"][()] if "iso/times" in f else None
        species = [s.decode() if isinstance(s, bytes) else str(s) for s in f.attrs.get("species", [])]
        sets = {}
        for name in f.get("fits", {}):
            g = f[f"fits/{name}"]
            if not isinstance(g, h5py.Group) or "selection" not in g or (only and name != only):
                continue
            sel = g["selection"]
            sets[name] = dict(rho=sel["rho"][()], names=sel["names"].asstr()[()], method=sel.attrs["method"],
                              full=g["pearson"][()] if "pearson" in g else None)
    if not sets:
        raise SystemExit(f"{h5}: no /fits/<set>/selection group" + (f" for set {only!r}" if only else "")
                         + ": feature selection runs when the YAML sets fits.selection.method: forward "
                           "(or rfe), e.g. fits: {selection: {method: forward, max_features: 100}}")
    return sets, times, species


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("-o", "--output", help="PNG path (default: <h5 stem>_selection.png)")
    ap.add_argument("--set", help="only this feature set")
    ap.add_argument("--times", help="comma-separated time indices (default: all)")
    ap.add_argument("--top", type=int, default=10, help="feature names printed per panel")
    ap.add_argument("--state-point", type=int, default=None, metavar="K",
                    help="state point K of a sweep (state_points:)")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.h5)[0] + (
        "" if args.state_point is None else f"_sp{args.state_point}") + "_selection.png"
    sets, times, species = read(args.h5, args.set, args.state_point)
    panels = [(name, s) for name in sets for s in range(sets[name]["rho"].shape[0])]
    T = next(iter(sets.values()))["rho"].shape[1]
    tidx = [int(t) for t in args.times.split(",")] if args.times else list(range(T))
    if any(not 0 <= t < T for t in tidx):
        raise SystemExit(f"--times must lie in 0..{T - 1}")
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], panels):
        d = sets[name]
        rho = d["rho"][s]
        for i, t in enumerate(tidx):
            k = np.arange(1, rho.shape[1] + 1)
            ok = np.isfinite(rho[t])
            col = cmap(i / max(1, len(tidx) - 1))
            lab = f"t = {times[t]:.3g} τ" if times is not None else f"time {t}"
            ax.plot(k[ok], rho[t][ok], color=col, lw=1.2, label=lab if len(tidx) <= 8 or i in (0, len(tidx) - 1)
                    else None)
            if d["full"] is not None:
                ax.axhline(d["full"][s, t], color=col, lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("number of features")
        ax.set_ylabel(r"held-out Pearson $\rho$")
        sp = species[s] if s < len(species) else str(s)
        ax.set_title(f"{name}: species {sp} ({d['method']})")
        ax.legend(fontsize=7)
        best = int(np.nanargmax(np.nanmax(rho[tidx], axis=1)))
        t = tidx[best]
        top = [n for n in d["names"][s, t][:args.top] if n]
        print(f"{name} {sp} t-index {t}: first {len(top)} features: {', '.join(top)}")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
