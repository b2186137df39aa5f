#!/usr/bin/env python
"""Draw one snapshot coloured by measured propensity and by the prediction, and their scatter.

    python tools/plot_snapshot.py OUTPUT.h5 [--snapshot s] [--time t] [--set NAME] [--slab W]
                                  [-o OUTPUT_snapshot.png] [--ovito PNG]

Reads /snapshots/{positions, types, box} [S, N, 3], [S, N], [S, 3], /propensity [S, T, N],
/fits/<set>/prediction [S, T, N], /fits/<set>/pearson [n_species, T] (to pick the set),
/fits/is_test [S], /iso/times and /dynamics attrs ``tau_alpha``, ``propensity_kind``.
Panels: (a) a slab |z − L/2| < W/2 of the snapshot (particles drawn at their diameter σ_ii, the
periodic box edge dashed) coloured by the measured propensity Δr_i(t), (b) the same slab coloured by
the prediction of feature set NAME, (c) predicted vs measured for every particle of the snapshot
with Pearson ρ per species (printed too). Defaults: the first held-out snapshot, the read-out
nearest τ_α of species A, the set with the highest held-out ρ(t) of species A at that time.
``--ovito PNG`` also renders the whole snapshot in 3-D coloured by the measured propensity with
OVITO's software ray tracer (``pip install ".[render]"``; no GPU). Reduced LJ units (σ, τ).
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from glasshpc.io.results import open_results  # noqa: E402

SIGMA_SELF = {"kob_andersen": (1.0, 0.88), "harmonic_spheres": (1.0, 1.4),
              "hard_spheres": (1.0, 0.85), "bead_spring": (1.0,)}
MODEL_NAMES = {"kob_andersen": "Kob–Andersen", "harmonic_spheres": "harmonic spheres",
               "hard_spheres": "hard spheres", "bead_spring": "bead-spring melt"}
MARKERS = ("o", "^", "s", "D")
COLORS = ("#1f5fa8", "#d1495b", "#3c9d5d", "#8a5ac8")


def _decode(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read(path, snapshot=None, t=None, fit_set=None, state_point=None):
    """The arrays of one snapshot as a dict. Raises SystemExit with a one-line hint for what the
    file lacks (no predictions, a softness sweep, an index out of range)."""
    with open_results(path, state_point, cli=True) as f:
        if "propensity" not in f or "snapshots/positions" not in f:
            raise SystemExit(f"{path}: no /propensity — not the output of a propensity run")
        sets = [n for n in f.get("fits", {}) if f"fits/{n}/prediction" in f]
        if not sets:
            raise SystemExit(f"{path}: no /fits/<set>/prediction (runs made before predictions "
                             "were stored): rerun, or plot the measured propensity with "
                             "tools/export.py + OVITO")
        times = f["iso/times"][()]
        species = _decode(f.attrs["species"])
        tau = np.asarray(f["dynamics"].attrs.get("tau_alpha", [np.nan]), float)
        if t is None:
            t = tau[0] if np.isfinite(tau[0]) else times[-1]
        k = int(np.argmin(np.abs(np.log(times) - np.log(t))))
        is_test = f["fits/is_test"][()].astype(bool) if "fits/is_test" in f else None
        S = f["snapshots/types"].shape[0]
        if snapshot is None:
            snapshot = int(np.flatnonzero(is_test)[0]) if is_test is not None and is_test.any() \
                else 0
        if not 0 <= snapshot < S:
            raise SystemExit(f"--snapshot must lie in 0..{S - 1}")
        if fit_set is None:
            fit_set = max(sets, key=lambda n: np.nan_to_num(f[f"fits/{n}/pearson"][0, k], nan=-2)
                          if f"fits/{n}/pearson" in f else -2)
        elif fit_set not in sets:
            raise SystemExit(f"--set {fit_set!r}: no /fits/{fit_set}/prediction (sets with "
                             f"predictions: {', '.join(sets)})")
        model = "kob_andersen"
        try:
            import yaml
            model = yaml.safe_load(f.file["provenance"].attrs["config_yaml"])["model"]["name"]
        except Exception:  # noqa: BLE001  (diameters only: fall back to KA's)
            pass
        return {"pos": f["snapshots/positions"][snapshot], "types": f["snapshots/types"][snapshot],
                "box": f["snapshots/box"][snapshot], "measured": f["propensity"][snapshot, k],
                "predicted": f[f"fits/{fit_set}/prediction"][snapshot, k], "time": times[k],
                "k": k, "snapshot": snapshot, "set": fit_set, "species": species,
                "kind": str(f["dynamics"].attrs.get("propensity_kind", "abs")),
                "held_out": None if is_test is None else bool(is_test[snapshot]),
                "sigma": SIGMA_SELF.get(model, (1.0,) * len(species)), "model": model}


def pearson_per_species(d):
    """{species name: Pearson ρ of predicted vs measured over that species' particles}."""
    out = {}
    for s, name in enumerate(d["species"]):
        m = d["types"] == s
        if m.sum() > 2:
            out[name] = float(np.corrcoef(d["predicted"][m], d["measured"][m])[0, 1])
    return out


def _slab(ax, d, values, norm, cmap, width):
    L = d["box"]
    pos = d["pos"] - L * np.floor(d["pos"] / L)
    sel = np.abs(pos[:, 2] - L[2] / 2) < width / 2
    order = np.argsort(pos[sel, 2])              # deeper particles first, nearer on top
    xy = pos[sel][order, :2]
    diam = np.asarray(d["sigma"])[d["types"][sel][order]]
    coll = EllipseCollection(diam, diam, np.zeros_like(diam), units="xy", offsets=xy,
                             offset_transform=ax.transData, cmap=cmap, norm=norm,
                             edgecolors="0.25", linewidths=0.3)
    coll.set_array(values[sel][order])
    ax.add_collection(coll)
    ax.plot([0, L[0], L[0], 0, 0], [0, 0, L[1], L[1], 0], color="0.4", lw=0.7, ls="--")
    pad = 0.6
    ax.set_xlim(-pad, L[0] + pad)
    ax.set_ylim(-pad, L[1] + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$x$ ($\sigma$)")
    ax.set_ylabel(r"$y$ ($\sigma$)")
    return coll, int(sel.sum())


def render_ovito(d, path, size=(900, 800)):
    """3-D picture of the whole snapshot coloured by measured propensity (viridis over its 2–98 %
    range, OVITO ColorCodingModifier with a colour legend) with OVITO's Tachyon software renderer.
    Raises SystemExit when ovito is not installed or cannot render."""
    try:
        from ovito.data import DataCollection, Particles, SimulationCell
        from ovito.modifiers import ColorCodingModifier
        from ovito.pipeline import Pipeline, StaticSource
        from ovito.vis import ColorLegendOverlay, TachyonRenderer, Viewport
    except ImportError:
        raise SystemExit("--ovito needs the ovito package: pip install \".[render]\"") from None
    L = d["box"]
    pos = d["pos"] - L * np.floor(d["pos"] / L)
    lo, hi = np.percentile(d["measured"], [2, 98])
    data = DataCollection()
    cell = SimulationCell(pbc=(True, True, True))
    cell[...] = [[L[0], 0, 0, 0], [0, L[1], 0, 0], [0, 0, L[2], 0]]
    cell.vis.line_width = 0.05
    data.objects.append(cell)
    particles = Particles()
    particles.create_property("Position", data=pos)
    particles.create_property("Propensity", data=d["measured"])
    particles.create_property("Radius", data=0.5 * np.asarray(d["sigma"])[d["types"]])
    data.objects.append(particles)
    pipeline = Pipeline(source=StaticSource(data=data))
    coding = ColorCodingModifier(property="Propensity", start_value=lo, end_value=hi,
                                 gradient=ColorCodingModifier.Viridis())
    pipeline.modifiers.append(coding)
    pipeline.add_to_scene()
    try:
        vp = Viewport(type=Viewport.Type.Perspective, camera_dir=(-1.0, -0.6, -0.5))
        vp.zoom_all(size=size)
        vp.overlays.append(ColorLegendOverlay(
            modifier=coding, title=f"propensity at t = {d['time']:.3g} τ (σ)", font_size=0.06,
            legend_size=0.4, format_string="%.2f"))
        vp.render_image(size=size, filename=path, background=(1, 1, 1),
                        renderer=TachyonRenderer(ambient_occlusion=True))
    except RuntimeError as err:     # OVITO's scene setup needs a Vulkan loader even for Tachyon
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(f"--ovito: OVITO could not render ({first}); on Debian/Ubuntu: "
                         "apt-get install libvulkan1 mesa-vulkan-drivers (a software driver)") \
            from None
    finally:
        pipeline.remove_from_scene()
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("--snapshot", type=int, default=None)
    ap.add_argument("--time", type=float, default=None, help="τ; nearest read-out is used")
    ap.add_argument("--set", dest="fit_set", default=None, help="feature set of the prediction")
    ap.add_argument("--slab", type=float, default=1.0, help="slab thickness W (σ)")
    ap.add_argument("-o", "--output", help="PNG path (default: <h5 stem>_snapshot.png)")
    ap.add_argument("--ovito", metavar="PNG", help="also a 3-D OVITO rendering to this path")
    ap.add_argument("--state-point", type=int, default=None, metavar="K",
                    help="state point K of a sweep (state_points:)")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.h5)[0] + (
        "" if args.state_point is None else f"_sp{args.state_point}") + "_snapshot.png"
    d = read(args.h5, args.snapshot, args.time, args.fit_set, args.state_point)
    rho = pearson_per_species(d)
    plt.rcParams.update({"font.size": 9, "axes.linewidth": 0.8})
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), gridspec_kw={"width_ratios": [1, 1, 0.95]})
    unit = r"$\sigma$" if d["kind"] == "abs" else r"$\sigma^2$"
    split = "" if d["held_out"] is None else (" (held out)" if d["held_out"] else " (training)")
    cmap = plt.get_cmap("viridis")
    for ax, values, title in ((axes[0], d["measured"], "(a) measured propensity"),
                              (axes[1], d["predicted"], f"(b) predicted, {d['set']}")):
        # each panel on its own 2–98 % range: ridge predictions are narrower than the target
        lo, hi = np.percentile(values, [2, 98])
        coll, n = _slab(ax, d, values, plt.Normalize(lo, hi), cmap, args.slab)
        cb = fig.colorbar(coll, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(rf"$\Delta r_i(t)$ ({unit})" if ax is axes[0] else
                     rf"prediction ({unit})")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{MODEL_NAMES.get(d['model'], d['model'])} snapshot {d['snapshot']}{split}, "
                 f"t = {d['time']:.3g} τ; slab |z − L/2| < {args.slab / 2:g} σ ({n} particles)",
                 fontsize=9)
    ax = axes[2]
    for s, name in enumerate(d["species"]):
        m = d["types"] == s
        ax.scatter(d["measured"][m], d["predicted"][m], s=9, marker=MARKERS[s % 4],
                   color=COLORS[s % 4], alpha=0.6, lw=0,
                   label=rf"{name}: $\rho$ = {rho.get(name, np.nan):.3f} ({m.sum()})")
    lim = [min(d["measured"].min(), d["predicted"].min()),
           max(d["measured"].max(), d["predicted"].max())]
    ax.plot(lim, lim, color="0.5", lw=0.8, ls="--", zorder=0)
    ax.set_xlabel(rf"measured $\Delta r_i(t)$ ({unit})")
    ax.set_ylabel(rf"predicted ({unit})")
    ax.set_title(f"(c) all {len(d['types'])} particles of the snapshot", fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="upper left", markerscale=2.5)
    ax.tick_params(direction="in", top=True, right=True)
    fig.tight_layout()
    fig.savefig(out, dpi=200)
    print(f"wrote {out}: snapshot {d['snapshot']}{split}, t = {d['time']:.4g} τ (read-out "
          f"{d['k']}), set {d['set']}, Pearson " + ", ".join(f"{k} {v:.4f}" for k, v in rho.items()))
    if args.ovito:
        render_ovito(d, args.ovito)
        print(f"wrote {args.ovito} (OVITO, Tachyon software renderer)")
    return out


if __name__ == "__main__":
    main()
