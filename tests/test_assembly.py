"""Shard-mode assembly (Store.finalize → _copy_slots): slots that are one chunk, several chunks or
part of a chunk all land bitwise in the output (raw chunk writes where a slot tiles whole chunks)."""
import h5py
import numpy as np
from mpi4py import MPI

from glasshpc.parallel import Context
from glasshpc.store import Store, _chunk_tiles, _chunks


def test_chunk_tiles():
    shape = (5, 3, 40, 2000, 3)                      # one slot (s, r) = one 0.96 MB chunk
    assert _chunks(shape, np.float32) == (1, 1, 40, 2000, 3)
    assert _chunk_tiles(shape, _chunks(shape, np.float32), 2) == [(0, 0, 0)]
    assert _chunk_tiles(shape, _chunks(shape, np.float32), 1) == [(0, 0, 0, 0), (1, 0, 0, 0),
                                                                  (2, 0, 0, 0)]
    assert _chunk_tiles((8, 3), (8, 3), 1) is None   # many slots share one chunk
    assert _chunk_tiles((), None, 0) is None


def test_assembly_bitwise_for_every_slot_shape(tmp_path):
    rng = np.random.default_rng(1)
    layout = {"big": ((3, 4, 70000), np.float64),      # slot (s,) = 4 chunks of (1, 1, 70000)
              "one": ((3, 2, 50, 3), np.float32),      # slot (s, r) inside a shared chunk
              "whole": ((3, 2, 100000), np.float64),    # slot (s, r) = one chunk
              "ints": ((3, 5), np.int32)}
    data = {k: (rng.normal(size=s) * 100).astype(d) for k, (s, d) in layout.items()}
    path = str(tmp_path / "out.h5")
    st = Store(path, Context(MPI.COMM_SELF), layout, mode="shards")
    for s in (2, 0, 1):                                 # written out of order
        st.write("big", (s,), data["big"][s])
        st.write("ints", (s,), data["ints"][s])
        for r in range(2):
            st.write("one", (s, r), data["one"][s, r])
            st.write("whole", (s, r), data["whole"][s, r])
    st.finalize(lambda h5: None)
    with h5py.File(path, "r") as f:
        assert f["big"].chunks == (1, 1, 70000) and f["whole"].chunks == (1, 1, 100000)
        for k in layout:
            assert f[k].dtype == data[k].dtype and np.array_equal(f[k][()], data[k]), k
