"""Configuration validation: every bad input names its key, exits non-zero, creates nothing."""
import os
import subprocess
import sys

import pytest

from conftest import mutate_yaml
from glasshpc import config




BAD = [
    (("model", "densty"), 1.2, "model.densty", "allowed keys"),
    (("model", "density"), 0.0, "model.density", "> 0.0"),
    (("model", "density"), -1.0, "model.density", "> 0.0"),
    (("model", "temperature"), "hot", "model.temperature", "number"),
    (("iso", "replicas"), 0, "iso.replicas", "≥ 1"),
    (("iso", "replicas"), 2.5, "iso.replicas", "integer"),
    (("iso", "times"), [0.1, 1.0, 0.5], "iso.times[2]", "strictly increasing"),
    (("iso", "times"), {"start": 1.0, "stop": 0.1, "count": 5}, "iso.times.stop", "exceed"),
    (("iso", "times"), {"start": 0.001, "stop": 1.0, "count": 5}, "iso.times", "timestep"),
    (("model", "name"), "lj_glass", "model.name", "kob_andersen"),
    (("dynamics",), {"propensity": "cubed"}, "dynamics.propensity", "'abs', 'squared'"),
    (("snapshots", "count"), 2, "fits.cv_folds", "training snapshots"),
    (("fits", "feature_sets"), {"g5": {"generations": 3}}, "fits.feature_sets.g5.generations",
     "descriptors.generations"),
    (("descriptors", "radial"), [{"r_min": 0.8, "r_max": 4.0, "count": 5, "delta": 0.1}],
     "descriptors.radial[0]", "half the box"),
    (("model", "n_particles"), KeyError, "model.n_particles", "required"),
    (("fits", "feature_sets"), {"x": {"features": "init+cage"}}, "fits.feature_sets.x.features",
     "'drcs'"),
    (("fits", "feature_sets"), {"x": {"features": "init+init"}}, "fits.feature_sets.x.features",
     "twice"),
    (("cage", "enabled"), False, "fits.feature_sets.all.features", "cage.enabled: true"),
    (("inherent", "enabled"), "yes", "inherent.enabled", "true or false"),
    (("cage", "cage"), "cube", "cage.cage", "'voronoi', 'sphere'"),
    (("cage", "target_acceptance"), 1.0, "cage.target_acceptance", "< 1.0"),
    (("cage", "measurement_sweeps"), 0, "cage.measurement_sweeps", "≥ 1"),
    (("inherent", "force_tolerance"), 0, "inherent.force_tolerance", "> 0.0"),
]


@pytest.mark.parametrize("path,value,key,allowed", BAD)
def test_bad_value_names_key(tiny_yaml, path, value, key, allowed):
    text = mutate_yaml(tiny_yaml("out.h5"), path, value)
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert err.value.key == key
    assert allowed in str(err.value)


def test_good_config_and_defaults(tiny_yaml):
    cfg = config.parse(tiny_yaml("out.h5"))
    assert cfg.md.timestep == 0.005 and cfg.dynamics.propensity == "abs"
    steps = cfg.replica_steps()
    assert steps[0] == 2 and steps[-1] == 400 and (steps[1:] > steps[:-1]).all()
    assert cfg.test_snapshots() == 1


def test_inputs_validate():
    here = os.path.dirname(__file__)
    for name in ("ka_demo.yaml", "ka.yaml"):
        cfg, _ = config.load(os.path.join(here, "..", "inputs", name))
        assert cfg.model.name == "kob_andersen"


def test_cli_refuses_before_creating_files(tiny_yaml, tmp_path):
    out = tmp_path / "run.h5"
    bad = mutate_yaml(tiny_yaml(str(out)), ("iso", "replicas"), 0)
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(bad)
    proc = subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfgfile)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "iso.replicas" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
