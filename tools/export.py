#!/usr/bin/env python
"""Export per-particle results of a run: species, positions, propensity, predictions, Δr^CS, Δr^IS, ….

    python tools/export.py OUTPUT.h5 --to extxyz|lammps-dump|glassbench [--time t] [--snapshots SPEC]
                           [--symbols Ar,Kr] [-o PATH]

Reads /snapshots/{positions, types, box}, /propensity [S, T, N] at the read-out nearest ``--time``
(τ; default τ_α of species A, /dynamics attr ``tau_alpha``), /fits/<set>/prediction [S, T, N] of
every feature set that has one, /fits/is_test [S], /states/cage/displacement and
/states/inherent/displacement, /dynamics/debye_waller, /snapshots/net_force and energy [S, N]
when present (layout and column names:
glasshpc/io/export.py). Formats:

- ``extxyz``: one frame per snapshot (multi-frame file; ``-o 'snap_{s}.xyz'`` writes one file per
  snapshot), read by ``ase.io.read(PATH, index=':')`` and OVITO; species as chemical symbols
  (``--symbols``, default A → Ar, B → Kr), species names in the frame info.
- ``lammps-dump``: ``ITEM: ATOMS id type x y z propensity prediction_<set> …``, timestep = snapshot
  index; LAMMPS reads a column with ``read_dump PATH s q label q propensity``.
- ``glassbench``: one ``.npz`` per snapshot (``types``, ``initial_positions``, ``positions`` [R, N, 3]
  of every replica at the read-out, plus the columns above), importable as
  ``imported: {format: glassbench, first_type: 0}`` with ``iso.times: [t]``; needs /iso/displacements.

``--snapshots``: ``all`` (default), ``test`` / ``train`` (held-out / fitted, from /fits/is_test), or
indices ``0,3,5-7``. Units: reduced LJ units of species A (σ, τ).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glasshpc.io.export import ExportError, export  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("--to", required=True, choices=("extxyz", "lammps-dump", "glassbench"))
    ap.add_argument("--time", type=float, default=None, help="read-out time (τ), nearest is used")
    ap.add_argument("--snapshots", default=None, help="all | test | train | 0,3,5-7")
    ap.add_argument("--symbols", default=None, help="extxyz chemical symbols per species, e.g. Ar,Kr")
    ap.add_argument("-o", "--output", default=None, help="file (folder for glassbench)")
    ap.add_argument("--state-point", type=int, default=None, metavar="K",
                    help="state point K of a sweep (state_points:)")
    args = ap.parse_args(argv)
    try:
        res = export(args.h5, args.to, args.output, args.time, args.snapshots,
                     args.symbols.split(",") if args.symbols else None, args.state_point)
    except (ExportError, OSError) as err:
        print(f"export: {err}", file=sys.stderr)
        return 2
    where = res["files"][0] if len(res["files"]) == 1 else \
        f"{len(res['files'])} files in {os.path.dirname(res['files'][0]) or '.'}"
    print(f"wrote {where}: {len(res['snapshots'])} snapshot(s) at t = {res['time']:.4g} τ "
          f"(read-out {res['k']}), columns {', '.join(res['columns'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
