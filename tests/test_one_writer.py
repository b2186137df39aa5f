"""One writer per output and checksummed journal records.

Concurrency runs are real processes (``[mpiexec -n 2] python -m glasshpc.run``) on the tiny KA config
(tests/conftest.py); the lock and journal cases run the store in-process. A refused run must exit 2,
name the holder, change nothing, and leave the running run to finish bitwise equal to an
uninterrupted one.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi4py import MPI

from glasshpc.parallel import Context
from glasshpc.runlock import HELD_NAME, LockHeld
from glasshpc.store import AlreadyFinished, ResumeError, Store
from test_resume import (MPIEXEC, _assert_same, _cmd, _config, _env, _run, _wait_for,  # noqa: F401
                         tiny_yaml_module)

LAYOUT = {"a": ((4, 3), np.float64), "b": ((4, 2, 5), np.float32)}
pytestmark = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")


def _listing(folder):
    return sorted(os.listdir(folder))


def test_second_run_resume_and_overwrite_refused_while_a_run_is_active(tmp_path, tiny_yaml,
                                                                     reference):
    """run + run, run + resume, run + overwrite: the second is refused (exit 2, the holder's PID
    named), creates and deletes nothing, and the first finishes bitwise equal to an uninterrupted
    run."""
    cfg = _config(tmp_path, tiny_yaml, "run")
    partial = str(tmp_path / "run.h5.partial")
    # one inherent-state task sleeps 30 s: the run is surely alive while the three second runs
    # start and are refused (a tiny run can otherwise finish before the third; results unchanged)
    proc = subprocess.Popen(_cmd(2, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(GLASSHPC_SLOW_TASK="inherent states:1:30"),
                            cwd=tmp_path)
    try:
        _wait_for(partial, "replicas", 2, proc)
        with open(os.path.join(partial, "lock")) as fh:
            holder = json.load(fh)
        assert holder["pid"] != proc.pid and holder["host"]      # rank 0 of the run holds it
        for flags in ((), ("--resume",), ("--overwrite",)):
            top = _listing(tmp_path)
            p = _run(2, cfg, *flags)                              # a second 2-rank run
            assert p.returncode == 2, (flags, p.stderr)
            assert "in use by glasshpc run PID" in p.stderr and str(holder["pid"]) in p.stderr
            assert "Traceback" not in p.stderr
            assert _listing(tmp_path) == top                      # nothing created or removed
            assert os.path.isfile(os.path.join(partial, "run.json"))
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert _listing(tmp_path) == ["run.h5", "run.yaml"]
    _assert_same(reference, tmp_path / "run.h5")


def test_resume_of_a_finished_run_is_done_and_a_different_config_is_refused(tmp_path, tiny_yaml,
                                                                         reference):
    """--resume after the run finished (what a resubmitted job does) exits 0 and changes nothing;
    with another config the finished output is not touched either (exit 2)."""
    ref_cfg = reference.parent / "ref.yaml"
    before = os.stat(reference).st_mtime_ns
    p = _run(1, ref_cfg, "--resume")
    assert p.returncode == 0, p.stderr
    assert "is complete" in p.stdout
    other = tmp_path / "other.yaml"
    other.write_text(ref_cfg.read_text().replace("seed: 7", "seed: 8"))
    p = _run(1, other, "--resume")
    assert p.returncode == 2 and "nothing to resume" in p.stderr, p.stderr
    assert os.stat(reference).st_mtime_ns == before
    assert sorted(os.listdir(reference.parent)) == ["ref.h5", "ref.yaml"]


# -- the store in-process --------------------------------------------------------------------

def _store(path, **kw):
    return Store(str(path), Context(MPI.COMM_SELF), LAYOUT, mode="shards", config={"x": 1}, **kw)


def _two_tasks(path):
    st = _store(path)
    for s in range(2):
        st.write("a", (s,), np.full(3, s + 0.5))
        st.commit("A", (s, 7))
    st.close()
    return os.path.join(str(path) + ".partial", "journal-a001-r00000.jsonl")


@pytest.mark.parametrize("old, new, what", [
    ('"task": [1, 7]', '"task": [1, 8]', "task identity"),
    ('[["a", [1]', '[["a", [2]', "slot index"),
    ('[["a", [1]', '[["b", [1]', "dataset name"),
    ('"stage": "A"', '"stage": "B"', "stage"),
])
def test_journal_metadata_damage_refused_naming_file_and_line(tmp_path, old, new, what):
    journal = _two_tasks(tmp_path / "out.h5")
    text = open(journal).read()
    lines = text.split("\n")
    assert old in lines[1], (what, lines[1])
    lines[1] = lines[1].replace(old, new)
    with open(journal, "w") as fh:
        fh.write("\n".join(lines))
    with pytest.raises(ResumeError) as exc:
        _store(tmp_path / "out.h5", resume=True)
    assert f"{journal} line 2" in str(exc.value) and "checksum" in str(exc.value), what
    # the undamaged journal resumes
    with open(journal, "w") as fh:
        fh.write(text)
    st = _store(tmp_path / "out.h5", resume=True)
    assert st.completed("A") == {(0, 7), (1, 7)}
    st.close()


def test_journal_location_in_another_ranks_file_refused(tmp_path):
    """A record pointing at data outside its own rank's data file cannot come from a kill."""
    journal = _two_tasks(tmp_path / "out.h5")
    lines = open(journal).read().split("\n")
    rec = json.loads(lines[0])
    rec["slots"][0][2][0] = "data-a001-r00001.bin"
    from glasshpc.store import _record_crc
    rec.pop("crc")
    rec["crc"] = _record_crc(rec)                    # even with a matching checksum
    lines[0] = json.dumps(rec)
    with open(journal, "w") as fh:
        fh.write("\n".join(lines))
    with pytest.raises(ResumeError, match="line 1: .*not in this rank's data file"):
        _store(tmp_path / "out.h5", resume=True)


def test_older_partial_format_refused_with_a_clear_message(tmp_path):
    _two_tasks(tmp_path / "out.h5")
    run_json = tmp_path / "out.h5.partial" / "run.json"
    rec = json.loads(run_json.read_text())
    rec["format"] = "glasshpc-partial-1"
    run_json.write_text(json.dumps(rec))
    with pytest.raises(ResumeError, match="another version of glasshpc"):
        _store(tmp_path / "out.h5", resume=True)


def test_lock_is_held_for_the_store_life_and_released_by_close(tmp_path):
    a = _store(tmp_path / "out.h5")
    for flags in ({"resume": True}, {"overwrite": True}, {}):
        with pytest.raises((LockHeld, FileExistsError)) as exc:
            _store(tmp_path / "out.h5", **flags)
        if flags:
            assert isinstance(exc.value, LockHeld) and f"PID {os.getpid()}" in str(exc.value)
    a.close()
    b = _store(tmp_path / "out.h5", resume=True)      # a released (or dead) holder never blocks
    b.close()


def test_overwrite_refuses_an_output_that_is_a_directory(tmp_path):
    (tmp_path / "out.h5").mkdir()
    with pytest.raises(FileExistsError, match="is a directory"):
        _store(tmp_path / "out.h5", overwrite=True)
    assert _listing(tmp_path) == ["out.h5"]


def test_fallback_lock_file_stale_and_live_holders(tmp_path, monkeypatch):
    """GLASSHPC_LOCK=file (file systems without flock): a live holder is refused; a dead holder on
    this host, or one whose heartbeat is older than GLASSHPC_LOCK_STALE, is taken over."""
    monkeypatch.setenv("GLASSHPC_LOCK", "file")
    a = _store(tmp_path / "out.h5")
    held = tmp_path / "out.h5.partial" / HELD_NAME
    assert json.loads(held.read_text())["pid"] == os.getpid()
    with pytest.raises(LockHeld, match="last heartbeat"):
        _store(tmp_path / "out.h5", resume=True)
    a.close()
    assert not held.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket
    held.write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    _store(tmp_path / "out.h5", resume=True).close()             # dead on this host: stale
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held.write_text(json.dumps({"pid": sleeper.pid, "host": "elsewhere"}))
        with pytest.raises(LockHeld, match="elsewhere"):
            _store(tmp_path / "out.h5", resume=True)
        old = time.time() - 7 * 3600
        os.utime(held, (old, old))                               # silent for 7 h > 6 h
        _store(tmp_path / "out.h5", resume=True).close()
    finally:
        sleeper.kill()


def test_already_finished_output_of_this_config(tmp_path):
    st = _store(tmp_path / "out.h5")
    for s in range(4):
        st.write("a", (s,), np.ones(3))
        for r in range(2):
            st.write("b", (s, r), np.ones(5, np.float32))
    st.finalize(lambda h5: None)
    with pytest.raises(AlreadyFinished):
        _store(tmp_path / "out.h5", resume=True)
    with pytest.raises(FileExistsError, match="nothing to resume"):
        Store(str(tmp_path / "out.h5"), Context(MPI.COMM_SELF), LAYOUT, mode="shards",
              config={"x": 2}, resume=True)
    assert _listing(tmp_path) == ["out.h5"]


@pytest.mark.parametrize("mechanism", ["flock", "file"])
def test_live_output_refused_before_any_costly_resolution(tmp_path, tiny_yaml, capsys, mechanism,
                                                          monkeypatch):
    """execute() on an output another process holds raises LockHeld before it resolves
    ``md.suffix: auto`` (which runs the model): nothing logged, nothing created or changed; the
    check of a free folder creates nothing either (no lock file in 'file' mode)."""
    monkeypatch.setenv("GLASSHPC_LOCK", mechanism)
    import yaml

    from glasshpc import config
    from glasshpc.run import execute
    from glasshpc.runlock import RunLock
    from glasshpc.store import preflight

    out = str(tmp_path / "live.h5")
    partial = out + ".partial"
    os.makedirs(partial)
    holder = RunLock.acquire(partial)      # stands for the live run (flock is per open file)
    holder.write_holder()
    data = yaml.safe_load(tiny_yaml(out))
    data["md"]["suffix"] = "auto"
    text = yaml.safe_dump(data)
    before = _listing(partial)
    for kwargs in ({"resume": True}, {"overwrite": True}, {}):
        with pytest.raises(LockHeld, match=str(os.getpid())):
            execute(config.parse(text), text, Context(MPI.COMM_SELF), **kwargs)
    assert "LAMMPS suffix" not in capsys.readouterr().out
    assert _listing(partial) == before and _listing(tmp_path) == ["live.h5.partial"]
    holder.release()
    before = _listing(partial)
    preflight(out, Context(MPI.COMM_SELF), resume=True)      # free now: no refusal
    assert _listing(partial) == before
    with pytest.raises(FileExistsError, match="--resume"):
        preflight(out, Context(MPI.COMM_SELF))
