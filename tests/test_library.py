"""glasshpc as a library: the names `import glasshpc` exposes, the estimators as scikit-learn estimators (the
estimator checks, a Pipeline with StandardScaler against sklearn's Ridge), and the README notebook example run on
an extxyz snapshot written and read with ASE."""
import os
import re

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import glasshpc
from glasshpc.learn.ridge import GroupedRidgeCV
from glasshpc.learn.softness import SoftnessSVC

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_exposed_names():
    for name in glasshpc.__all__:
        assert getattr(glasshpc, name) is not None, name
        assert name in dir(glasshpc)
    assert glasshpc.propensity is __import__("glasshpc.dynamics", fromlist=["x"]).propensity
    assert glasshpc.GroupedRidgeCV is GroupedRidgeCV
    with pytest.raises(AttributeError):
        glasshpc.no_such_thing


@parametrize_with_checks([GroupedRidgeCV(n_splits=3)])
def test_sklearn_estimator_checks(estimator, check):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the α-grid edge note on random data
        check(estimator)


def test_pipeline_with_standard_scaler():
    """StandardScaler → GroupedRidgeCV (one α, groups routed through the pipeline) predicts what
    StandardScaler → sklearn Ridge predicts; get/set_params reach the step; score is R²."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(240, 6)) * [1, 10, 0.1, 3, 1, 5] + 4
    y = X @ [0.5, -0.05, 4.0, 0.2, 0.0, 0.1] + rng.normal(scale=0.3, size=240)
    groups = np.repeat(np.arange(8), 30)
    ours = make_pipeline(StandardScaler(), GroupedRidgeCV(alphas=[3.0], n_splits=4, standardize=False))
    assert ours.fit(X, y, groupedridgecv__groups=groups) is ours
    ref = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10, atol=1e-10)
    assert ours.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-12)
    step = ours[-1]
    assert sorted(np.concatenate(step.folds_).tolist()) == list(range(8))   # folds are the groups
    ours.set_params(groupedridgecv__alphas=None, groupedridgecv__n_splits=3)
    assert ours.get_params()["groupedridgecv__n_splits"] == 3
    assert ours.fit(X, y, groupedridgecv__groups=groups).score(X, y) > 0.9


def test_softness_svc_in_a_pipeline():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4)) * [1, 5, 0.2, 1]
    y = X[:, 0] + 0.2 * X[:, 1] > 0.1
    pipe = make_pipeline(StandardScaler(), SoftnessSVC(C=1.0)).fit(X, y)
    svc = pipe[-1]
    assert svc.get_params() == {"C": 1.0} and list(svc.classes_) == [False, True]
    np.testing.assert_array_equal(pipe.predict(X), pipe.decision_function(X) > 0)
    assert pipe.score(X, y) > 0.9
    with pytest.raises(ValueError, match="C must be positive"):
        SoftnessSVC(C=0).fit(X, y)


def test_readme_notebook_example(tiny_run, tmp_path, monkeypatch, capsys):
    """The README 'Library use' block, run as written on a tiny-run snapshot saved as extxyz with ASE."""
    import ase
    import ase.io
    import h5py
    with h5py.File(tiny_run, "r") as f:
        pos, types, box = f["snapshots/positions"][0], f["snapshots/types"][0], f["snapshots/box"][0]
    atoms = ase.Atoms(symbols=np.where(types == 0, "Ar", "Kr"), positions=pos, cell=box, pbc=True)
    ase.io.write(tmp_path / "snapshot.extxyz", atoms)
    text = open(README, encoding="utf-8").read()
    code = re.search(r"## Library use.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 14
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()                       # drop what the fixtures printed
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    score, rho, drift = (float(v) for v in capsys.readouterr().out.split()[-3:])
    np.testing.assert_allclose(scope["pos"], pos, atol=1e-6)              # the ASE round trip
    assert scope["X"].shape == (300, 135) and 0 < score <= 1 and 0 < rho <= 1 and drift > 0
    np.testing.assert_array_equal(scope["types"], types)
    np.testing.assert_allclose(scope["box"], box, rtol=1e-12)
    # extxyz keeps ~8 decimals: the descriptors of the stored positions agree to that precision
    np.testing.assert_allclose(scope["X"], glasshpc.compute_descriptors(
        pos, types, box, glasshpc.descriptor_preset("softness_135")), rtol=1e-5, atol=1e-9)
