"""The store's mpio mode (h5py built against parallel HDF5: one data.h5 written by every rank)
against the shard mode: the full pipeline gives bitwise the same datasets, a SIGKILLed mpio run
resumes to the same file, an interrupted finalisation can be retried, and GLASSHPC_STORE_MODE
picks the mode. The mpio tests skip when h5py has no MPI (the README venv); CI runs them in a
second venv with a parallel h5py (.ci/run)."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc.parallel import Context
from glasshpc.store import Store, resolve_mode

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
HAS_MPI = bool(h5py.get_config().mpi)
needs_mpio = pytest.mark.skipif(not HAS_MPI, reason="h5py without parallel HDF5 (mpio)")
needs_mpiexec = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")
LAYOUT = {"a": ((4, 3), np.float64), "iso/b": ((4, 2, 5), np.float32),
          "scratch/c": ((4, 2), np.float64)}


def _run(ranks, cfg, *flags, mode, **env):
    cmd = [sys.executable, "-m", "glasshpc.run", str(cfg), *flags]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    full = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1",
                GLASSHPC_STORE_MODE=mode, **env)
    if "GLASSHPC_KILL_AFTER" not in env:
        full.pop("GLASSHPC_KILL_AFTER", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full,
                          cwd=os.path.dirname(cfg))


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
        mode = f["provenance"].attrs["store_mode"]
    return out, mode


def _assert_bitwise(a_path, b_path):
    """Every dataset of the two files equal bitwise (NaN = NaN), fits included."""
    (a, _), (b, _) = _datasets(a_path), _datasets(b_path)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind in "OSU":
            assert list(a[name]) == list(b[name]), name
        else:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
            assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


@pytest.fixture(scope="module")
def shards_run(tmp_path_factory):
    """The tiny config on 2 ranks in shard mode (forced), with 6 replicas."""
    from conftest import TINY_YAML
    folder = tmp_path_factory.mktemp("shards")
    cfg = folder / "run.yaml"
    cfg.write_text(TINY_YAML.format(output=str(folder / "run.h5")).replace("replicas: 3",
                                                                         "replicas: 6"))
    p = _run(2, cfg, mode="shards")
    assert p.returncode == 0, p.stderr
    assert _datasets(folder / "run.h5")[1] == "shards"
    return cfg.read_text(), folder / "run.h5"


@needs_mpio
@needs_mpiexec
def test_mpio_pipeline_bitwise_equals_shards(tmp_path, shards_run):
    text, reference = shards_run
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text.replace(str(reference), str(tmp_path / "run.h5")))
    p = _run(2, cfg, mode="mpio")
    assert p.returncode == 0, p.stderr
    assert _datasets(tmp_path / "run.h5")[1] == "mpio"
    assert sorted(os.listdir(tmp_path)) == ["run.h5", "run.yaml"]   # renamed, no .partial left
    _assert_bitwise(reference, tmp_path / "run.h5")


@needs_mpio
@needs_mpiexec
def test_mpio_sigkill_in_replicas_then_resume(tmp_path, shards_run):
    """Every rank SIGKILLs itself after its 4th replica task (data.h5 open on both ranks); the
    resumed mpio run (on 3 ranks: data.h5 reopened by another communicator size) keeps the
    finished tasks and ends bitwise equal to the 2-rank shard run."""
    text, reference = shards_run
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text.replace(str(reference), str(tmp_path / "run.h5")))
    p = _run(2, cfg, mode="mpio", GLASSHPC_KILL_AFTER="replicas:4")
    assert p.returncode != 0
    assert not (tmp_path / "run.h5").exists()
    assert os.path.exists(tmp_path / "run.h5.partial" / "data.h5")
    p = _run(3, cfg, "--resume", mode="mpio")
    assert p.returncode == 0, p.stderr
    assert "[replicas] resuming:" in p.stdout
    _assert_bitwise(reference, tmp_path / "run.h5")


def test_store_mode_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSHPC_STORE_MODE", "shards")
    assert resolve_mode() == "shards"
    assert resolve_mode("shards") == "shards"
    st = Store(str(tmp_path / "x.h5"), Context(MPI.COMM_SELF), LAYOUT, config={"x": 1})
    assert st.mode == "shards"
    st.close()
    monkeypatch.setenv("GLASSHPC_STORE_MODE", "parallel")
    with pytest.raises(ValueError, match="GLASSHPC_STORE_MODE='parallel'.*shards, mpio, auto"):
        resolve_mode()
    monkeypatch.delenv("GLASSHPC_STORE_MODE")
    assert resolve_mode() == ("mpio" if HAS_MPI else "shards")
    if not HAS_MPI:
        with pytest.raises(ValueError, match="parallel HDF5"):
            resolve_mode("mpio")


@pytest.mark.parametrize("mode", ["shards", pytest.param("mpio", marks=needs_mpio)])
def test_transient_data_resumes_but_stays_out_of_the_output(tmp_path, mode):
    path = str(tmp_path / "out.h5")
    ctx = Context(MPI.COMM_SELF)
    c = np.arange(8.0).reshape(4, 2)
    st = Store(path, ctx, LAYOUT, mode=mode, config={"x": 1}, transient=["scratch/c"])
    for s in range(2):
        st.write("scratch/c", (s,), c[s])
        st.commit("C", s)
    st.close()
    st = Store(path, ctx, LAYOUT, mode=mode, config={"x": 1}, transient=["scratch/c"],
               resume=True)
    assert st.completed("C") == {(0,), (1,)}
    for s in range(4):
        if s >= 2:
            st.write("scratch/c", (s,), c[s])
        st.write("a", (s,), np.full(3, s))
        for r in range(2):
            st.write("iso/b", (s, r), np.full(5, s + r, np.float32))
    st.sync()
    np.testing.assert_array_equal(st.read("scratch/c", (1,)), c[1])
    st.finalize(lambda h5: None)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["a", "iso"] and list(f["iso"]) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]


@needs_mpio
def test_mpio_finalisation_retried_after_a_failing_write_extra(tmp_path):
    """write_extra fails after adding a dataset inside a layout group (as /iso/times): the data is
    kept, and the resumed run's finalisation writes it again instead of failing on the leftover."""
    path = str(tmp_path / "out.h5")
    ctx = Context(MPI.COMM_SELF)
    layout = {k: v for k, v in LAYOUT.items() if k != "scratch/c"}
    st = Store(path, ctx, layout, mode="mpio", config={"x": 1})
    for s in range(4):
        st.write("a", (s,), np.full(3, s))
        for r in range(2):
            st.write("iso/b", (s, r), np.full(5, s + r, np.float32))
    st.commit("all", 0)

    def failing(h5):
        h5["iso/times"] = np.arange(3.0)
        h5["extra/x"] = 1.0
        raise OSError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        st.finalize(failing)
    st.close()
    assert not os.path.exists(path)
    st = Store(path, ctx, layout, mode="mpio", config={"x": 1}, resume=True)
    assert st.completed("all") == {(0,)}
    st.finalize(lambda h5: h5.__setitem__("iso/times", np.arange(4.0)))
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["a", "iso"] and list(f["iso/times"][()]) == [0, 1, 2, 3]
        assert f["iso/b"][3, 1, 0] == 4
