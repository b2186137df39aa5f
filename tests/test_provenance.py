"""/provenance records the source (git commit read from the repository files, or a hash of the package) and the
launch (argv, MPI launcher, batch-job environment); --describe prints the defaults as a YAML config."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import yaml

import glasshpc
from glasshpc import config, provenance
from glasshpc.run import main


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_run_records_source_and_launch(tiny_run):
    with h5py.File(tiny_run, "r") as f:
        p = dict(f["provenance"].attrs)
    pkg = os.path.dirname(glasshpc.__file__)
    try:
        head = _git(pkg, "rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        head = ""
    assert p["source_commit"] == head
    assert p["source_sha256"] == provenance.package_sha256() and len(p["source_sha256"]) == 64
    launch = json.loads(p["launch"])
    assert launch["argv"] == sys.argv and launch["ranks"] == 1 and launch["executable"] == sys.executable


def test_git_commit_from_files(tmp_path):
    """Loose refs, packed refs, a detached HEAD and a worktree: the commit read from the files equals git's."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "two")
    want = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_commit(str(repo / "pkg")) == (want, "trunk")
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "trunk").exists()
    assert provenance.git_commit(str(repo / "pkg")) == (want, "trunk")
    _git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"), "HEAD~1")
    assert provenance.git_commit(str(tmp_path / "wt")) == (_git(tmp_path / "wt", "rev-parse", "HEAD"), "side")
    _git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert provenance.git_commit(str(repo)) == (_git(repo, "rev-parse", "HEAD"), "")
    assert provenance.git_commit(str(tmp_path)) == (None, None)


def test_package_hash_follows_the_code_not_the_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(os.path.dirname(glasshpc.__file__), a, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(a, b)
    assert provenance.package_sha256(str(a)) == provenance.package_sha256(str(b))
    (b / "io" / "imported.py").write_text((b / "io" / "imported.py").read_text() + "\n")
    assert provenance.package_sha256(str(a)) != provenance.package_sha256(str(b))


def test_launcher_and_job_environment(tmp_path):
    """Under mpiexec with a batch-job variable set, the launch record names the launcher's command line."""
    env = dict(os.environ, SLURM_JOB_ID="4242")
    code = "import json; from glasshpc import provenance; print(json.dumps(provenance.launch_record(1)))"
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", "1", sys.executable,
                          "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    assert os.path.basename(rec["launcher"][0]) == "mpiexec" and rec["launcher"][1:3] == ["-n", "1"]
    assert rec["env"]["SLURM_JOB_ID"] == "4242"


def test_describe_is_a_config(tmp_path, capsys):
    """--describe prints YAML that parses, and whose values are the defaults: config.parse accepts it with an
    output key and gives the default sections back."""
    assert main(["--describe"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    data["output"] = str(tmp_path / "x.h5")
    cfg = config.parse(yaml.safe_dump(data, allow_unicode=True))
    for name in ("md", "dynamics", "descriptors", "inherent", "cage", "fits", "parallel"):
        assert getattr(cfg, name) == getattr(config.Config, "__dataclass_fields__")[name].default_factory(), name
    assert cfg.imported is None and cfg.model.name == config.DESCRIBE_EXAMPLES["model.name"]
