"""Compile once (``python -m glasshpc.compile``) and the numba cache place (glasshpc/jitcache.py).

One compile of every kernel into the install's cache, exported to a temporary cache folder (module
fixture; cold ≈ 70 s in a fresh venv, where the rest of the session reuses it); then: a fresh
process finds every kernel there, a tiny pipeline run compiles nothing (no cache file written), and
read-only caches and installs (read-only bind mounts in a private mount namespace, which bind even
root) still work with a one-line notice, loading the warm kernels from a private copy.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from glasshpc import jitcache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "glasshpc")
_SCRUB = ("GLASSHPC_CACHE_DIR", "NUMBA_CACHE_DIR", "GLASSHPC_CACHE_NOTICE_SHOWN") \
    + jitcache._RANK_ENV

# one kernel through its public function; prints cache hits, misses and the cache folder used
USE_KERNEL = textwrap.dedent("""
    import numpy as np
    from glasshpc.structure.neighbors import NeighborList, _neighbor_list
    pos = np.random.default_rng(0).uniform(0.0, 5.0, (60, 3))
    NeighborList(pos, np.full(3, 5.0), 1.2)
    s = _neighbor_list.stats
    print(sum(s.cache_hits.values()), sum(s.cache_misses.values()), s.cache_path)
""")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _files(folder):
    """{path: mtime_ns} of the numba cache files under ``folder``."""
    return {p: os.stat(p).st_mtime_ns
            for p in glob.glob(os.path.join(folder, "**", "*.nb[ic]"), recursive=True)}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache folder holding every kernel: ``python -m glasshpc.compile`` run into the install's own
    cache (numba's default next to the sources, which the rest of the test session uses too, so no
    kernel is compiled twice in a fresh CI venv), then exported to a GLASSHPC_CACHE_DIR layout with
    jitcache.seed — as a user copies a warmed cache to node-local disk."""
    r = subprocess.run([sys.executable, "-m", "glasshpc.compile"], env=_env(),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) kernel signatures compiled, (\d+) loaded", r.stdout)
    assert m and int(m[1]) + int(m[2]) > 20, r.stdout
    cache = str(tmp_path_factory.mktemp("numba-cache"))
    pairs = [(os.path.join(d, "__pycache__"), jitcache.cache_subdir(d))
             for d in jitcache.kernel_dirs()]
    assert jitcache.seed(pairs, cache) > 40
    return cache


def test_kernel_module_list_is_complete():
    """Every module with an @njit(cache=True) kernel is compiled by glasshpc.compile."""
    found = set()
    for path in glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True):
        text = open(path, encoding="utf-8").read()
        if re.search(r"^@njit\((.*cache=True|.*\*\*_JIT)", text, re.M):
            rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            found.add(rel)
    assert found == set(jitcache.KERNEL_MODULES)


def test_every_kernel_cached_and_loaded_warm(warm):
    """The cache holds a signature of every (non-inlined) kernel, and a fresh process running the
    compile again loads them all without compiling or writing anything."""
    before = _files(warm)
    assert len(before) > 40
    check = ("from glasshpc import compile as c; k = c.dispatchers(); "
             "print(len(k), c.uncached(k))")
    r = subprocess.run([sys.executable, "-c", check], env=_env(GLASSHPC_CACHE_DIR=warm),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n, missing = r.stdout.split(" ", 1)
    assert int(n) > 30 and missing.strip() == "[]"
    r = subprocess.run([sys.executable, "-m", "glasshpc.compile"],
                       env=_env(GLASSHPC_CACHE_DIR=warm), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r" 0 kernel signatures compiled, [1-9]\d* loaded from the cache "
                     + re.escape(warm), r.stdout), r.stdout
    assert _files(warm) == before


def test_warm_pipeline_run_compiles_nothing(warm, tiny_yaml, tmp_path):
    """A tiny run (descriptors, SANN, cage MC, inherent states) with the warm cache writes no
    cache file: the compile command produced exactly the signatures the stages ask for."""
    before = _files(warm)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_yaml(str(tmp_path / "tiny.h5")))
    r = subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfg)],
                       env=_env(GLASSHPC_CACHE_DIR=warm), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "numba cache" not in r.stderr
    assert _files(warm) == before


def _can_mount_read_only(tmp):
    probe = os.path.join(tmp, "probe")
    os.makedirs(probe, exist_ok=True)
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --bind {probe} {probe} && mount -o remount,ro,bind {probe} && "
                        f"! touch {probe}/x 2>/dev/null"], capture_output=True)
    return r.returncode == 0


def _run_read_only(read_only, env, code, cwd):
    """Run ``python -c code`` with every folder of ``read_only`` bind-mounted read-only (private
    mount namespace: nothing changes outside, and root cannot write there either)."""
    mounts = " && ".join(f"mount --bind {p} {p} && mount -o remount,ro,bind {p}"
                         for p in read_only)
    return subprocess.run(["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh",
                           sys.executable, "-c", code], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def ro(tmp_path):
    if not _can_mount_read_only(str(tmp_path)):
        pytest.skip("cannot make read-only bind mounts here (needs unshare -m and mount)")
    home = tmp_path / "home"
    home.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return str(home), str(tmp)


@pytest.mark.parametrize("variable", ["GLASSHPC_CACHE_DIR", "NUMBA_CACHE_DIR"])
def test_read_only_warm_cache_is_used(warm, ro, tmp_path, variable):
    """A read-only cache named by either variable (numba alone silently ignores a read-only
    NUMBA_CACHE_DIR): one notice line, and the warm kernels load from the private copy."""
    home, tmp = ro
    copy = str(tmp_path / "installed-cache")
    shutil.copytree(warm, copy)
    env = _env(**{variable: copy}, HOME=home, XDG_CACHE_HOME=home, TMPDIR=tmp)
    r = _run_read_only([copy, home], env, USE_KERNEL, str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{copy} ({variable}) is not writable" in lines[0], r.stderr
    private = os.path.join(tmp, f"glasshpc-numba-{os.getuid()}")
    assert f"private cache {private}" in lines[0] and "warm cache files copied" in lines[0]
    hits, misses, path = r.stdout.split()
    assert int(hits) >= 1 and int(misses) == 0 and path.startswith(private)


def test_read_only_install(warm, ro, tmp_path):
    """A read-only install whose __pycache__ folders were warmed by the installer, no writable
    home (this is what failed with "cannot cache function '_wrap': no locator available"):
    works, says so once (rank 0 only), and loads the installer's kernels."""
    home, tmp = ro
    site = tmp_path / "site"
    shutil.copytree(PKG, site / "glasshpc", ignore=shutil.ignore_patterns("__pycache__"))
    # the installer's in-tree cache: numba names files by module and line, not by folder
    for d in jitcache.kernel_dirs():
        dest = site / "glasshpc" / os.path.relpath(d, PKG) / "__pycache__"
        dest.mkdir(parents=True, exist_ok=True)
        for f in glob.glob(os.path.join(warm, jitcache.cache_subdir(d), "*.nb[ic]")):
            shutil.copy2(f, dest)
    env = _env(HOME=home, XDG_CACHE_HOME=home, TMPDIR=tmp)
    env["PYTHONPATH"] = str(site)
    r = _run_read_only([str(site), home], env, USE_KERNEL, str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "(the install's) is not writable" in lines[0], r.stderr
    hits, misses, path = r.stdout.split()
    assert int(hits) >= 1 and int(misses) == 0 and path.startswith(tmp)
    # rank 1 of an MPI launch stays quiet; a second process finds the private copy in place
    r = _run_read_only([str(site), home], dict(env, PMI_RANK="1"), USE_KERNEL, str(tmp_path))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.split()[:2] == ["1", "0"]


def test_nothing_writable_still_runs(ro, tmp_path):
    """No writable cache, install, home or temporary folder: kernels compile in memory, one notice."""
    home, tmp = ro
    site = tmp_path / "site"
    shutil.copytree(PKG, site / "glasshpc", ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(HOME=home, XDG_CACHE_HOME=home, TMPDIR=tmp)
    env["PYTHONPATH"] = str(site)
    code = "import glasshpc.structure.neighbors as n, numpy as np; " \
           "print(n._wrap(np.ones((2, 3)), np.full(3, 0.7)).sum())"
    r = _run_read_only([str(site), home, tmp, "/tmp", "/var/tmp", str(tmp_path)], env, code,
                       str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert abs(float(r.stdout) - 1.8) < 1e-12
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "compiled in memory" in lines[0], r.stderr
