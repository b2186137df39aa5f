#!/usr/bin/env python
"""Plot the energy-barrier analysis of a softness sweep: Arrhenius plot, ΔE(x) and Σ(x).

    python tools/plot_barriers.py OUTPUT.h5 [-m MODEL] [-o OUTPUT_barriers.png]

Reads, from a glasshpc softness-sweep file (layout: glasshpc/softness_parts.py docstring):

- ``/barriers/centers`` (B,) bin centres of x (Z-score; S itself for ``svc_S``),
  ``/barriers/temperatures`` (P,), attrs ``form`` ('arrhenius' | 'kramers'), ``fit_temperatures``;
- ``/barriers/<model>/n``, ``k`` (P, B) particles and rearranging particles per bin and T;
  ``sigma``, ``delta_e``, ``sigma_err``, ``delta_e_err`` (B,) per-bin fits; ``landscape`` (4,)
  (S0, S1, E0, E1) with attrs ``onset``, ``onset_err`` when the joint fit succeeded.

Panels: (a) ln P_R (or ln T·P_R for the Kramers form) vs 1/T per bin of the chosen model with the
fitted lines and the onset temperature; (b) ΔE(x) and (c) Σ(x) of every model with error bars.
Reduced LJ units (ε_AA, k_B = 1).
"""
import argparse
import os

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("-m", "--model", default="svc", help="model of the Arrhenius panel")
    ap.add_argument("-o", "--output", help="PNG path (default: <h5 stem>_barriers.png)")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.h5)[0] + "_barriers.png"
    with h5py.File(args.h5, "r") as f:
        if "barriers" not in f:
            raise SystemExit(f"{args.h5}: no /barriers group: energy barriers come from a softness "
                             "sweep (a YAML with a top-level 'softness:' key; fits set by "
                             "'softness.barriers')" + ("; this is a propensity run: try "
                                                        "tools/plot_pearson.py or "
                                                        "tools/plot_dynamics.py"
                                                        if "propensity" in f else ""))
        b = f["barriers"]
        x = b["centers"][()]
        T = b["temperatures"][()]
        form = b.attrs["form"]
        fitT = np.asarray(b.attrs["fit_temperatures"])
        models = {m: {k: b[m][k][()] for k in ("n", "k", "sigma", "delta_e", "sigma_err",
                                                 "delta_e_err")} for m in b if isinstance(b[m], h5py.Group)}
        for m in models:
            models[m]["landscape"] = b[m]["landscape"][()] if "landscape" in b[m] else None
            models[m]["onset"] = b[m].attrs.get("onset", np.nan)
    if args.model not in models:
        raise SystemExit(f"model {args.model!r} not in the file; have {sorted(models)}")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    d = models[args.model]
    cmap = plt.get_cmap("viridis")
    invT = np.linspace(0.9 / T.max(), 1.1 / T.min(), 50)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = d["k"] / d["n"]
        y = np.log(p) + (np.log(T)[:, None] if form == "kramers" else 0.0)
    for i in range(x.size):
        c = cmap(i / max(1, x.size - 1))
        ax.plot(1 / T, y[:, i], "o", color=c, ms=4, label=f"x = {x[i]:.2g}")
        if np.isfinite(d["delta_e"][i]):
            ax.plot(invT, d["sigma"][i] - d["delta_e"][i] * invT, "--", color=c, lw=0.8)
    if np.isfinite(d["onset"]):
        ax.axvline(1 / d["onset"], color="0.4", ls=":", label=f"onset T = {d['onset']:.3g}")
    ax.set_xlabel("1/T")
    ax.set_ylabel(r"$\ln P_R$" if form == "arrhenius" else r"$\ln T P_R$")
    ax.set_title(f"(a) {args.model}, fits for T ≤ {fitT.max():g}" if fitT.size else args.model)
    ax.legend(fontsize=6, ncol=2)
    for ax, key, label in ((axes[1], "delta_e", r"$\Delta E(x)$ (ε)"), (axes[2], "sigma", r"$\Sigma(x)$")):
        for m, dm in models.items():
            ok = np.isfinite(dm[key])
            ax.errorbar(x[ok], dm[key][ok], dm[key + "_err"][ok], marker="o", ms=3, capsize=2,
                        label=m)
        ax.set_xlabel("x (Z-score; S for svc_S)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[1].set_title("(b) energy barrier")
    axes[2].set_title("(c) entropic term")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
