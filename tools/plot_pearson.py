#!/usr/bin/env python
"""Plot held-out Pearson ρ(t) per feature set and species, and the mean propensity vs t.

    python tools/plot_pearson.py OUTPUT.h5 [-o OUTPUT_pearson.png]

One solid curve per feature set (/fits/<set>/pearson [n_species, T]), dashed curves for the
single-variable correlations of Δr^CS, Δr^IS, |F^net| with propensity (/fits/single/<name>
[n_species, T], [CAGE] Figs. 2, 5) and a last panel with the mean propensity per species
(/propensity [S, T, N], /snapshots/types [S, N]). The ballistic regime t < t_x (attr
/dynamics.ballistic_end [n_species], dynamics.ballistic_end) is shaded grey. Times in τ, lengths in
σ_AA (reduced LJ units).
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


SINGLE_LABELS = {"drcs": r"$\Delta r^{CS}$ alone", "dris": r"$\Delta r^{IS}$ alone",
                 "fnet": r"$|F^{net}|$ alone"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("-o", "--output", help="PNG path (default: <h5 stem>_pearson.png)")
    ap.add_argument("--state-point", type=int, default=None, metavar="K",
                    help="state point K of a sweep (state_points:)")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.h5)[0] + (
        "" if args.state_point is None else f"_sp{args.state_point}") + "_pearson.png"
    with open_results(args.h5, args.state_point, cli=True) as f:
        times = f["iso/times"][()]
        species = [s.decode() for s in f.attrs["species"]]
        fits = {name: f[f"fits/{name}/pearson"][()] for name, g in f["fits"].items()
                if name != "single" and isinstance(g, h5py.Group)}   # /fits/is_test: dataset
        single = {name: f[f"fits/single/{name}"][()] for name in f.get("fits/single", {})}
        prop = f["propensity"][()]
        types = f["snapshots/types"][()]
        tau = f["dynamics"].attrs.get("tau_alpha", [np.nan] * len(species))
        t_x = f["dynamics"].attrs.get("ballistic_end", [np.nan] * len(species))
        kind = f["dynamics"].attrs.get("propensity_kind", "abs")
    fig, axes = plt.subplots(1, len(species) + 1, figsize=(4.2 * (len(species) + 1), 4.6))
    for s, ax in enumerate(axes[:-1]):
        for name, rho in fits.items():
            ax.plot(times, rho[s], marker="o", ms=3, label=f"{name} (held-out)")
        for name, rho in single.items():
            if name in SINGLE_LABELS:
                ax.plot(times, rho[s], ls="--", lw=1.2, label=SINGLE_LABELS[name]
                        + " (all snapshots)")
        if np.isfinite(tau[s]):
            ax.axvline(tau[s], color="0.6", ls=":", label=r"$\tau_\alpha$")
        if np.isfinite(t_x[s]) and t_x[s] > times[0]:
            ax.axvspan(times[0], t_x[s], color="0.88", zorder=0,
                       label=rf"ballistic, $t < t_x$ = {t_x[s]:.3g} $\tau$")
        ax.set_xscale("log")
        ax.set_ylim(min(0.0, np.nanmin([r[s] for r in (*fits.values(), *single.values())])), 1.0)
        ax.set_xlabel(r"$t\ (\tau)$")
        # solid curves: ridge fits on held-out snapshots; dashed: no fit, every snapshot
        ax.set_ylabel(r"Pearson $\rho(t)$ with propensity")
        ax.set_title(f"species {species[s]}")
        # below the axes: the curves fill the upper half of the frame
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax = axes[-1]
    for s, name in enumerate(species):
        mean = np.array([prop[:, k][types == s].mean() for k in range(len(times))])
        ax.plot(times, mean, marker="o", ms=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$t\ (\tau)$")
    ax.set_ylabel(r"mean propensity $\langle|\Delta r|\rangle\ (\sigma)$" if kind == "abs"
                  else r"mean propensity $\langle|\Delta r|^2\rangle\ (\sigma^2)$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
