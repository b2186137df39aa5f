"""The bad-input battery: every case is refused with a message naming the problem, exit code 2, and
no file is created or changed (the output folder's listing, sizes, mtimes and contents compared).

Cases run in-process through ``glasshpc.run.main(argv)``; a few also through a real subprocess.
"""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from mpi4py import MPI

from conftest import mutate_yaml
from glasshpc import cluster, config, stages
from glasshpc.io.snapshots import InputError, check_overlaps
from glasshpc.md.accel import resolve_suffix
from glasshpc.parallel import Context
from glasshpc.run import main
from glasshpc.store import Store

L300 = (300 / 1.2) ** (1 / 3)     # box edge of the tiny config (N = 300, ρ = 1.2)


def _tree(folder):
    """{relative path: (size, mtime_ns, sha256)} of every file and folder below ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            digest = None
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns, digest)
    return out




def _refused(tmp_path, capsys, yaml_text, *flags, expect):
    """Write the YAML, run main(), check exit code 2, the message, and an unchanged folder."""
    cfg = tmp_path / "run.yaml"
    if isinstance(yaml_text, bytes):
        cfg.write_bytes(yaml_text)
    else:
        cfg.write_text(yaml_text)
    before = _tree(tmp_path)
    code = main([str(cfg), *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    for word in expect:
        assert word in err, (word, err)
    assert _tree(tmp_path) == before
    return err


# -- YAML --------------------------------------------------------------------------------------

YAML_CASES = [
    ("unknown key", ("model", "densty"), 1.2, ["model.densty", "unknown key"]),
    ("unknown top-level key", ("snapshotz",), {"count": 3}, ["snapshotz", "unknown key"]),
    ("wrong type (string for a number)", ("model", "temperature"), "hot",
     ["model.temperature", "must be a number"]),
    ("wrong type (fraction for an integer)", ("iso", "replicas"), 2.5,
     ["iso.replicas", "integer"]),
    ("negative N", ("model", "n_particles"), -5, ["model.n_particles", "≥ 2"]),
    ("density zero", ("model", "density"), 0.0, ["model.density", "> 0.0"]),
    ("density negative", ("model", "density"), -1.2, ["model.density", "> 0.0"]),
    ("temperature zero", ("model", "temperature"), 0, ["model.temperature", "> 0.0"]),
    ("temperature negative", ("model", "temperature"), -0.5, ["model.temperature", "> 0.0"]),
    ("times not increasing", ("iso", "times"), [0.1, 1.0, 0.5],
     ["iso.times[2]", "strictly increasing"]),
    ("times stop before start", ("iso", "times"), {"start": 1.0, "stop": 0.1, "count": 4},
     ["iso.times.stop", "exceed"]),
    ("replicas zero", ("iso", "replicas"), 0, ["iso.replicas", "≥ 1"]),
    ("unknown model", ("model", "name"), "lj_glass", ["model.name", "kob_andersen"]),
    ("missing required parameter", ("model", "n_particles"), KeyError,
     ["model.n_particles", "required"]),
    ("missing snapshot count", ("snapshots", "count"), KeyError, ["snapshots.count", "required"]),
    ("negative seed", ("seed",), -1, ["seed", "≥ 0"]),
    ("files-only key with MD snapshots", ("snapshots", "path"), "snaps/",
     ["snapshots.path", "source: files"]),
    # sizes: every count has a hard upper bound (issue 12, defect 5)
    ("n_particles 1e12", ("model", "n_particles"), 10**12, ["model.n_particles", "≤ 100000000"]),
    ("replicas 1e9", ("iso", "replicas"), 10**9, ["iso.replicas", "≤ 1000000"]),
    ("snapshots.count 1e9", ("snapshots", "count"), 10**9, ["snapshots.count", "≤ 1000000"]),
    ("times.count 1e9", ("iso", "times"), {"start": 0.01, "stop": 2.0, "count": 10**9},
     ["iso.times.count", "≤ 10000"]),
    ("explicit times list too long", ("iso", "times"), [0.01 * (k + 1) for k in range(10001)],
     ["iso.times", "at most 10000"]),
    ("last read-out beyond one LAMMPS run", ("iso", "times"), {"start": 0.01, "stop": 1.0e8, "count": 4},
     ["iso.times", "2147483647"]),
    ("nve_time beyond one LAMMPS run", ("md", "nve_time"), 1.0e9, ["md.nve_time", "2147483647"]),
    ("r_generation beyond half the box", ("descriptors", "r_generation"), 1000,
     ["descriptors.r_generation", "half the box"]),
    ("skin 100", ("md", "skin"), 100, ["md.skin", "≤ 1.0"]),
    ("cutoff + skin beyond half the box", ("md", "skin"), 0.9, ["md.skin", "half the box"]),
    ("cage chains 1e9", ("cage", "chains"), 10**9, ["cage.chains", "≤ 10000"]),
    ("cage sweeps 1e12", ("cage", "measurement_sweeps"), 10**12, ["cage.measurement_sweeps", "≤"]),
    ("MLP width 1e9", ("fits", "mlp"), {"layers": 1, "width": 10**9}, ["fits.mlp.width", "≤ 10000"]),
    ("cv_folds huge", ("fits", "cv_folds"), 10**7, ["fits.cv_folds", "≤ 1000"]),
    ("seed beyond int64", ("seed",), 2**64, ["seed", "≤"]),
    ("wave number huge", ("dynamics",), {"q": 1.0e6}, ["dynamics.q", "≤ 100"]),
    # names and paths
    ("feature set named single", ("fits", "feature_sets"), {"single": {"generations": 0}},
     ["fits.feature_sets.single", "reserved", "/fits/single"]),
    ("empty output", ("output",), "", ["'output'", "non-empty path"]),
    ("output with a NUL byte", ("output",), "out\0.h5", ["'output'", "NUL"]),
    ("output longer than PATH_MAX", ("output",), "o" * 5000 + ".h5", ["'output'", "PATH_MAX"]),
]


@pytest.mark.parametrize("label,path,value,expect", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_yaml_refused(tiny_yaml, tmp_path, capsys, label, path, value, expect):
    text = mutate_yaml(tiny_yaml(str(tmp_path / "out.h5")), path, value)
    _refused(tmp_path, capsys, text, expect=expect)


def test_yaml_syntax_error(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")).replace("replicas: 3", "replicas: [3")
    _refused(tmp_path, capsys, text, expect=["not valid YAML"])


def test_yaml_not_utf8(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")).encode()
    text = text.replace(b"seed: 7", b"seed: 7  # caf\xe9 latin-1")
    line = text[:text.index(b"\xe9")].count(b"\n") + 1
    _refused(tmp_path, capsys, text, expect=["run.yaml", f"line {line}", "not valid UTF-8"])


def test_yaml_binary_file(tmp_path, capsys):
    _refused(tmp_path, capsys, b"\x89HDF\r\n\x1a\n\0\0\0\0" + bytes(range(256)),
             expect=["run.yaml", "line 3 (byte 8)", "NUL byte"])


def test_yaml_deep_nesting(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")) + "extra: " + "[" * 20000 + "]" * 20000 + "\n"
    _refused(tmp_path, capsys, text, expect=["run.yaml", "nesting deeper than 50", "line"])


def test_yaml_alias_bomb(tiny_yaml, tmp_path, capsys):
    import time
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 10)]
    text = "\n".join(lines) + "\n" + tiny_yaml(str(tmp_path / "out.h5")).replace(
        "seed: 7", "seed: *a9")
    t0 = time.perf_counter()
    _refused(tmp_path, capsys, text, expect=["run.yaml", "line 1", "anchors (&a0) are not allowed"])
    assert time.perf_counter() - t0 < 10     # a sanity bound (expanded: 9¹⁰ strings), not a speed test


def test_yaml_alias_as_value(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")).replace("seed: 7", "seed: *x")
    _refused(tmp_path, capsys, text, expect=["aliases (*x) are not allowed", "line 3"])


def test_yaml_duplicate_key(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")) + "seed: 99\n"
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("seed: 7")) + 1
    _refused(tmp_path, capsys, text, expect=["duplicate key 'seed'", f"first at line {first}",
                                             f"again at line {len(lines)}"])


def test_yaml_duplicate_nested_key(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")).replace("replicas: 3", "replicas: 3\n  replicas: 30")
    _refused(tmp_path, capsys, text, expect=["duplicate key 'replicas'", "line 8", "line 9"])


def test_yaml_huge_integer(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")).replace("seed: 7", "seed: " + "9" * 5000)
    err = _refused(tmp_path, capsys, text, expect=["cannot read an integer", "line 3"])
    assert len(err) < 1500


def test_yaml_too_large(tiny_yaml, tmp_path, capsys):
    text = tiny_yaml(str(tmp_path / "out.h5")) + "# " + "x" * (1 << 20) + "\n"
    _refused(tmp_path, capsys, text, expect=["run.yaml", "larger than 1048576 bytes"])


@pytest.mark.parametrize("path", [("model", "name"), ("model", "temperature"), ("seed",)])
def test_long_values_truncated(tiny_yaml, tmp_path, capsys, path):
    text = mutate_yaml(tiny_yaml(str(tmp_path / "out.h5")), path, "x" * 100000)
    err = _refused(tmp_path, capsys, text, expect=[".".join(path), "xxx...xxx"])
    assert len(err) < 400, len(err)


def test_long_unknown_key_truncated(tiny_yaml, tmp_path, capsys):
    text = mutate_yaml(tiny_yaml(str(tmp_path / "out.h5")), ("k" * 100000,), 1)
    err = _refused(tmp_path, capsys, text, expect=["unknown key", "kkkk…"])
    assert len(err) < 1000, len(err)


def test_long_list_value_truncated(tiny_yaml, tmp_path, capsys):
    text = mutate_yaml(tiny_yaml(str(tmp_path / "out.h5")), ("model", "name"), [list(range(200)) for _ in range(10)])
    err = _refused(tmp_path, capsys, text, expect=["model.name", "..."])
    assert len(err) < 400, len(err)


def test_output_directory_not_writable(tiny_yaml, tmp_path, capsys):
    # /sys is read-only even for root (mode bits would not stop root)
    # checked before the resource plan, which would otherwise call /sys "full"
    _refused(tmp_path, capsys, tiny_yaml("/sys/glasshpc-test.h5"), expect=["/sys", "not writable"])
    assert not os.path.exists("/sys/glasshpc-test.h5.partial")


def test_output_directory_missing(tiny_yaml, tmp_path, capsys):
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "nowhere" / "out.h5")),
             expect=["nowhere", "does not exist"])


def test_output_exists(tiny_yaml, tmp_path, capsys):
    (tmp_path / "out.h5").write_bytes(b"precious")
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")),
             expect=["out.h5 exists", "--overwrite"])


def test_partial_exists_without_resume(tiny_yaml, tmp_path, capsys):
    _make_partial(tiny_yaml, tmp_path)
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")),
             expect=["did not finish", "--resume"])


def test_resume_with_different_config(tiny_yaml, tmp_path, capsys):
    _make_partial(tiny_yaml, tmp_path)
    text = mutate_yaml(tiny_yaml(str(tmp_path / "out.h5")), ("iso", "replicas"), 4)
    _refused(tmp_path, capsys, text, "--resume",
             expect=["different config", "iso.replicas: 3 → 4"])


def test_resume_without_partial(tiny_yaml, tmp_path, capsys):
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["cannot resume", "does not exist"])


# -- HDF5 and the partial folder given to --resume -----------------------------------------------

def _make_partial(tiny_yaml, tmp_path, write=False):
    """A real unfinished run's folder: run.json and (optionally) one committed task."""
    cfg = config.parse(tiny_yaml(str(tmp_path / "out.h5")))
    cfg, _ = resolve_suffix(cfg, Context(MPI.COMM_SELF))   # as run.execute: md.suffix resolved
    layout = stages.layout(cfg, stages.descriptor_spec(cfg, 2.0).n_features)
    st = Store(cfg.output, Context(MPI.COMM_SELF), layout, mode="shards",
               config=cluster.normalised_config(cfg))
    if write:
        st.write("snapshots/box", (0,), np.full(3, L300))
        st.write("snapshots/types", (0,), np.zeros(300, np.int32))
        st.commit("snapshots", 0)
    st.close()
    return tmp_path / "out.h5.partial"


def test_resume_corrupted_run_record(tiny_yaml, tmp_path, capsys):
    partial = _make_partial(tiny_yaml, tmp_path)
    (partial / "run.json").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["run.json", "corrupted or not a glasshpc run record"])


def test_resume_foreign_hdf5_as_partial(tiny_yaml, tmp_path, capsys):
    import h5py
    with h5py.File(tmp_path / "out.h5.partial", "w") as fh:
        fh["x"] = np.arange(3)
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["out.h5.partial is a file", "cannot resume"])


def test_resume_foreign_hdf5_output(tiny_yaml, tmp_path, capsys):
    import h5py
    with h5py.File(tmp_path / "out.h5", "w") as fh:
        fh["x"] = np.arange(3)
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["not written by glasshpc", "nothing to resume"])


def test_resume_corrupted_output(tiny_yaml, tmp_path, capsys):
    (tmp_path / "out.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["not an HDF5 file", "nothing to resume"])


def test_resume_corrupted_task_data(tiny_yaml, tmp_path, capsys):
    partial = _make_partial(tiny_yaml, tmp_path, write=True)
    data = partial / "data-a001-r00000.bin"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF                                   # one flipped byte in snapshots/box[0]
    data.write_bytes(bytes(raw))
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["snapshots/box[0] fails its checksum", "journal-a001-r00000.jsonl"])


def test_resume_missing_task_data(tiny_yaml, tmp_path, capsys):
    partial = _make_partial(tiny_yaml, tmp_path, write=True)
    os.remove(partial / "data-a001-r00000.bin")
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["data-a001-r00000.bin is missing"])


def test_resume_foreign_journal(tiny_yaml, tmp_path, capsys):
    partial = _make_partial(tiny_yaml, tmp_path)
    (partial / "journal-a001-r00000.jsonl").write_text(
        '{"stage": "x", "task": [0], "slots": [["not/ours", [0], "mpio", 0]]}\n')
    _refused(tmp_path, capsys, tiny_yaml(str(tmp_path / "out.h5")), "--resume",
             expect=["journal-a001-r00000.jsonl", "damaged"])


# -- snapshot files ------------------------------------------------------------------------------

def _lattice(n=300, L=L300, seed=0):
    """n sites of a 7³ simple-cubic lattice in a box L (spacing 0.9 σ: no close pairs)."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*(np.arange(7),) * 3, indexing="ij"), -1).reshape(-1, 3)
    return (g[rng.choice(len(g), n, replace=False)] + 0.5) * (L / 7)


def _types(n=300):
    return np.where(np.arange(n) < int(0.8 * n), 1, 2)


def write_data(path, pos, types, box, extra_header="", style="atomic", images=None):
    lines = ["LAMMPS data file written by a test", "", f"{len(pos)} atoms", "2 atom types", ""]
    for d, ax in enumerate("xyz"):
        lines.append(f"0.0 {float(box[d])!r} {ax}lo {ax}hi")
    lines += [extra_header, "", "Masses", "", "1 1.0", "2 1.0", "", f"Atoms # {style}", ""]
    for i, (p, t) in enumerate(zip(pos, types)):
        img = "" if images is None else " %d %d %d" % tuple(images[i])
        lines.append(f"{i + 1} {t} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r}{img}")
    path.write_text("\n".join(lines) + "\n")


def write_dump(path, pos, types, box, cols="x y z"):
    lines = ["ITEM: TIMESTEP", "0", "ITEM: NUMBER OF ATOMS", str(len(pos)),
             "ITEM: BOX BOUNDS pp pp pp"] + [f"0.0 {float(b)!r}" for b in box]
    lines.append(f"ITEM: ATOMS id type {cols}")
    for i, (p, t) in enumerate(zip(pos, types)):
        lines.append(f"{i + 1} {t} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r}")
    path.write_text("\n".join(lines) + "\n")


def write_xyz(path, pos, names, box):
    lat = f"{float(box[0])!r} 0 0 0 {float(box[1])!r} 0 0 0 {float(box[2])!r}"
    lines = [str(len(pos)), f'Lattice="{lat}" Properties=species:S:1:pos:R:3 pbc="T T T"']
    lines += [f"{s} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r}" for s, p in zip(names, pos)]
    path.write_text("\n".join(lines) + "\n")


def _files_yaml(tiny_yaml, tmp_path, pattern, type_map="{1: A, 2: B}", fmt="auto"):
    text = tiny_yaml(str(tmp_path / "out.h5"))
    data = yaml.safe_load(text)
    data["snapshots"] = {"source": "files", "path": str(tmp_path / "snaps" / pattern),
                         "format": fmt, "type_map": yaml.safe_load(type_map)}
    return yaml.safe_dump(data)


def _snapdir(tmp_path, n_good=4):
    d = tmp_path / "snaps"
    d.mkdir()
    box = np.full(3, L300)
    for k in range(n_good):
        write_data(d / f"s{k}.data", _lattice(seed=k), _types(), box)
    return d, box


def _check_file_refused(tiny_yaml, tmp_path, capsys, bad_name, expect, writer, type_map=None):
    d, box = _snapdir(tmp_path)
    writer(d / bad_name, box)
    kwargs = {} if type_map is None else {"type_map": type_map}
    text = _files_yaml(tiny_yaml, tmp_path, "*", **kwargs)
    err = _refused(tmp_path, capsys, text, expect=[bad_name] + expect)
    return err


def test_files_good_folder_validates(tiny_yaml, tmp_path):
    """The control: the same folder without a bad file passes every check."""
    _snapdir(tmp_path, n_good=5)
    cfg = config.parse(_files_yaml(tiny_yaml, tmp_path, "*"))
    assert cfg.snapshots.count == 5
    cluster.check_inputs(cfg, Context(MPI.COMM_SELF))


def test_file_nan(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        pos = _lattice()
        pos[17, 1] = np.nan
        write_dump(p, pos, _types(), box)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump", ["particle 17", "non-finite"], w)


def test_file_outside_box(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        pos = _lattice()
        pos[42, 0] = box[0] + 0.5
        write_data(p, pos, _types(), box)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["particle 42 (atom id 43)", "outside the box"], w)


def test_file_scaled_outside_box(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        s = _lattice() / box
        s[7, 2] = -0.2
        write_dump(p, s, _types(), box, cols="xs ys zs")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump",
                        ["particle 7 (atom id 8)", "outside the box"], w)


def test_file_overlapping_particles(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        pos = _lattice()
        pos[5] = pos[200] + [0.1, 0.0, 0.0]
        write_data(p, pos, _types(), box)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["particles 5 and 200", "overlap"], w)


def test_overlapping_hard_spheres():
    """Hard spheres: the EDMD module's exact check (gap < 0 for σ_ij = (σ_i + σ_j)/2)."""
    box = np.full(3, 5.0)
    pos = np.array([[1.0, 1.0, 1.0], [1.95, 1.0, 1.0], [3.0, 3.0, 3.0], [3.9, 3.0, 3.0]])
    diam = np.array([1.0, 0.85, 1.0, 1.0])
    check_overlaps(pos[:3], np.zeros(3, int), box, diameters=diam[:3])  # 0.95 > σ_01 = 0.925
    with pytest.raises(InputError, match=r"hard spheres 2 and 3 .* overlap: gap -0\.1"):
        check_overlaps(pos, np.zeros(4, int), box, diameters=diam)
    # through the periodic boundary: 0.05 and 4.95 in a box of 5 are 0.1 apart
    pos2 = np.array([[0.05, 2.0, 2.0], [4.95, 2.0, 2.0]])
    with pytest.raises(InputError, match="hard spheres 0 and 1"):
        check_overlaps(pos2, np.zeros(2, int), box, diameters=np.ones(2))


def test_file_unknown_type(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        t = _types()
        t[250] = 3
        write_data(p, _lattice(), t, box)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["particle 250 (atom id 251)", "type '3'"], w)


def test_file_wrong_n(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(299), _types(299), box)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["299 particles", "model.n_particles = 300"], w)


def test_file_non_cubic_box(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        b = np.array([L300 * 1.1, L300, L300 / 1.1])
        write_xyz(p, _lattice(L=L300 / 1.1), np.where(_types() == 1, "A", "B"), b)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.xyz", ["non-cubic box"], w,
                        type_map="{1: A, 2: B, A: A, B: B}")


def test_file_triclinic_box(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box, extra_header="0.5 0.0 0.0 xy xz yz")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data", ["triclinic"], w)


def test_file_density_mismatch(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box * 1.01)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["gives density", "model.density = 1.2"], w)


def test_file_truncated_data(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        p.write_text("\n".join(p.read_text().splitlines()[:-40]))
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["truncated", "260 of 300 atoms"], w)


def test_file_truncated_dump(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_dump(p, _lattice(), _types(), box)
        p.write_text(p.read_text()[:-2000])
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump", ["truncated"], w)


def test_file_truncated_extxyz(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_xyz(p, _lattice(), np.where(_types() == 1, "A", "B"), box)
        p.write_text("\n".join(p.read_text().splitlines()[:100]))
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.xyz",
                        ["truncated", "98 of 300"], w, type_map="{1: A, 2: B, A: A, B: B}")


def test_file_atom_style_full(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box, style="full")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data", ["atom style 'full'"], w)


def test_file_two_frames(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_dump(p, _lattice(), _types(), box)
        p.write_text(p.read_text() * 2)
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump", ["more than one frame"], w)


def test_type_map_unknown_species(tiny_yaml, tmp_path, capsys):
    _snapdir(tmp_path)
    text = _files_yaml(tiny_yaml, tmp_path, "*", type_map="{1: A, 2: C}")
    _refused(tmp_path, capsys, text, expect=["snapshots.type_map.2", "unknown species 'C'"])


def test_files_no_match(tiny_yaml, tmp_path, capsys):
    _snapdir(tmp_path)
    text = _files_yaml(tiny_yaml, tmp_path, "*.lammpstrj")
    _refused(tmp_path, capsys, text, expect=["snapshots.path", "no files match"])


def test_files_count_disagrees(tiny_yaml, tmp_path, capsys):
    _snapdir(tmp_path)
    data = yaml.safe_load(_files_yaml(tiny_yaml, tmp_path, "*"))
    data["snapshots"]["count"] = 7
    _refused(tmp_path, capsys, yaml.safe_dump(data), expect=["snapshots.count", "holds 4 files"])


# -- a few through a real process ----------------------------------------------------------------

def _subprocess(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-m", "glasshpc.run", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd, env=env)


def test_subprocess_refusals(tiny_yaml, tmp_path):
    out = tmp_path / "out.h5"
    (tmp_path / "bad.yaml").write_text(mutate_yaml(tiny_yaml(str(out)), ("model", "density"), -1))
    (tmp_path / "good.yaml").write_text(tiny_yaml(str(out)))
    out.write_bytes(b"an earlier result")
    before = _tree(tmp_path)
    p = _subprocess(["bad.yaml"], tmp_path)
    assert p.returncode == 2 and "model.density" in p.stderr
    p = _subprocess(["good.yaml"], tmp_path)
    assert p.returncode == 2 and "exists" in p.stderr and "--overwrite" in p.stderr
    p = _subprocess(["good.yaml", "--resume"], tmp_path)
    assert p.returncode == 2 and "nothing to resume" in p.stderr
    p = _subprocess(["good.yaml", "--resume", "--overwrite"], tmp_path)
    assert p.returncode == 2 and "not allowed with" in p.stderr
    assert _tree(tmp_path) == before


# -- snapshot-file reader errors: file and line ------------------------------------------------------

def _edit_line(p, lineno, new):
    lines = p.read_text().splitlines()
    lines[lineno - 1] = new
    p.write_text("\n".join(lines) + "\n")


def _data_line(p, atom_index):
    """1-based line of atom ``atom_index`` (0-based) in a file written by write_data."""
    lines = p.read_text().splitlines()
    return lines.index("Atoms # atomic") + 3 + atom_index


def test_data_fractional_atom_count(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        _edit_line(p, 3, "300.0 atoms")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                        ["s9.data line 3", "atom count must be a whole number", "'300.0'"], w)


def test_data_fractional_atom_id(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        ln = _data_line(p, 4)
        _edit_line(p, ln, "5.5 1 1.0 1.0 1.0")
        w.line = ln
    err = _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                              ["atom id must be a whole number", "'5.5'"], w)
    assert f"line {w.line}" in err


def test_data_non_numeric_coordinate(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        w.line = _data_line(p, 10)
        _edit_line(p, w.line, "11 1 1.0 one 1.0")
    err = _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data", ["cannot read x y z"], w)
    assert f"line {w.line}" in err


def test_data_fractional_image_flag(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box, images=np.zeros((300, 3), int))
        w.line = _data_line(p, 20)
        _edit_line(p, w.line, "21 1 1.0 1.0 1.0 0 0.5 0")
    err = _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                              ["image flag must be a whole number", "'0.5'"], w)
    assert f"line {w.line}" in err


def test_data_duplicate_huge_atom_id(tiny_yaml, tmp_path, capsys):
    """A duplicated id of 10¹⁵ is refused by sorting (an id-indexed array would need 7 PiB)."""
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        pos = _lattice()
        w.lines = [_data_line(p, 7), _data_line(p, 99)]
        for ln, k in zip(w.lines, (7, 99)):
            _edit_line(p, ln, "1000000000000000 1 %r %r %r" % tuple(float(v) for v in pos[k]))
    err = _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data",
                              ["atom id 1000000000000000 appears more than once"], w)
    assert f"lines {w.lines[0]} and {w.lines[1]}" in err


def test_data_atom_id_beyond_int64(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        w.line = _data_line(p, 3)
        _edit_line(p, w.line, "1" + "0" * 30 + " 1 1.0 1.0 1.0")
    err = _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data", ["out of range"], w)
    assert f"line {w.line}" in err


def test_dump_fractional_image_flag(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_dump(p, _lattice(), _types(), box)
        text = p.read_text().replace("ITEM: ATOMS id type x y z", "ITEM: ATOMS id type x y z ix iy iz")
        lines = [ln + " 0 0 0" if k >= 9 else ln for k, ln in enumerate(text.splitlines())]
        lines[9 + 30] = lines[9 + 30][:-6] + " 0 0 0.5"
        p.write_text("\n".join(lines) + "\n")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump",
                        ["s9.dump line 40", "image flag must be a whole number"], w)


def test_dump_fractional_atom_count(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_dump(p, _lattice(), _types(), box)
        _edit_line(p, 4, "300.0")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump",
                        ["s9.dump line 4", "number of atoms must be a whole number"], w)


def test_dump_short_box_bounds(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_dump(p, _lattice(), _types(), box)
        _edit_line(p, 7, "0.0")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.dump", ["s9.dump line 7", "box bounds need"], w)


def test_extxyz_non_numeric_position(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_xyz(p, _lattice(), np.where(_types() == 1, "A", "B"), box)
        _edit_line(p, 50, "A 1.0 2.0 x3")
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.xyz", ["s9.xyz line 50", "cannot read pos"], w,
                        type_map="{1: A, 2: B, A: A, B: B}")


def test_snapshot_file_not_text(tiny_yaml, tmp_path, capsys):
    def w(p, box):
        write_data(p, _lattice(), _types(), box)
        p.write_bytes(p.read_bytes().replace(b"Masses", b"Mass\xe9s"))
    _check_file_refused(tiny_yaml, tmp_path, capsys, "s9.data", ["s9.data line", "not UTF-8"], w)


def test_type_map_two_keys_one_type(tiny_yaml, tmp_path, capsys):
    _snapdir(tmp_path)
    text = _files_yaml(tiny_yaml, tmp_path, "*", type_map="{1: A, '1': B, 2: B}")
    _refused(tmp_path, capsys, text, expect=["snapshots.type_map.1", "both name file type '1'"])


# -- imported data sets (GlassBench .npz, Bapst pickles): refused before anything is created ----------

IMP_R = 3
IMP_TIMES = [0.5, 2.0, 8.0]


def _gb_config(s, offset=0.9):
    """Initial positions of snapshot s: 300 sites of a 7³ lattice (spacing L/7 = 0.9) placed from
    offset·0.9 to L − 0.09, so that the configuration fills its box like a liquid does."""
    rng = np.random.default_rng(500 + s)
    g = np.stack(np.meshgrid(*(np.arange(7),) * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (g[rng.choice(len(g), 300, replace=False)] + offset) * (L300 / 7)
    return pos, np.where(np.arange(300) < 240, 0, 1), rng


def write_glassbench_set(folder, n=5, mutate=None):
    for s in range(n):
        pos, types, rng = _gb_config(s)
        rep = pos[None] + 0.05 * rng.normal(size=(IMP_R, 300, 3))
        arrays = dict(types=types + 1, initial_positions=pos, positions=rep)
        if mutate is not None:
            mutate(s, arrays)
        np.savez(os.path.join(folder, f"ka_{s:03d}.npz"), **arrays)


def write_bapst_set(folder, n=5, mutate=None):
    import pickle
    for s in range(n):
        pos, types, rng = _gb_config(s)
        start = pos + L300 * rng.integers(-2, 3, size=pos.shape)
        targets = [[start + 0.05 * np.sqrt(t) * rng.normal(size=(300, 3)) for _ in range(IMP_R)]
                   for t in IMP_TIMES]
        d = {"positions": start, "types": types, "box": np.full(3, L300),
             "time": np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0]), "time_indices": np.array([1, 3, 5]),
             "trajectory_target_positions": targets, "metadata": {"temperature": 0.8}}
        if mutate is not None:
            d = mutate(s, d)
        data = d if isinstance(d, bytes) else pickle.dumps(d, protocol=4)
        with open(os.path.join(folder, f"system_{s:03d}.pickle"), "wb") as fh:
            fh.write(data)


def _imported_yaml(tiny_yaml, tmp_path, fmt, **change):
    data = yaml.safe_load(tiny_yaml(str(tmp_path / "out.h5")))
    pattern = "ka_*.npz" if fmt == "glassbench" else "system_*.pickle"
    data["imported"] = {"format": fmt, "files": str(tmp_path / "data" / pattern),
                        "first_type": 1 if fmt == "glassbench" else 0}
    data["iso"] = {"replicas": IMP_R, "times": [2.0] if fmt == "glassbench" else IMP_TIMES}
    data["dynamics"] = {"q": 7.2}
    data["inherent"] = {"enabled": False}
    data["cage"] = {"enabled": False}
    data["fits"]["feature_sets"] = {"g1": {"generations": 1}}
    for path, value in change.items():
        d = data
        keys = path.split(".")
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    return yaml.safe_dump(data)


def _imported_refused(tiny_yaml, tmp_path, capsys, fmt, expect, mutate=None, n=5, **change):
    folder = tmp_path / "data"
    folder.mkdir()
    (write_glassbench_set if fmt == "glassbench" else write_bapst_set)(str(folder), n, mutate)
    text = _imported_yaml(tiny_yaml, tmp_path, fmt, **change)
    err = _refused(tmp_path, capsys, text, expect=expect)
    assert not (tmp_path / "out.h5.partial").exists()
    return err


def test_imported_good_sets_validate(tiny_yaml, tmp_path):
    """The control: both writers' data pass every check."""
    for fmt, writer in (("glassbench", write_glassbench_set), ("bapst", write_bapst_set)):
        folder = tmp_path / fmt / "data"
        folder.mkdir(parents=True)
        writer(str(folder))
        cfg = config.parse(_imported_yaml(tiny_yaml, tmp_path / fmt, fmt))
        cluster.check_inputs(cfg, Context(MPI.COMM_SELF))


def test_imported_mismatch_refused_then_fixed_rerun(tiny_yaml, tmp_path, capsys):
    """The refusal (iso.replicas above the files') comes before OUTPUT.partial/ exists, so the fixed
    config runs to the end (issue 12: the rerun used to be refused)."""
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["iso.replicas", "ka_000.npz holds 3 replicas"],
                      **{"iso.replicas": 4})
    text = _imported_yaml(tiny_yaml, tmp_path, "glassbench")
    (tmp_path / "run.yaml").write_text(text)
    assert main([str(tmp_path / "run.yaml")]) == 0, capsys.readouterr().err
    import h5py
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["iso/displacements"].shape == (5, IMP_R, 1, 300, 3)


def test_imported_glob_matches_nothing(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["imported.files", "matches 0 file(s)"],
                      **{"imported.files": str(tmp_path / "data" / "nothing_*.npz")})


def test_imported_too_few_files(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench",
                      ["imported.files", "matches 4 file(s)", "snapshots.count = 5"], n=4)


def test_imported_n_mismatch(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "bapst", ["model.n_particles", "system_000.pickle holds 300"],
                      **{"model.n_particles": 301})


def test_imported_times_mismatch(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "bapst", ["iso.times", "must be the file's times"],
                      **{"iso.times": [0.5, 2.0, 9.0]})


def test_imported_first_type_mismatch(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["imported.first_type", "ka_000.npz"],
                      **{"imported.first_type": 0})


def test_imported_missing_key(tiny_yaml, tmp_path, capsys):
    def m(s, arrays):
        if s == 3:
            del arrays["initial_positions"]
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench",
                      ["ka_003.npz", "missing array 'initial_positions'"], m)


def test_imported_wrong_shape(tiny_yaml, tmp_path, capsys):
    def m(s, arrays):
        if s == 2:
            arrays["positions"] = arrays["positions"][..., :2]
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["ka_002.npz", "must be (R, N, 3)"], m)


def test_imported_nan(tiny_yaml, tmp_path, capsys):
    def m(s, d):
        if s == 4:
            d["trajectory_target_positions"][1][2][17, 0] = np.nan
        return d
    _imported_refused(tiny_yaml, tmp_path, capsys, "bapst",
                      ["system_004.pickle", "replica 2, time 1", "particle 17 is not finite"], m)


def test_imported_fractional_types(tiny_yaml, tmp_path, capsys):
    def m(s, arrays):
        if s == 1:
            arrays["types"] = arrays["types"] + 0.5
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["ka_001.npz", "types must be integers"], m)


def test_imported_not_an_npz(tiny_yaml, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    write_glassbench_set(str(folder))
    (folder / "ka_001.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _refused(tmp_path, capsys, _imported_yaml(tiny_yaml, tmp_path, "glassbench"),
             expect=["ka_001.npz", "not a readable .npz"])


def test_imported_not_a_pickle(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "bapst", ["system_002.pickle", "not a readable pickle"],
                      lambda s, d: b"\x80\x04garbage" if s == 2 else d)


class _Exploit:
    """A pickle payload that runs a shell command when loaded (what a crafted data file could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bapst_malicious_pickle_refused(tiny_yaml, tmp_path, capsys):
    marker = tmp_path.parent / f"{tmp_path.name}-pwned"

    def m(s, d):
        if s == 1:
            d["metadata"] = _Exploit(marker)
        return d
    err = _imported_refused(tiny_yaml, tmp_path, capsys, "bapst",
                            ["system_001.pickle", "refused to load posix.system", "imported.trusted"], m)
    assert not marker.exists(), err


def test_bapst_trusted_lifts_the_restriction(tmp_path):
    """trusted: true admits any class (here a harmless collections.Counter the restricted reader refuses)."""
    import collections
    from glasshpc.io.imported import read_bapst

    def m(s, d):
        d["metadata"] = collections.Counter(a=1)
        return d
    write_bapst_set(str(tmp_path), n=1, mutate=m)
    path = str(tmp_path / "system_000.pickle")
    with pytest.raises(InputError, match="refused to load collections.Counter"):
        read_bapst(path)
    assert read_bapst(path, trusted=True).displacements.shape == (IMP_R, 3, 300, 3)


def test_glassbench_density_too_high(tiny_yaml, tmp_path, capsys):
    """ρ = 1.3 on ρ = 1.2 data: the initial positions reach beyond the smaller box (the data would be
    rewrapped into it)."""
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench",
                      ["model.density", "ka_000.npz", "outside the box"], **{"model.density": 1.3})


def test_glassbench_density_too_low(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench",
                      ["model.density", "ka_000.npz", "no particle within a slab"], **{"model.density": 1.0})


def test_glassbench_overlapping_pair(tiny_yaml, tmp_path, capsys):
    def m(s, arrays):
        if s == 3:
            arrays["initial_positions"][5] = arrays["initial_positions"][200] + [0.2, 0, 0]
            arrays["positions"][:, 5] = arrays["initial_positions"][5]
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["ka_003.npz", "particles 5 and 200", "overlap"],
                      m)


def test_glassbench_wrapped_replicas(tiny_yaml, tmp_path, capsys):
    """Replica positions wrapped into the box (particles crossing the boundary jump by ≈ L)."""
    def m(s, arrays):
        if s == 2:
            rep = arrays["positions"]
            edge = np.argmax(arrays["initial_positions"][:, 0])
            rep[:, edge, 0] += 0.3                       # crosses x = L ...
            arrays["positions"] = rep % L300             # ... and is wrapped back
    _imported_refused(tiny_yaml, tmp_path, capsys, "glassbench", ["ka_002.npz", "look wrapped", "along x"], m)


def test_bapst_box_disagrees_with_density(tiny_yaml, tmp_path, capsys):
    _imported_refused(tiny_yaml, tmp_path, capsys, "bapst", ["model.density", "system_000.pickle", "cubic box"],
                      **{"model.density": 1.25})


def test_imported_error_crosses_ranks(tiny_yaml, tmp_path):
    """2 ranks: the bad file belongs to rank 1; its ConfigError reaches every rank intact (pickled through
    allgather), the run exits 2 naming the file and the key, and nothing is created."""
    folder = tmp_path / "data"
    folder.mkdir()

    def m(s, arrays):
        if s == 1:
            arrays["positions"] = arrays["positions"][:2]
    write_glassbench_set(str(folder), mutate=m)
    (tmp_path / "run.yaml").write_text(_imported_yaml(tiny_yaml, tmp_path, "glassbench"))
    before = _tree(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "glasshpc.run", "run.yaml"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "iso.replicas" in p.stderr and "ka_001.npz holds 2 replicas" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert _tree(tmp_path) == before


def test_errors_survive_pickling():
    import pickle
    e = pickle.loads(pickle.dumps(config.ConfigError("iso.replicas", "too many")))
    assert isinstance(e, config.ConfigError) and e.key == "iso.replicas" and str(e).endswith("too many")
    e = pickle.loads(pickle.dumps(InputError("a.data line 3: bad")))
    assert isinstance(e, InputError) and str(e) == "a.data line 3: bad"
