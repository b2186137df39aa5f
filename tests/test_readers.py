"""Snapshot readers: files written by real LAMMPS (write_data, write_dump) and by hand in every
format read back to the positions, types and box that produced them; a run on files.

Reduced LJ units.
"""
import h5py
import numpy as np
import pytest
import yaml
from mpi4py import MPI

from glasshpc import config
from glasshpc.io.snapshots import InputError, load_snapshot, read_frame
from glasshpc.models import get_model
from glasshpc.parallel import Context, task_rng

KA = get_model("kob_andersen")


@pytest.fixture(scope="module")
def lammps_files(tmp_path_factory):
    """A KA liquid (N = 300, ρ = 1.2) run long enough that atoms cross the boundaries, written by
    LAMMPS itself as a data file and as dumps with image flags, unwrapped and scaled coordinates."""
    from glasshpc.md.lammps import LammpsEngine
    d = tmp_path_factory.mktemp("lammps")
    eng = LammpsEngine(KA, 0.005)
    pos, types, box = eng.prepare_snapshot(300, 1.2, 1.0, task_rng(1, "readers"), 2.0, 1.0, 0.0,
                                           2.0, 0.5)
    fmt = "modify sort id format float %.17g"
    eng.command(f"write_data {d}/ka.data nocoeff",
                f"write_dump all custom {d}/img.dump id type x y z ix iy iz {fmt}",
                f"write_dump all custom {d}/unwrapped.lammpstrj id type xu yu zu {fmt}",
                f"write_dump all custom {d}/scaled.dump id type xs ys zs ix iy iz {fmt}")
    ref = {"wrapped": eng.positions(), "unwrapped": eng.unwrapped_positions(),
           "types": types, "box": eng.box()}
    eng.close()
    return d, ref


def test_lammps_files_carry_image_flags(lammps_files):
    _, ref = lammps_files
    # the test means something only if atoms left the box during the run
    assert np.abs(ref["unwrapped"] - ref["wrapped"]).max() > 1.0


@pytest.mark.parametrize("name", ["ka.data", "img.dump", "unwrapped.lammpstrj", "scaled.dump"])
def test_lammps_written_files(lammps_files, name):
    d, ref = lammps_files
    f = read_frame(str(d / name))
    order = np.argsort(f.ids)
    np.testing.assert_array_equal(f.ids[order], np.arange(1, 301))
    assert f.format == ("lammps-data" if name.endswith(".data") else "lammps-dump")
    np.testing.assert_allclose(f.hi - f.lo, ref["box"], rtol=1e-14)
    # unwrapped r = x + image·L (or xu directly) equals LAMMPS's own unwrapped positions
    atol = 1e-12 if name != "scaled.dump" else 1e-9     # xs·L round trip
    np.testing.assert_allclose(f.positions[order], ref["unwrapped"] + f.lo, atol=atol)
    pos, types, box = load_snapshot(str(d / name), "auto", {"1": "A", "2": "B"}, KA.species,
                                    300, 1.2, KA)
    # wrapped into [0, L): equal to LAMMPS's wrapped x (mod L, boundary rounding aside)
    diff = pos - ref["wrapped"]
    diff -= box * np.round(diff / box)
    assert np.abs(diff).max() < 1e-9
    assert (pos >= 0).all() and (pos < box).all()
    np.testing.assert_array_equal(types, ref["types"])


def test_extxyz_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    L = 5.0
    pos = rng.uniform(0, L, (50, 3))
    names = rng.choice(["Ar", "Kr"], 50)
    lines = ["50", f'Lattice="{L} 0.0 0.0 0.0 {L} 0.0 0.0 0.0 {L}" '
                   'Properties=species:S:1:pos:R:3:mass:R:1 pbc="T T T" energy=-1.5']
    lines += [f"{s} {float(x)!r} {float(y)!r} {float(z)!r} 1.0" for s, (x, y, z) in zip(names, pos)]
    (tmp_path / "a.xyz").write_text("\n".join(lines) + "\n")
    f = read_frame(str(tmp_path / "a.xyz"))
    np.testing.assert_array_equal(f.positions, pos)
    np.testing.assert_array_equal(f.types, names)
    np.testing.assert_array_equal(f.hi, [L, L, L])
    p, t, box = load_snapshot(str(tmp_path / "a.xyz"), "extxyz", {"Ar": "A", "Kr": "B"},
                              KA.species)
    np.testing.assert_array_equal(t, (names == "Kr").astype(np.int32))
    np.testing.assert_array_equal(p, pos)


def test_data_without_image_flags_and_shifted_origin(tmp_path):
    """xlo ≠ 0: stored positions are shifted to the origin; ids out of order are sorted."""
    rng = np.random.default_rng(4)
    pos = rng.uniform(-2.0, 3.0, (20, 3))
    ids = rng.permutation(20) + 1
    lines = ["title", "", "20 atoms", "2 atom types", "",
             "-2.0 3.0 xlo xhi", "-2.0 3.0 ylo yhi", "-2.0 3.0 zlo zhi", "", "Atoms", ""]
    lines += [f"{i} {1 + (i > 10)} {float(x)!r} {float(y)!r} {float(z)!r}"
              for i, (x, y, z) in zip(ids, pos)]
    (tmp_path / "b.lmp").write_text("\n".join(lines) + "\n")
    p, t, box = load_snapshot(str(tmp_path / "b.lmp"), "auto", {"1": "A", "2": "B"}, KA.species)
    order = np.argsort(ids)
    np.testing.assert_allclose(p, pos[order] + 2.0, atol=1e-15)
    np.testing.assert_array_equal(t, (ids[order] > 10).astype(np.int32))
    np.testing.assert_array_equal(box, [5.0, 5.0, 5.0])


def test_format_detection_by_content(tmp_path, lammps_files):
    d, _ = lammps_files
    (tmp_path / "noext").write_text((d / "img.dump").read_text())
    assert read_frame(str(tmp_path / "noext")).format == "lammps-dump"
    (tmp_path / "garbage").write_text("hello\nworld\n")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_frame(str(tmp_path / "garbage"))


def test_run_on_lammps_files(lammps_files, tiny_yaml, tmp_path):
    """The whole pipeline with snapshots read from files: what it stores is what the files hold."""
    from glasshpc.run import execute
    d, ref = lammps_files
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    # four snapshots: the same LAMMPS configuration in four formats (count comes from the files)
    for name in ("ka.data", "img.dump", "unwrapped.lammpstrj", "scaled.dump"):
        (snaps / name).write_text((d / name).read_text())
    data = yaml.safe_load(tiny_yaml(str(tmp_path / "files.h5")))
    data["model"]["temperature"] = 1.0
    data["snapshots"] = {"source": "files", "path": str(snaps), "type_map": {1: "A", 2: "B"}}
    data["fits"]["cv_folds"] = 2
    text = yaml.safe_dump(data)
    cfg = config.parse(text)
    assert cfg.snapshots.count == 4
    execute(cfg, text, Context(MPI.COMM_SELF))
    with h5py.File(tmp_path / "files.h5", "r") as f:
        stored = f["snapshots/positions"][()]
        for s in range(4):
            diff = stored[s] - ref["wrapped"]
            diff -= ref["box"] * np.round(diff / ref["box"])
            assert np.abs(diff).max() < 1e-9
        np.testing.assert_array_equal(f["snapshots/types"][()], np.tile(ref["types"], (4, 1)))
        # the same configuration four times: identical replica statistics only through the seeds
        assert f["iso/displacements"].shape[:2] == (4, 3)
        assert np.isfinite(f["propensity"][()]).all()
