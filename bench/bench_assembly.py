"""Benchmark: the serial (shard-mode) final assembly, Store.finalize → _copy_slots, at paper scale,
against a plain ``cp`` of the same bytes.

    /work/venv/bin/python bench/bench_assembly.py                  # ka.yaml's /iso/displacements, 4.5 GiB
    /work/venv/bin/python bench/bench_assembly.py --snapshots 20   # 1/5 of it (0.9 GiB)

Writes the shard of ``/iso/displacements`` [S, R, T, N, 3] f4 (inputs/ka.yaml: S = 100, R = 50,
T = 40, N = 2000; one slot = one replica, 0.96 MB) through a real shard-mode Store (one process,
so one data-*.bin; finalize reads slot by slot whichever shard holds a slot), then times

* ``cp`` of the shard bytes to one file, then fsync of the copy (the reference: the same bytes
  read once and written once);
* ``Store.finalize`` (completeness check, slot-by-slot copy into the HDF5 output, rename), then
  fsync of the output.

Dirty pages are flushed (os.sync) before each timed step, so both start from the same state and
end with the bytes on disk. Prints GB/s of both, their ratio, and the growth of the process's
peak RSS during finalize (the assembly streams one slot at a time: it must stay ≈ one slot, not
GiB). Numbers on a shared machine: quote the ratio.
"""
import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time

import numpy as np
from mpi4py import MPI

from glasshpc.parallel import Context
from glasshpc.store import Store


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snapshots", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=50)
    ap.add_argument("--times", type=int, default=40)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    S, R, T, N = args.snapshots, args.replicas, args.times, args.n
    shape = (S, R, T, N, 3)
    nbytes = int(np.prod(shape)) * 4
    folder = tempfile.mkdtemp(prefix="bench-assembly-", dir=args.dir)
    out = os.path.join(folder, "out.h5")
    print(f"/iso/displacements {list(shape)} f4: {nbytes / 2**30:.2f} GiB in {S * R} slots of "
          f"{T * N * 12 / 1e6:.2f} MB, scratch {folder}")
    try:
        ctx = Context(MPI.COMM_SELF)
        st = Store(out, ctx, {"iso/displacements": (shape, np.float32)}, mode="shards",
                   config={"bench": 1})
        base = np.random.default_rng(0).normal(size=(T, N, 3)).astype(np.float32)
        t0 = time.perf_counter()
        for s in range(S):
            for r in range(R):
                st.write("iso/displacements", (s, r), base + np.float32(s + r / R))
            st.commit("replicas", s)
        t_write = time.perf_counter() - t0
        shards = [os.path.join(st.partial, n) for n in os.listdir(st.partial)
                  if n.endswith(".bin")]
        assert sum(os.path.getsize(p) for p in shards) == nbytes
        print(f"shards written (with fsync per snapshot) in {t_write:.1f} s "
              f"({nbytes / t_write / 1e9:.2f} GB/s)")

        os.sync()
        copy = os.path.join(folder, "copy.bin")
        t0 = time.perf_counter()
        subprocess.run(["cp", shards[0], copy], check=True)
        fsync_path(copy)
        t_cp = time.perf_counter() - t0
        os.remove(copy)

        os.sync()
        rss0 = peak_rss_mib()
        t0 = time.perf_counter()
        st.finalize(lambda h5: None)
        fsync_path(out)
        t_fin = time.perf_counter() - t0
        rss1 = peak_rss_mib()
        st.close()
        assert os.path.getsize(out) >= nbytes
        print(f"cp + fsync           : {t_cp:7.2f} s  {nbytes / t_cp / 1e9:6.2f} GB/s")
        print(f"Store.finalize + fsync: {t_fin:7.2f} s  {nbytes / t_fin / 1e9:6.2f} GB/s")
        print(f"ratio finalize / cp throughput: {t_cp / t_fin:.2f}")
        print(f"peak RSS grew by {rss1 - rss0:.1f} MiB during finalize (data {nbytes / 2**20:.0f} "
              f"MiB, one slot {T * N * 12 / 2**20:.2f} MiB)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
