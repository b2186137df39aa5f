"""The HDF5 store: slots round-trip through shards, the output appears only when complete."""
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from glasshpc.parallel import Context
from glasshpc.store import Store

LAYOUT = {"a": ((4, 3), np.float64), "b": ((4, 2, 5), np.float32)}


def test_roundtrip_and_atomic_finalize(tmp_path):
    path = str(tmp_path / "out.h5")
    st = Store(path, Context(MPI.COMM_SELF), LAYOUT, mode="shards")
    rng = np.random.default_rng(0)
    a = rng.random((4, 3))
    b = rng.random((4, 2, 5)).astype(np.float32)
    for s in range(4):
        st.write("a", (s,), a[s])
    st.sync()
    for s in range(4):
        for r in range(2):
            st.write("b", (s, r), b[s, r])
    np.testing.assert_array_equal(st.read("a", (2,)), a[2])
    assert not os.path.exists(path)                 # nothing under the final name yet
    st.finalize(lambda h5: h5.attrs.__setitem__("note", "done"))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["a"][()], a)
        np.testing.assert_array_equal(f["b"][()], b)
        assert f.attrs["note"] == "done"
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]


def test_incomplete_run_is_not_finalized(tmp_path):
    path = str(tmp_path / "out.h5")
    st = Store(path, Context(MPI.COMM_SELF), LAYOUT, mode="shards")
    for s in range(4):
        st.write("a", (s,), np.ones(3))
    st.write("b", (0, 0), np.ones(5, np.float32))   # slots (0, 1) … (3, 1) never written
    with pytest.raises(RuntimeError, match="missing slots"):
        st.finalize(lambda h5: None)
    st.close()
    assert not os.path.exists(path)
    assert os.path.isdir(path + ".partial")          # the partial data is kept


def test_missing_shard_refused(tmp_path):
    path = str(tmp_path / "out.h5")
    st = Store(path, Context(MPI.COMM_SELF), {"a": ((2, 3), np.float64)}, mode="shards")
    st.write("a", (0,), np.ones(3))
    st.write("a", (1,), np.ones(3))
    st.sync()
    for name in os.listdir(path + ".partial"):
        os.remove(os.path.join(path + ".partial", name))
    with pytest.raises(RuntimeError, match="missing"):
        st.finalize(lambda h5: None)
    assert not os.path.exists(path)
