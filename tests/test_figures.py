"""tools/plot_snapshot.py, tools/plot_dynamics.py (new figures) and the one-line refusals of
tools/plot_barriers.py and tools/plot_selection.py, on the tiny run."""
import importlib.util
import os
import subprocess
import sys

import h5py
import matplotlib.image
import numpy as np
import pytest

from conftest import with_predictions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def _picture(path):
    """The PNG as an array; fails for a missing or blank (single-colour) picture."""
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05
    return img


@pytest.fixture(scope="module")
def source(tiny_run, tmp_path_factory):
    return with_predictions(tiny_run, str(tmp_path_factory.mktemp("figures") / "run.h5"))


def test_plot_snapshot_prints_the_pearson_of_its_scatter(source, tmp_path):
    out = tmp_path / "snap.png"
    p = _tool("plot_snapshot.py", source, "-o", out)
    assert p.returncode == 0, p.stderr
    _picture(out)
    with h5py.File(source, "r") as f:            # the defaults, from the file itself
        s = int(np.flatnonzero(f["fits/is_test"][()])[0])
        times = f["iso/times"][()]
        tau = f["dynamics"].attrs["tau_alpha"][0]
        k = int(np.argmin(np.abs(np.log(times) - np.log(tau if np.isfinite(tau) else times[-1]))))
        sets = [n for n in f["fits"] if f"fits/{n}/prediction" in f]
        best = max(sets, key=lambda n: np.nan_to_num(f[f"fits/{n}/pearson"][0, k], nan=-2))
        types = f["snapshots/types"][s]
        meas, pred = f["propensity"][s, k], f[f"fits/{best}/prediction"][s, k]
    assert f"snapshot {s} (held out)" in p.stdout and f"set {best}," in p.stdout
    for sp, name in enumerate("AB"):
        rho = np.corrcoef(meas[types == sp], pred[types == sp])[0, 1]
        assert f"{name} {rho:.4f}" in p.stdout


def test_plot_snapshot_refuses_what_the_file_lacks(tiny_run, source, tmp_path):
    p = _tool("plot_snapshot.py", source, "--set", "nope", "-o", tmp_path / "x.png")
    assert p.returncode == 1 and "--set 'nope'" in p.stderr and "Traceback" not in p.stderr
    p = _tool("plot_snapshot.py", source, "--snapshot", "99", "-o", tmp_path / "x.png")
    assert p.returncode == 1 and "0..4" in p.stderr and "Traceback" not in p.stderr


def test_plot_snapshot_ovito_rendering(source, tmp_path):
    pytest.importorskip("ovito", reason="optional extra 'render'")
    out = tmp_path / "3d.png"
    p = _tool("plot_snapshot.py", source, "-o", tmp_path / "snap.png", "--ovito", out)
    if p.returncode != 0 and "Vulkan" in p.stderr:
        pytest.skip("OVITO needs a Vulkan loader (apt-get install libvulkan1 mesa-vulkan-drivers)")
    assert p.returncode == 0, p.stderr
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (800, 900) and img[..., :3].std() > 0.05


def test_plot_dynamics_draws_fs_msd_and_chi4(source, tmp_path):
    out = tmp_path / "dyn.png"
    p = _tool("plot_dynamics.py", source, "--set", "g0", "-o", out)
    assert p.returncode == 0, p.stderr
    _picture(out)
    p = _tool("plot_dynamics.py", source, "--set", "nope", "-o", out)
    assert p.returncode == 1 and "no /fits/nope/prediction" in p.stderr


def test_tools_name_the_yaml_key_that_enables_them(tiny_run, tmp_path):
    p = _tool("plot_barriers.py", tiny_run, "-o", tmp_path / "b.png")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "top-level 'softness:' key" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _tool("plot_selection.py", tiny_run, "-o", tmp_path / "s.png")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "fits.selection.method" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_plot_pearson_labels_say_which_curves_are_held_out(tiny_run, tmp_path):
    import matplotlib.pyplot as plt
    spec = importlib.util.spec_from_file_location("plot_pearson",
                                                  os.path.join(ROOT, "tools", "plot_pearson.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main([tiny_run, "-o", str(tmp_path / "p.png")])
    fig = plt.gcf()
    for ax in fig.axes[:-1]:
        assert "held-out" not in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        solid = [lb for lb, line in zip(labels, ax.get_legend().get_lines())
                 if line.get_linestyle() == "-" and line.get_marker() == "o"]
        dashed = [lb for lb, line in zip(labels, ax.get_legend().get_lines())
                  if line.get_linestyle() == "--"]
        assert solid and all(lb.endswith("(held-out)") for lb in solid)
        assert dashed and all(lb.endswith("(all snapshots)") for lb in dashed)
    plt.close(fig)
