"""Crash, stop and resume with real processes and real signals; identical results on 1, 2, 3 ranks.

Every run here is ``[mpiexec -n K] python -m glasshpc.run`` in a subprocess on the tiny KA config
(tests/conftest.py). A run is killed with SIGKILL part-way through a stage (one rank, polled from the
journal of finished tasks in OUTPUT.partial/, or every rank through the GLASSHPC_KILL_AFTER fault
hook), or stopped with SIGTERM as SLURM does; ``--resume`` must finish it without redoing finished
tasks and give datasets bitwise equal to an uninterrupted run. The fits (Allreduce of Gram matrices)
agree to round-off: their summation order depends on the rank count.
"""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import h5_datasets as _datasets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
TASK_DATASETS = ("snapshots/positions", "snapshots/types", "snapshots/box", "snapshots/sq_AA",
                 "iso/displacements", "propensity", "dynamics/fs", "descriptors/init")

pytestmark = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")


def _cmd(ranks, cfg, *flags):
    base = [sys.executable, "-m", "glasshpc.run", str(cfg), *flags]
    return base if ranks == 1 else [MPIEXEC, "-n", str(ranks)] + base


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **extra)
    env.pop("GLASSHPC_KILL_AFTER", None)
    env.update(extra)
    return env


def _run(ranks, cfg, *flags, **env):
    t0 = time.perf_counter()
    p = subprocess.run(_cmd(ranks, cfg, *flags), capture_output=True, text=True, timeout=300,
                       env=_env(**env), cwd=os.path.dirname(cfg))
    p.seconds = time.perf_counter() - t0
    return p


def _config(folder, tiny_yaml, name):
    folder.mkdir(exist_ok=True)
    cfg = folder / f"{name}.yaml"
    # 6 replicas: a replica stage long enough (≈ 3 s on 2 ranks) to be caught by polling
    cfg.write_text(tiny_yaml(str(folder / f"{name}.h5")).replace("replicas: 3", "replicas: 6"))
    return cfg




def _assert_same(a_path, b_path):
    a, b = _datasets(a_path), _datasets(b_path)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind in "OSU":          # feature names
            assert list(a[name]) == list(b[name]), name
        else:                                    # fits included: exact sums, dealt solves
            assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name
    for name in TASK_DATASETS:
        assert name in a


def _journal(partial):
    """[(attempt, stage, task)] of every finished task recorded in ``partial``."""
    out = []
    for name in sorted(os.listdir(partial)):
        if name.startswith("journal-"):
            attempt = int(name.split("-")[1][1:])
            with open(os.path.join(partial, name)) as fh:
                for line in fh.read().split("\n")[:-1]:
                    rec = json.loads(line)
                    out.append((attempt, rec["stage"], tuple(rec["task"])))
    return out


def _ranks_of(pid):
    """The MPI ranks (python processes running glasshpc.run) descending from ``pid``."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            try:
                with open(f"/proc/{c}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"python" in os.path.basename(argv[0]) and b"glasshpc.run" in argv:
                out.append(c)
    return sorted(out)


def _wait_for(partial, stage, count, proc, timeout=240):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if os.path.isdir(partial):
            try:
                if sum(1 for _, s, _ in _journal(partial) if s == stage) >= count:
                    return
            except (ValueError, OSError):   # a line being written right now
                pass
        time.sleep(0.02)
    raise AssertionError(f"{count} {stage} tasks not finished within {timeout} s")


@pytest.fixture(scope="module")
def tiny_yaml_module():
    from conftest import TINY_YAML
    return lambda output: TINY_YAML.format(output=output)


def test_sigkill_one_rank_during_replicas(tmp_path, tiny_yaml, reference):
    cfg = _config(tmp_path, tiny_yaml, "run")
    partial = str(tmp_path / "run.h5.partial")
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cmd(2, cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(), cwd=tmp_path)
    try:
        _wait_for(partial, "replicas", 4, proc)
        ranks = _ranks_of(proc.pid)
        assert len(ranks) == 2
        os.kill(ranks[-1], signal.SIGKILL)           # one rank dies; mpiexec tears down the rest
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = time.perf_counter() - t0
    assert proc.returncode != 0
    assert not (tmp_path / "run.h5").exists()        # nothing that looks complete
    before = _journal(partial)
    done = {t for _, s, t in before if s == "replicas"}
    assert 4 <= len(done) < 30
    p = _run(2, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    assert f"[replicas] resuming: {len(done)} of 30 tasks already done" in p.stdout
    assert not os.path.exists(partial)
    _assert_same(reference, tmp_path / "run.h5")
    print(f"SIGKILL of one rank after {killed_at:.1f} s with {len(done)}/30 replicas done; "
          f"resume on 2 ranks {p.seconds:.1f} s")


def test_sigkill_all_ranks_during_descriptors_resume_on_3(tmp_path, tiny_yaml, reference):
    """Every rank SIGKILLs itself right after its first descriptor task (fault hook), then the run
    resumes on 3 ranks: finished tasks are not redone, and the rank count does not matter."""
    cfg = _config(tmp_path, tiny_yaml, "run")
    partial = str(tmp_path / "run.h5.partial")
    p = _run(2, cfg, GLASSHPC_KILL_AFTER="descriptors:1")
    assert p.returncode != 0 and "Killed" in p.stdout + p.stderr
    assert not (tmp_path / "run.h5").exists()
    before = _journal(partial)
    # the first rank to die takes the other down, before or after its own first commit
    n_desc = sum(s == "descriptors" for _, s, _ in before)
    assert 1 <= n_desc <= 2
    assert sum(s == "replicas" for _, s, _ in before) == 30
    p3 = _run(3, cfg, "--resume")
    assert p3.returncode == 0, p3.stderr
    assert f"[descriptors] resuming: {n_desc} of 5 tasks already done" in p3.stdout
    _assert_same(reference, tmp_path / "run.h5")
    print(f"killed in descriptors after {p.seconds:.1f} s; resume on 3 ranks {p3.seconds:.1f} s")


def test_sigterm_stops_cleanly_and_resumes(tmp_path, tiny_yaml, reference):
    cfg = _config(tmp_path, tiny_yaml, "run")
    partial = str(tmp_path / "run.h5.partial")
    proc = subprocess.Popen(_cmd(2, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=tmp_path)
    try:
        _wait_for(partial, "replicas", 2, proc)
        t_sig = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)            # mpiexec forwards it to every rank, as srun
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stop_seconds = time.perf_counter() - t_sig
    assert proc.returncode == 3, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run.h5").exists()
    done = [t for _, s, t in _journal(partial) if s == "replicas"]
    assert len(done) == len(set(done)) >= 2
    p = _run(2, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    _assert_same(reference, tmp_path / "run.h5")
    print(f"SIGTERM → clean exit in {stop_seconds:.1f} s; resume {p.seconds:.1f} s")


def test_three_ranks_identical(tmp_path, tiny_yaml, reference):
    cfg = _config(tmp_path, tiny_yaml, "run")
    p = _run(3, cfg)
    assert p.returncode == 0, p.stderr
    _assert_same(reference, tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["provenance"].attrs["ranks"] == 3


def test_overwrite_then_two_kills_then_resume(tmp_path, tiny_yaml, reference):
    """--overwrite keeps the old output valid until the new run is complete; a run killed twice
    (snapshot stage on one rank, then replica stage on both) and resumed on 1 rank is identical to
    an uninterrupted run, and no finished task was ever done twice."""
    cfg = _config(tmp_path, tiny_yaml, "run")
    partial = str(tmp_path / "run.h5.partial")
    (tmp_path / "run.h5").write_bytes(b"old result")
    p = _run(2, cfg, "--overwrite", GLASSHPC_KILL_AFTER="snapshots:1:0")
    assert p.returncode != 0
    assert (tmp_path / "run.h5").read_bytes() == b"old result"
    assert _run(2, cfg, "--resume", GLASSHPC_KILL_AFTER="replicas:2").returncode != 0
    assert (tmp_path / "run.h5").read_bytes() == b"old result"
    records = [(s, t) for _, s, t in _journal(partial) if not s.startswith("_")]
    assert len(records) == len(set(records))         # no finished task was ever redone
    assert {a for a, _, _ in _journal(partial)} == {1, 2}
    p = _run(1, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    _assert_same(reference, tmp_path / "run.h5")


# -- the store's journal, in-process -----------------------------------------------------------

def _layout():
    return {"a": ((4, 3), np.float64), "b": ((4, 2, 5), np.float32)}


def test_torn_journal_line_is_ignored_and_resume_continues(tmp_path):
    """A kill during the journal append leaves a torn last line: that task counts as unfinished,
    the earlier ones are kept, and the finished file holds exactly what was written."""
    from mpi4py import MPI
    from glasshpc.parallel import Context
    from glasshpc.store import Store
    path = str(tmp_path / "out.h5")
    ctx = Context(MPI.COMM_SELF)
    rng = np.random.default_rng(0)
    a = rng.random((4, 3))
    st = Store(path, ctx, _layout(), mode="shards", config={"x": 1})
    for s in range(3):
        st.write("a", (s,), a[s])
        st.commit("A", s)
    st.close()
    journal = tmp_path / "out.h5.partial" / "journal-a001-r00000.jsonl"
    text = journal.read_text()
    journal.write_text(text[: len(text) - 25])       # task 2's line torn
    with pytest.raises(FileExistsError, match="--resume"):
        Store(path, ctx, _layout(), mode="shards", config={"x": 1})
    st = Store(path, ctx, _layout(), mode="shards", config={"x": 1}, resume=True)
    assert st.completed("A") == {(0,), (1,)}
    assert st.attempt == 2
    for s in (2, 3):
        st.write("a", (s,), a[s])
        st.commit("A", s)
    st.sync()
    np.testing.assert_array_equal(st.read("a", (0,)), a[0])
    for s in range(4):
        for r in range(2):
            st.write("b", (s, r), np.full(5, s + r / 10, np.float32))
    st.finalize(lambda h5: None)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["a"][()], a)
        assert f["b"][3, 1, 0] == np.float32(3.1)
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]


@pytest.mark.skipif(not h5py.get_config().mpi, reason="h5py without parallel HDF5 (mpio)")
def test_mpio_store_resume(tmp_path):
    """The mpio path: one data.h5 for all ranks, journal + checksums, resume, finalisation by
    rename (run under mpiexec with a parallel h5py; one rank suffices for the bookkeeping)."""
    from mpi4py import MPI
    from glasshpc.parallel import Context
    from glasshpc.store import Store
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    path = os.path.join(folder, "mpio.h5")
    ctx = Context(comm)
    a = np.arange(12.0).reshape(4, 3)
    st = Store(path, ctx, _layout(), mode="mpio", config={"x": 1})
    for s in ctx.mine([0, 1]):
        st.write("a", (s,), a[s])
        st.commit("A", s)
    st.close()                                       # as if killed after two tasks
    st = Store(path, ctx, _layout(), mode="mpio", config={"x": 1}, resume=True)
    assert st.completed("A") == {(0,), (1,)}
    for s in ctx.mine([2, 3]):
        st.write("a", (s,), a[s])
        st.commit("A", s)
    st.sync()
    for s in ctx.mine(list(range(4))):
        for r in range(2):
            st.write("b", (s, r), np.full(5, s + r, np.float32))
    st.finalize(lambda h5: h5.attrs.__setitem__("done", 1))
    comm.Barrier()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["a"][()], a)
        assert f["b"][3, 1, 0] == 4 and f.attrs["done"] == 1
    assert not os.path.exists(path + ".partial")


def test_dry_run_plan_matches_the_real_output(tmp_path, tiny_yaml, reference, capsys):
    """--dry-run creates nothing and predicts the output size of the run exactly (task datasets);
    its core-hour figure is the run's MD steps over the measured rate."""
    import re
    from glasshpc.run import main
    cfg = _config(tmp_path, tiny_yaml, "plan")
    before = sorted(os.listdir(tmp_path))
    assert main([str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == before
    assert "stage replicas   : 5 × 6 = 30 tasks" in out
    steps = int(re.search(r"MD: ([\d,]+) steps", out).group(1).replace(",", ""))
    assert steps == 5 * (2 + 5 + 5) * 200 + 30 * 400        # melt+NVT+NVE of 5 snapshots; replicas
    rate = float(re.search(r"rank 0: ([\d.e+-]+) M atom-steps/s", out).group(1)) * 1e6
    core_h = float(re.search(r"MD ≈ ([\d.e+-]+) core-hours", out).group(1))
    # rate and core-hours are each printed to 3 digits: up to 5e-3 relative rounding each
    assert core_h == pytest.approx(steps * 300 / rate / 3600, rel=1.05e-2)
    gib = float(re.search(r"output size ≈ ([\d.e+-]+) GiB", out).group(1))
    from glasshpc import config as config_mod, stages
    c = config_mod.load(str(cfg))[0]
    names = stages.layout(c, stages.descriptor_spec(c, 2.0).n_features)
    with h5py.File(reference, "r") as f:
        actual = sum(f[name].size * f[name].dtype.itemsize for name in names)
    assert gib == pytest.approx(actual / 2**30, rel=6e-3)       # printed to 3 digits


def test_a_hung_rank_aborts_the_job_which_then_resumes(tmp_path, tiny_yaml, reference):
    """One rank stuck inside a task (here: sleeping 300 s in an inherent-state task) while the
    other has finished the stage: the stall watchdog at the stage boundary aborts the job within
    seconds (GLASSHPC_STALL_SECONDS = 2, tasks ≈ 0.2 s) with one message instead of holding the
    allocation; --resume then finishes bitwise equal to an uninterrupted run."""
    cfg = _config(tmp_path, tiny_yaml, "run")
    p = _run(2, cfg, GLASSHPC_SLOW_TASK="inherent states:2:300", GLASSHPC_STALL_SECONDS="2")
    assert p.returncode != 0 and p.seconds < 150, (p.seconds, p.stderr[-2000:])
    assert p.stderr.count("a rank hangs") == 1, p.stderr[-2000:]
    assert "stage 'inherent states'" in p.stderr and "1 of 2 ranks" in p.stderr
    assert not (tmp_path / "run.h5").exists()
    p = _run(2, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    _assert_same(reference, tmp_path / "run.h5")
