#!/usr/bin/env python
"""Plot the dynamics of a run: F_s(q,t), the MSD and the four-point susceptibility χ₄(t) per species.

    python tools/plot_dynamics.py OUTPUT.h5 [--set NAME] [-o OUTPUT_dynamics.png]

Reads /iso/times [T], /dynamics/fs_mean and msd_mean [n_species, T] (attrs ``q``, ``tau_alpha``,
``ballistic_end`` [n_species]), /dynamics/chi4_fs and chi4_propensity [n_species, T] (attrs
``chi4_threshold``, ``definition``; glasshpc.dynamics.chi4_fs / chi4_propensity, [DW] Eq. 8) and the
file attr ``species``; with ``--set`` also /fits/<set>/prediction [S, T, N] and /snapshots/types, whose
χ₄ (same probe length a_s, same formula) is drawn beside the measured one as in [DW] Fig. 6.
Panels: (a) F_s(q,t) with the 1/e level, (b) MSD with the ballistic 3Tt² and the end of the
ballistic regime t_x, (c) χ₄ of F_s (solid) and of the propensity (dashed). τ_α of each species is
marked by a dotted line of its colour. Times in τ, lengths in σ_AA (reduced LJ units).
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
from glasshpc.dynamics import chi4_propensity  # noqa: E402
from glasshpc.io.results import open_results  # noqa: E402

COLORS = ("#1f5fa8", "#d1495b", "#3c9d5d", "#8a5ac8")


def read(path, fit_set=None, state_point=None):
    """Everything the figure needs, as a dict. Raises SystemExit with a one-line hint for files
    without the datasets (a softness sweep, or a run made before χ₄ was stored)."""
    with open_results(path, state_point, cli=True) as f:
        if "dynamics/fs_mean" not in f:
            raise SystemExit(f"{path}: no /dynamics/fs_mean — not the output of a propensity run "
                             "(softness sweeps: tools/plot_barriers.py)")
        d = f["dynamics"]
        out = {"times": f["iso/times"][()], "fs": d["fs_mean"][()], "msd": d["msd_mean"][()],
               "species": [s.decode() if isinstance(s, bytes) else str(s)
                           for s in f.attrs["species"]],
               "q": float(d.attrs["q"]), "tau": np.asarray(d.attrs["tau_alpha"], float),
               "t_x": np.asarray(d.attrs.get("ballistic_end", [np.nan] * len(d["fs_mean"])),
                                 float),
               "chi4_fs": d["chi4_fs"][()] if "chi4_fs" in d else None,
               "chi4_prop": d["chi4_propensity"][()] if "chi4_propensity" in d else None,
               "threshold": np.asarray(d.attrs.get("chi4_threshold", []), float),
               "temperature": None, "chi4_pred": None}
        if out["chi4_fs"] is None:
            print(f"{path}: no /dynamics/chi4_fs (made before χ₄ was stored): panel (c) left "
                  "empty", file=sys.stderr)
        if fit_set is not None:
            path_pred = f"fits/{fit_set}/prediction"
            if path_pred not in f:
                have = [n for n in f.get("fits", {}) if f"fits/{n}/prediction" in f]
                raise SystemExit(f"{path}: no /{path_pred} (feature sets with predictions: "
                                 f"{', '.join(have) or 'none'})")
            out["chi4_pred"] = chi4_propensity(f[path_pred][()], f["snapshots/types"][()],
                                               out["threshold"], len(out["species"]))
        import yaml
        try:
            cfg = yaml.safe_load(f["provenance"].attrs["config_yaml"])
            out["temperature"] = float(cfg["model"]["temperature"])
        except (KeyError, TypeError, ValueError, yaml.YAMLError):
            pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("--set", dest="fit_set", help="also χ₄ of this feature set's predictions")
    ap.add_argument("-o", "--output", help="PNG path (default: <h5 stem>_dynamics.png)")
    ap.add_argument("--state-point", type=int, default=None, metavar="K",
                    help="state point K of a sweep (state_points:)")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.h5)[0] + (
        "" if args.state_point is None else f"_sp{args.state_point}") + "_dynamics.png"
    d = read(args.h5, args.fit_set, args.state_point)
    t = d["times"]
    plt.rcParams.update({"font.size": 9, "axes.linewidth": 0.8})
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.5))
    for s, name in enumerate(d["species"]):
        c = COLORS[s % len(COLORS)]
        axes[0].plot(t, d["fs"][s], "o-", color=c, ms=3, lw=1.2, label=name)
        axes[1].plot(t, d["msd"][s], "o-", color=c, ms=3, lw=1.2, label=name)
        if d["chi4_fs"] is not None:
            axes[2].plot(t, d["chi4_fs"][s], "o-", color=c, ms=3, lw=1.2,
                         label=rf"{name}: $\chi_4$ of $F_s$")
            axes[2].plot(t, d["chi4_prop"][s], "s--", color=c, ms=3, lw=1.0, mfc="white",
                         label=rf"{name}: $\chi_4$ of propensity, $a$ = {d['threshold'][s]:.3g}")
        if d["chi4_pred"] is not None:
            axes[2].plot(t, d["chi4_pred"][s], ":", color=c, lw=1.6,
                         label=rf"{name}: $\chi_4$ of {args.fit_set} prediction")
        if np.isfinite(d["tau"][s]):
            for ax in axes:
                ax.axvline(d["tau"][s], color=c, ls=":", lw=0.9, zorder=0)
        label = (rf"$\tau_\alpha^{{{name}}}$ = {d['tau'][s]:.3g} $\tau$" if np.isfinite(d["tau"][s])
                 else rf"$\tau_\alpha^{{{name}}} > {t[-1]:.3g}\ \tau$")   # F_s stays above 1/e
        axes[0].text(0.97, 0.95 - 0.08 * s, label, transform=axes[0].transAxes, ha="right",
                     va="top", color=c, fontsize=8)
        if np.isfinite(d["t_x"][s]):
            y = np.exp(np.interp(np.log(d["t_x"][s]), np.log(t), np.log(d["msd"][s])))
            axes[1].plot(d["t_x"][s], y, "v", color=c, ms=7, mfc="white",
                label=rf"$t_x^{{{name}}}$ = {d['t_x'][s]:.2g} (end of ballistic)")
    axes[0].axhline(np.exp(-1), color="0.5", lw=0.8, ls="--")
    axes[0].text(t[0], np.exp(-1) + 0.02, "1/e", color="0.4", fontsize=8)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel(rf"$F_s(q, t)$, $q$ = {d['q']:.3g} $\sigma^{{-1}}$")
    axes[0].set_title("(a) self-intermediate scattering", fontsize=9)
    if d["temperature"]:
        tb = np.geomspace(t[0], t[min(len(t) - 1, np.searchsorted(t, 0.5))], 20)
        axes[1].plot(tb, 3 * d["temperature"] * tb ** 2, color="0.5", lw=0.8, ls="--",
                     label=r"ballistic $3Tt^2$")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(r"MSD $\langle|\Delta r|^2\rangle$ ($\sigma^2$)")
    axes[1].set_title("(b) mean squared displacement", fontsize=9)
    axes[2].set_ylabel(r"$\chi_4(t)$")
    axes[2].set_title(r"(c) four-point susceptibility", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(r"$t$ ($\tau$)")
        ax.tick_params(direction="in", which="both", top=True, right=True)
    axes[0].legend(fontsize=8, frameon=False, loc="lower left")
    axes[1].legend(fontsize=7, frameon=False, loc="upper left")
    axes[2].legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=200)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
