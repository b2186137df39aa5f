"""A durable finish: SIGKILL at every step of finalisation, a full disk, Ctrl-C under mpiexec.

Real processes on the tiny KA config (tests/conftest.py), output path relative to the run folder so
that a copy of a killed run's folder is the same run. Every state a kill or a full disk leaves must
be either resumable or finished, and the resumed output bitwise equal to an uninterrupted run.
"""
import glob
import os
import shutil
import signal
import subprocess
import time

import pytest

from test_resume import (MPIEXEC, _assert_same, _cmd, _env, _journal, _run,  # noqa: F401
                         _wait_for, tiny_yaml_module)

pytestmark = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")

STEPS = ("assembled", "synced", "renamed", "dir_synced", "trashed")


def _relative_config(folder, tiny_yaml):
    folder.mkdir(exist_ok=True)
    cfg = folder / "run.yaml"
    cfg.write_text(tiny_yaml("run.h5").replace("replicas: 3", "replicas: 6"))
    return cfg


@pytest.fixture(scope="module")
def all_tasks_done(tmp_path_factory, tiny_yaml_module):
    """A run killed at its first finalisation step: every task is journaled, nothing finished."""
    folder = tmp_path_factory.mktemp("done") / "run"
    cfg = _relative_config(folder, tiny_yaml_module)
    p = _run(1, cfg, GLASSHPC_KILL_AFTER="finalize:assembled")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert sorted(os.listdir(folder)) == ["run.h5.partial", "run.yaml"]
    return folder


def _state(folder):
    names = sorted(os.listdir(folder))
    return ("run.h5" in names, "run.h5.partial" in names,
            any(".trash-" in n for n in names))


@pytest.mark.parametrize("step", STEPS)
def test_kill_at_a_finalisation_step_then_resume(tmp_path, all_tasks_done, reference, step):
    folder = tmp_path / "run"
    shutil.copytree(all_tasks_done, folder)
    cfg = folder / "run.yaml"
    p = _run(1, cfg, "--resume", GLASSHPC_KILL_AFTER=f"finalize:{step}")
    assert p.returncode == -signal.SIGKILL, p.stderr
    output, partial, trash = _state(folder)
    assert output == (STEPS.index(step) >= STEPS.index("renamed"))
    assert partial == (step != "trashed") and trash == (step == "trashed")
    if output:   # whatever is under the final name is complete
        _assert_same(reference, folder / "run.h5")
    p = _run(1, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(folder)) == ["run.h5", "run.yaml"], p.stdout
    _assert_same(reference, folder / "run.h5")


def _mount_tmpfs(folder, size):
    folder.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    return p.returncode == 0


def _one_line_disk_full(p):
    assert p.returncode == 1, p.stderr
    ours = [line for line in p.stderr.splitlines() if line.startswith("glasshpc:")]
    assert len(ours) == 1 and "disk full writing" in ours[0], p.stderr
    assert "--resume" in ours[0] and "needs ≈" in ours[0]
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr


def test_full_disk_is_refused_or_reported_in_one_line_and_resumes(tmp_path, tiny_yaml, reference):
    """A tmpfs too small for the run: the resource plan refuses it (exit 2, nothing created);
    forced with --ignore-resources the run stops where the disk fills — during the tasks, before
    the final file (space checked first), or inside HDF5's write of it — each time with one line
    naming the path and the space still needed (exit 1, no temporary file left), and resumes to the
    uninterrupted result once the file system is larger."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        cfg = _relative_config(disk, tiny_yaml)
        p = _run(1, cfg)
        assert p.returncode == 2, p.stderr
        assert "resource plan" in p.stderr and "of disk at" in p.stderr
        assert "--ignore-resources" in p.stderr
        assert sorted(os.listdir(disk)) == ["run.yaml"]
        _one_line_disk_full(_run(1, cfg, "--ignore-resources"))           # in the task stages
        done = _journal(str(disk / "run.h5.partial"))
        assert done and not (disk / "run.h5").exists()
        subprocess.run(["mount", "-o", "remount,size=4200k", str(disk)], check=True)
        _one_line_disk_full(_run(1, cfg, "--resume", "--ignore-resources"))   # before assembly
        _one_line_disk_full(_run(1, cfg, "--resume", "--ignore-resources",
                                 GLASSHPC_FINAL_SPACE_CHECK="0"))        # inside HDF5's writes
        assert not glob.glob(str(disk / "run.h5.partial" / "*.tmp"))
        assert not (disk / "run.h5").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        p = _run(1, cfg, "--resume")
        assert p.returncode == 0, p.stderr
        assert sorted(os.listdir(disk)) == ["run.h5", "run.yaml"]
        _assert_same(reference, disk / "run.h5")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_ctrl_c_under_mpiexec_stops_cleanly_and_resumes(tmp_path, tiny_yaml, reference):
    cfg = _relative_config(tmp_path / "run", tiny_yaml)
    folder = cfg.parent
    proc = subprocess.Popen(_cmd(2, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=folder)
    try:
        _wait_for(str(folder / "run.h5.partial"), "replicas", 2, proc)
        os.kill(proc.pid, signal.SIGINT)                 # mpiexec forwards Ctrl-C to every rank
        out, err = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "stopped by SIGINT" in err and "--resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    p = _run(2, cfg, "--resume")
    assert p.returncode == 0, p.stderr
    _assert_same(reference, folder / "run.h5")
