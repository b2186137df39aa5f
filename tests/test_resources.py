"""The resource plan: exact output size from the layout, refusals before any work, the override."""
import os

import pytest

from conftest import mutate_yaml
from glasshpc import cluster, config, resources
from glasshpc.run import main


def _write(tmp_path, text):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    return cfg


def test_plan_output_is_the_layout_and_shards_need_twice_the_disk(tmp_path, tiny_yaml):
    cfg = config.parse(tiny_yaml(str(tmp_path / "t.h5")))
    shards = resources.plan(cfg, 2, "shards")
    mpio = resources.plan(cfg, 2, "mpio")
    assert shards["output"] == cluster.output_bytes(cfg) > 0
    # the final file is built beside the work files in both modes (mpio copies data.h5)
    assert shards["disk"] == 2 * shards["output"] == mpio["disk"]
    assert shards["memory"] >= resources.BASE_BYTES + max(shards["stages"].values())
    more = config.parse(mutate_yaml(tiny_yaml(str(tmp_path / "t.h5")), ("iso", "replicas"), 30))
    grown = resources.plan(more, 2, "shards")
    # the dynamics stage holds one replica at a time
    assert grown["stages"]["dynamics"] == shards["stages"]["dynamics"]
    # iso.store_displacements: false — the output loses [S, R, T, N, 3] f4, .partial/ holds the
    # per-replica sums until the end
    bare = config.parse(mutate_yaml(tiny_yaml(str(tmp_path / "t.h5")),
                                    ("iso", "store_displacements"), False))
    S, R, T, N = 5, 3, 8, 300
    lean = resources.plan(bare, 2, "mpio")
    assert lean["output"] == mpio["output"] - S * R * T * N * 3 * 4 == cluster.output_bytes(bare)
    assert lean["partial"] == lean["output"] + cluster.output_bytes(bare, transient=True)
    assert lean["disk"] == lean["partial"] + lean["output"] < mpio["disk"]


def test_memory_beyond_this_node_refused_before_anything(tmp_path, tiny_yaml, capsys):
    big = mutate_yaml(tiny_yaml("big.h5"), ("model", "n_particles"), 20_000_000)
    cfg = _write(tmp_path, big)
    assert main([str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "resource plan: peak memory" in err and "exceeds the" in err
    assert "--ignore-resources" in err and "model.n_particles" in err
    assert sorted(os.listdir(tmp_path)) == ["run.yaml"]
    # the dry run reports the same and does not try to calibrate on a system that cannot fit
    assert main([str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would be refused" in out and "no calibration" in out
    assert sorted(os.listdir(tmp_path)) == ["run.yaml"]


def test_available_memory_is_positive_and_bounded():
    mem = resources.available_memory()
    assert mem is not None and 0 < mem < 2**50


@pytest.mark.parametrize("ranks", [1, 4])
def test_bookkeeping_grows_with_tasks_not_ranks(tmp_path, tiny_yaml, ranks):
    cfg = config.parse(tiny_yaml(str(tmp_path / "t.h5")))
    many = config.parse(mutate_yaml(tiny_yaml(str(tmp_path / "t.h5")), ("iso", "replicas"), 3000))
    a, b = resources.plan(cfg, ranks, "shards"), resources.plan(many, ranks, "shards")
    # 5 × 3000 replica slots and tasks: ≈ 15 000 × (300 + 200) bytes more on every rank
    assert b["bookkeeping"] - a["bookkeeping"] == pytest.approx(5 * 2997 * 500, rel=0.01)
