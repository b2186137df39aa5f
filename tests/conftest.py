"""Shared fixtures: a tiny but complete Kob–Andersen configuration (reduced LJ units)."""
import h5py
import pytest
import yaml

TINY_YAML = """
output: {output}
seed: 7
model: {{name: kob_andersen, n_particles: 300, density: 1.2, temperature: 0.8}}
md: {{melt_time: 2, nvt_time: 5, nve_time: 5}}
snapshots: {{count: 5}}
iso:
  replicas: 3
  times: {{start: 0.01, stop: 2.0, count: 8}}
descriptors:
  radial: [{{r_min: 0.8, r_max: 2.2, count: 8, delta: 0.12}}]
  angular: [{{r_min: 1.0, r_max: 2.0, count: 3, delta: 0.12}}]
  l: [2, 4, 6]
  generations: 1
  r_generation: 1.5
inherent: {{enabled: true, force_tolerance: 1.0e-5}}
cage: {{enabled: true, equilibration_sweeps: 20, measurement_sweeps: 60}}
fits:
  cv_folds: 3
  test_fraction: 0.25
  feature_sets:
    g0: {{generations: 0}}
    g1: {{generations: 1}}
    cs: {{features: init+cs+drcs, generations: 1}}
    all: {{features: fnet+drcs+cs+init, generations: 0}}
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Path (str) of a finished output of the tiny configuration, run once per test session on one
    rank (in this process). Read it; never modify it (copy it first)."""
    from mpi4py import MPI

    from glasshpc import config
    from glasshpc.parallel import Context
    from glasshpc.run import execute

    out = str(tmp_path_factory.mktemp("tiny_run") / "tiny.h5")
    text = TINY_YAML.format(output=out)
    execute(config.parse(text), text, Context(MPI.COMM_SELF))
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """Path of an uninterrupted 1-rank run (``python -m glasshpc.run`` in a subprocess, no mpiexec)
    of the tiny configuration with 6 replicas (test_resume._config): what every crash, resume,
    finalisation and one-writer test must reproduce bitwise. Run once per session."""
    from test_resume import _config, _run
    folder = tmp_path_factory.mktemp("reference")
    cfg = _config(folder, lambda output: TINY_YAML.format(output=output), "ref")
    p = _run(1, cfg)
    assert p.returncode == 0, p.stderr
    return folder / "ref.h5"


@pytest.fixture
def tiny_yaml():
    """Function output_path → YAML text of the tiny configuration."""
    return lambda output: TINY_YAML.format(output=output)


def mutate_yaml(text, path, value):
    """YAML text with the key at ``path`` (tuple of keys) set to ``value`` (deleted if KeyError)."""
    data = yaml.safe_load(text)
    d = data
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return yaml.safe_dump(data, allow_unicode=True)


def h5_datasets(path):
    """{name: array} of every dataset in the HDF5 file ``path`` (for bitwise comparisons)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def with_predictions(src, dst):
    """Copy the finished output ``src`` to ``dst`` so that it certainly holds per-particle
    predictions: the run's own /fits/<set>/prediction [S, T, N] when it stores them, else one
    stand-in set computed from the stored ridge model of ``g0`` on X^init (X·coef + intercept), and
    /fits/is_test [S] from the fits' split. For tests of the tools that read predictions."""
    import shutil

    import numpy as np
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fits = f["fits"]
        if not any(isinstance(fits[n], h5py.Group) and "prediction" in fits[n] for n in fits):
            X = f["descriptors/init"][()]                  # (S, N, F), generation 0 first
            coef, b = fits["g0/coef"][()], fits["g0/intercept"][()]   # (ns, T, F0), (ns, T)
            types = f["snapshots/types"][()]
            pred = np.empty((X.shape[0], coef.shape[1], X.shape[1]))
            for sp in range(coef.shape[0]):
                m = types == sp
                pred.transpose(0, 2, 1)[m] = X[m][:, :coef.shape[2]] @ coef[sp].T + b[sp]
            fits["g0/prediction"] = pred
        if "is_test" not in fits:
            fits["is_test"] = np.isin(np.arange(f["snapshots/types"].shape[0]),
                                      fits.attrs["test_snapshots"])
    return dst
