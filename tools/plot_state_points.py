#!/usr/bin/env python
"""Plot a state-point sweep: τ_α against 1/T (or against η for hard spheres at one temperature) and
the held-out Pearson ρ(t) of the propensity fits at every state point.

    python tools/plot_state_points.py OUTPUT.h5 [--set NAME ...] [--species A] [-o OUTPUT_sweep.png]

Reads /sweep (glasshpc.run.sweep_arrays): ``temperature``, ``density``, ``packing_fraction`` [P],
``tau_alpha`` [P, n_species] (NaN where F_s does not cross 1/e inside the read-outs; attr
``tau_alpha_text`` says which bound), ``times`` [P, T_max] (NaN-padded), ``pearson/<set>``
[P, n_species, T_max], optionally ``drcs_mean`` [P, n_species] and ``transfer_pearson/<set>``
[P, n_species, T] (attr ``train_state_point``, drawn dashed); and attr ``species``. Panels:
(a) τ_α per species on a log axis against 1/T (Arrhenius plot; against η when every state point has
the same T), (b…) ρ(t) of each feature set, one curve per state point coloured from hot (red) to cold
(blue); with cage states a last panel ⟨Δr^CS⟩ per species. Times in τ, reduced LJ units.
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ("#1f5fa8", "#d1495b", "#3c9d5d", "#8a5ac8")


def read(path):
    """{name: array} of /sweep plus ``species`` and ``sets``. SystemExit for a file without it."""
    with h5py.File(path, "r") as f:
        if "sweep" not in f:
            raise SystemExit(f"{path}: no /sweep — not the output of a run with state_points: "
                             "(one state point: tools/plot_pearson.py, tools/plot_dynamics.py)")
        g = f["sweep"]
        out = {k: g[k][()] for k in ("temperature", "density", "packing_fraction", "tau_alpha",
                                     "times")}
        out["pearson"] = {n: g[f"pearson/{n}"][()] for n in g["pearson"]}
        if "drcs_mean" in g:
            out["drcs_mean"] = g["drcs_mean"][()]
        if "transfer_pearson" in g:
            out["transfer"] = {n: g[f"transfer_pearson/{n}"][()] for n in g["transfer_pearson"]}
            out["train_state_point"] = int(g.attrs["train_state_point"])
        out["species"] = [s.decode() if isinstance(s, bytes) else str(s)
                          for s in g.attrs["species"]]
    return out


def abscissa(d):
    """(x values, label): 1/T, or η when all state points share one temperature (hard spheres)."""
    T, eta = d["temperature"], d["packing_fraction"]
    if np.all(T == T[0]) and np.all(np.isfinite(eta)):
        return eta, "packing fraction η"
    if np.all(T == T[0]):
        return d["density"], "density ρ (σ⁻³)"
    return 1.0 / T, "1 / T"


def plot(d, sets, species, out):
    names = d["species"]
    sp = names.index(species)
    panels = 1 + len(sets) + ("drcs_mean" in d)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    x, label = abscissa(d)
    order = np.argsort(x)
    ax = axes[0]
    for k, n in enumerate(names):
        tau = d["tau_alpha"][:, k]
        ok = np.isfinite(tau[order])
        ax.semilogy(x[order][ok], tau[order][ok], "o-", color=COLORS[k % len(COLORS)],
                    label=f"τ_α ({n})")
    ax.set_xlabel(label)
    ax.set_ylabel("τ_α (τ)")
    ax.set_title("(a) structural relaxation time")
    ax.legend(fontsize=8)
    cmap = plt.get_cmap("turbo")   # its middle (green) stays visible, unlike a diverging map
    T = d["temperature"]
    span = np.ptp(x) or 1.0
    for j, name in enumerate(sets):
        ax = axes[1 + j]
        for p in range(T.size):
            t, rho = d["times"][p], d["pearson"][name][p, sp]
            ok = np.isfinite(t) & np.isfinite(rho)
            # hot (small 1/T, small η) red, cold blue
            colour = cmap(0.9 - 0.8 * (x[p] - x.min()) / span)
            ax.semilogx(t[ok], rho[ok], "-", color=colour,
                        label=f"T = {T[p]:.3g}" if label == "1 / T" else f"{label.split()[-1]} "
                        f"= {x[p]:.3g}")
            if name in d.get("transfer", {}) and p != d["train_state_point"]:
                tr = d["transfer"][name][p, sp]
                ok = np.isfinite(t) & np.isfinite(tr)
                ax.semilogx(t[ok], tr[ok], "--", color=colour, lw=1)
        if d.get("transfer"):
            ax.plot([], [], "k--", lw=1, label=f"models of state point {d['train_state_point']}")
        ax.set_ylim(-0.1, 1.0)
        ax.set_xlabel("t (τ)")
        ax.set_ylabel(f"held-out Pearson ρ ({species})")
        ax.set_title(f"({chr(ord('b') + j)}) ρ(t), set {name}")
        ax.legend(fontsize=7)
    if "drcs_mean" in d:
        ax = axes[-1]
        for k, n in enumerate(names):
            ax.plot(x[order], d["drcs_mean"][order, k], "s-", color=COLORS[k % len(COLORS)],
                    label=n)
        ax.set_xlabel(label)
        ax.set_ylabel("⟨Δr^CS⟩ (σ)")
        ax.set_title(f"({chr(ord('b') + len(sets))}) cage-state displacement")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("output", help="HDF5 output of a run with state_points:")
    ap.add_argument("--set", action="append", dest="sets", metavar="NAME",
                    help="feature set(s) for the ρ(t) panels (default: all, at most 4)")
    ap.add_argument("--species", default=None, help="species of the ρ(t) panels (default: the first)")
    ap.add_argument("-o", "--out", default=None, help="PNG (default: OUTPUT_sweep.png)")
    args = ap.parse_args(argv)
    d = read(args.output)
    sets = args.sets or sorted(d["pearson"])[:4]
    for name in sets:
        if name not in d["pearson"]:
            raise SystemExit(f"no feature set {name!r}; the file has {sorted(d['pearson'])}")
    species = args.species or d["species"][0]
    if species not in d["species"]:
        raise SystemExit(f"no species {species!r}; the file has {d['species']}")
    out = args.out or os.path.splitext(args.output)[0] + "_sweep.png"
    plot(d, sets, species, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
