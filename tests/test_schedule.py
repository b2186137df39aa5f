"""Dynamic scheduling (glasshpc.parallel.TaskQueue), the schedule simulation of ``--dry-run
--ranks P`` (glasshpc.schedule) and rank-count independence of a whole run on 1, 2, 4 and 8 ranks
with deliberately unequal tasks (real processes, real MPI, oversubscribed on 2 cores)."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import h5_datasets as _datasets

from glasshpc.parallel import Context, TaskQueue, lpt_order

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def test_lpt_order_is_stable_longest_first():
    tasks = ["a", "b", "c", "d", "e"]
    order, costs = lpt_order(tasks, [1.0, 3.0, 1.0, 2.0, 3.0])
    assert order == ["b", "e", "d", "a", "c"]
    assert list(costs) == [3.0, 3.0, 2.0, 1.0, 1.0]
    assert lpt_order(tasks) == (tasks, None)


def test_queue_on_one_rank_runs_every_task_in_order():
    ctx = Context()
    if ctx.size != 1:
        pytest.skip("serial test")
    q = TaskQueue(ctx, "t", list(range(7)), interval=1e9)
    assert list(q) == list(range(7))
    wall, stats = q.close()
    assert stats[0][0] == 7 and wall >= 0


@pytest.mark.mpi(min_size=2)
def test_queue_slow_task_does_not_hold_the_others():
    """Task 0 (the longest, taken first by some rank) sleeps 1 s, the 40 others 5 ms: every task
    runs exactly once, and the rank that ran task 0 ran fewer tasks than any other rank (with a
    round-robin deal every rank would run the same number)."""
    ctx = Context()
    tasks = list(range(41))
    costs = [200.0] + [1.0] * 40
    order, costs = lpt_order(tasks, costs)
    q = TaskQueue(ctx, "unequal", order, costs, interval=0.3)
    ran = []
    for t in q:
        time.sleep(1.0 if t == 0 else 0.005)
        ran.append(t)
    _, stats = q.close()
    everything = ctx.comm.allgather(ran)
    flat = sorted(t for part in everything for t in part)
    assert flat == tasks
    slow = next(r for r, part in enumerate(everything) if 0 in part)
    assert everything[slow][0] == 0
    assert all(len(everything[slow]) < len(p) for r, p in enumerate(everything) if r != slow)
    assert [s[0] for s in stats] == [len(p) for p in everything]


# -- whole runs on 1, 2, 4, 8 ranks (subprocesses; 8 ranks oversubscribe 2 cores) ----------------

SMALL_YAML = """
output: {output}
seed: 11
model: {{name: kob_andersen, n_particles: 300, density: 1.2, temperature: 0.8}}
md: {{melt_time: 1, nvt_time: 2, nve_time: 2}}
snapshots: {{count: 4}}
iso:
  replicas: 2
  times: {{start: 0.01, stop: 0.5, count: 4}}
descriptors:
  radial: [{{r_min: 0.8, r_max: 2.0, count: 4, delta: 0.15}}]
  angular: [{{r_min: 1.0, r_max: 1.5, count: 2, delta: 0.15}}]
  l: [2, 4]
  generations: 1
  r_generation: 1.5
inherent: {{enabled: true, force_tolerance: 1.0e-4}}
cage: {{enabled: true, equilibration_sweeps: 5, measurement_sweeps: 10, chains: 2}}
fits:
  cv_folds: 2
  test_fraction: 0.25
  feature_sets:
    g1: {{generations: 1}}
    cs: {{features: init+cs+drcs, generations: 0}}
{extra}
"""


def _run(tmp_path, name, ranks, extra="", short=False, **env):
    """Run SMALL_YAML (+ ``extra``; ``short``: a quarter of the MD) on ``ranks`` ranks: (output, stdout)."""
    cfg = tmp_path / f"{name}.yaml"
    text = SMALL_YAML.format(output=tmp_path / f"{name}.h5", extra=extra)
    if short:   # the engine-group runs: LAMMPS on K oversubscribed ranks is slow; the bits need no length
        text = text.replace("md: {melt_time: 1, nvt_time: 2, nve_time: 2}",
                            "md: {melt_time: 0.25, nvt_time: 0.5, nve_time: 0.5}")
    cfg.write_text(text)
    cmd = [sys.executable, "-m", "glasshpc.run", str(cfg)]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    full_env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **env)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full_env,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return tmp_path / f"{name}.h5", p.stdout




def _assert_bitwise(a_path, b_path):
    a, b = _datasets(a_path), _datasets(b_path)
    assert a.keys() == b.keys()
    compared = 0
    for name in a:
        if a[name].dtype.kind in "OSU":
            assert list(a[name]) == list(b[name]), name
        else:                                   # fits included (exact sums, dealt solves)
            assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name
        compared += 1
    assert compared >= 20


needs_mpiexec = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="needs the venv's mpiexec")


@needs_mpiexec
def test_one_two_four_eight_ranks_bitwise_with_unequal_tasks(tmp_path):
    """The same config on 1, 2, 4 and 8 ranks: every task dataset bitwise equal (the fits to
    1e-8 until they are bitwise). On 2 ranks snapshot 0, on 4 ranks the cage chains of snapshot 1
    are made 3 s slower: the dynamic schedule then hands the other tasks to the other ranks."""
    ref, _ = _run(tmp_path, "r1", 1)
    slow = dict(GLASSHPC_SLOW_TASK="snapshots:0:3")
    r2, _ = _run(tmp_path, "r2", 2, **slow)
    _assert_bitwise(ref, r2)
    r4, out4 = _run(tmp_path, "r4", 4, GLASSHPC_SLOW_TASK="cage states:1:3")
    _assert_bitwise(ref, r4)
    r8, _ = _run(tmp_path, "r8", 8)
    _assert_bitwise(ref, r8)


@needs_mpiexec
@pytest.mark.parametrize("k", [2, 3])
def test_engine_groups_on_k_and_2k_ranks_bitwise(tmp_path, k):
    """parallel.engine_ranks: K — snapshots on LAMMPS instances of K ranks (K = 3: an odd domain
    decomposition): K ranks (one group) and 2K ranks (two groups, tasks dealt dynamically) give
    bitwise the same file; fewer than K ranks are refused (a result must never depend on the
    launch size)."""
    extra = f"parallel: {{engine_ranks: {k}}}"
    a, out = _run(tmp_path, "ka", k, extra, short=True)
    assert f"1 engine groups of {k} ranks" in out
    b, out = _run(tmp_path, "kb", 2 * k, extra, short=True)
    assert f"2 engine groups of {k} ranks" in out
    _assert_bitwise(a, b)
    cfg = tmp_path / "kc.yaml"
    cfg.write_text(SMALL_YAML.format(output=tmp_path / "kc.h5", extra=extra))
    p = subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfg)], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT),
                       cwd=tmp_path)
    assert p.returncode == 2 and f"engine_ranks = {k} needs at least {k} ranks" in p.stderr
    assert not os.path.exists(tmp_path / "kc.h5.partial")


def test_auto_engine_ranks_resolves_at_first_launch_and_resume_keeps_it(tmp_path, tiny_yaml):
    import json
    from glasshpc import config as config_mod
    from glasshpc.schedule import EngineRanksError, auto_engine_ranks, resolve_engine_ranks
    ctx = Context()
    if ctx.size != 1:
        pytest.skip("serial test")
    out = tmp_path / "a.h5"
    cfg = config_mod.parse(tiny_yaml(str(out)) + "parallel: {engine_ranks: auto}\n")
    # 5 snapshots of 300 atoms: no K > 1 keeps 400 atoms per rank; 100 × 2000 on 512 ranks → 5
    assert auto_engine_ranks(cfg, 512) == 1
    big = config_mod.parse(tiny_yaml(str(out)).replace("n_particles: 300", "n_particles: 2000")
                           .replace("count: 5", "count: 100"))
    assert [auto_engine_ranks(big, p) for p in (1, 100, 250, 512, 4096)] == [1, 1, 2, 5, 5]
    fresh, note = resolve_engine_ranks(cfg, ctx)
    assert fresh.parallel.engine_ranks == 1 and "auto → 1" in note
    # a resumed run takes the K its first attempt recorded, whatever the new launch size
    partial = tmp_path / "a.h5.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"config": {"parallel": {"engine_ranks": 3}}}))
    with pytest.raises(EngineRanksError, match="engine_ranks = 3 needs at least 3 ranks"):
        resolve_engine_ranks(cfg, ctx, resume=True)


def test_simulated_schedule_and_prediction():
    from glasshpc.schedule import Stage, predict, simulate
    # 5, 4, 3, 3, 3 on 2 workers, each to the earliest free: {5, 3}, {4, 3, 3} → makespan 10
    assert simulate([5, 4, 3, 3, 3], 2) == 10
    assert simulate([1.0] * 10, 4) == 3 and simulate([], 4) == 0
    rows = predict([Stage("a", [2.0] * 4), Stage("b", [8.0], serial=1.0),
                    Stage("c", [6.0] * 2, group=2, efficiency=0.5)], 4)
    a, b, c, total = rows
    assert a[1:] == (2.0, 1.0, 1.0)
    assert b[1] == 9.0 and b[2] == 0.25 and b[3] == pytest.approx(9.0 / 36)
    # two tasks on two groups of 2 ranks at half efficiency: 6 s each, every rank busy
    assert c[1] == 6.0 and c[2] == 1.0 and c[3] == pytest.approx(12.0 / 24)
    assert total[1] == 17.0 and total[3] == pytest.approx((8 + 9 + 12) / (4 * 17))


def test_dry_run_counts_the_network_baselines(tiny_yaml):
    """--dry-run's fit stage holds one MLP and one GNN task per (set, species), priced by a few epochs
    timed here (schedule._calibrate_networks) times the flop estimates the fits deal by."""
    torch = pytest.importorskip("torch", reason="PyTorch missing: pip install '.[nn]'")
    del torch
    from glasshpc import config as config_mod, schedule, stages
    from glasshpc.learn import fits
    text = tiny_yaml("/tmp/never.h5").replace("  cv_folds: 3\n", "  cv_folds: 3\n  mlp: {layers: 2, width: 8, "
                                              "max_iter: 40}\n  gnn: {enabled: true, epochs: 5}\n")
    cfg = config_mod.parse(text)
    plain = config_mod.parse(tiny_yaml("/tmp/never.h5"))
    rng = np.random.default_rng(0)
    box = np.full(3, 6.3)
    pos, types = rng.uniform(0, 6.3, (300, 3)), (np.arange(300) % 5 == 0).astype(np.int64)
    T = len(cfg.replica_steps())
    cal = schedule._calibrate_networks(cfg, pos, types, box, 20, T, 1)
    assert set(cal) == {"mlp_per_flop", "gnn_per_flop"}
    assert all(0 < v < 1e-6 for pair in cal.values() for v in pair)   # s per flop: ≥ 1 Mflop/s
    cal.update({k: (1e-9, 2e-9) for k in ("dynamics", "descriptors", "gram_per_row_f2", "eigh_per_f3",
                                          "cage_move", "cage_fixed", "inherent")})
    cal["md"] = (1e6, 5e5)
    with_nn = {st.name: st for st in schedule.stage_models(cfg, cal)}["fits"].costs
    without = {st.name: st for st in schedule.stage_models(plain, cal)}["fits"].costs
    n_sets, n_species = len(cfg.fits.feature_sets), 2
    assert with_nn.size == without.size + 2 * n_sets * n_species
    extra = np.sort(with_nn)[::-1][:2 * n_sets * n_species].sum()
    F_max = max(schedule._feature_counts(cfg, stages.descriptor_spec(cfg, 1.5)).values())
    S_train = cfg.snapshots.count - cfg.test_snapshots()
    gnn_one = fits.gnn_cost(cfg.fits.gnn, S_train, 300, F_max) * cal["gnn_per_flop"][0]
    assert extra >= gnn_one > 0
