"""Independent cage-MC chains per snapshot (cage.chains) and the measured end of the ballistic
regime (dynamics.ballistic_end), on the tiny Kob–Andersen pipeline of tests/conftest.py: real
LAMMPS, real MC, real HDF5. Reduced LJ units (σ_AA, τ).

The 1-rank vs 2-rank comparison runs under ``mpiexec -n 2 python -m pytest --with-mpi``.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from mpi4py import MPI

from conftest import mutate_yaml
from glasshpc import cluster, config, dynamics, stages
from glasshpc.models import cage_potential, get_model
from glasshpc.parallel import Context, task_rng
from glasshpc.run import execute, main
from glasshpc.states.cage import cage_state, passes
from glasshpc.states.chains import (chain_reliability, half_diagnostics, split_half_pearson,
                                    split_rhat, spearman_brown)
from glasshpc.store import Store

CAGE_DATASETS = ("states/cage/positions", "states/cage/displacement", "states/cage/acceptance",
                 "states/cage/step", "states/cage/chains/positions",
                 "states/cage/chains/acceptance", "states/cage/chains/step",
                 "states/cage/chains/split_half_pearson", "descriptors/cs") + tuple(
    f"states/cage/convergence/{n}" for n in ("half_positions", "half_variance", "half_displacement",
                                              "half_pearson", "shift", "shift_se", "rhat"))
CONVERGENCE_ATTRS = ("convergence_displacement_first_half", "convergence_displacement_second_half",
                     "convergence_half_pearson", "convergence_shift", "convergence_shift_z",
                     "convergence_drifting_chains", "convergence_rhat_median",
                     "convergence_rhat_max", "convergence_rhat_above_limit")


def chains_yaml(tiny_yaml, output, chains=2):
    """The tiny KA config with ``cage.chains`` set; no inherent states (not needed here)."""
    data = yaml.safe_load(tiny_yaml(output))
    data["cage"]["chains"] = chains
    data["inherent"]["enabled"] = False
    return yaml.safe_dump(data, allow_unicode=True)


def _run(text, comm):
    return execute(config.parse(text), text, Context(comm))


@pytest.fixture(scope="module")
def two_chains(tmp_path_factory):
    from conftest import TINY_YAML
    folder = tmp_path_factory.mktemp("chains")
    out = str(folder / "chains2.h5")
    text = chains_yaml(lambda o: TINY_YAML.format(output=o), out)
    summary = _run(text, MPI.COMM_SELF)
    return out, text, summary


# ---------------------------------------------------------------------------- config

def test_zero_chains_refused_naming_the_key(tiny_yaml, tmp_path, capsys):
    text = mutate_yaml(tiny_yaml(str(tmp_path / "x.h5")), ("cage", "chains"), 0)
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert err.value.key == "cage.chains" and "≥ 1" in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text(mutate_yaml(text, ("cage", "chains"), 1.5))
    assert main([str(path)]) == 2                              # refused, nothing created
    assert "cage.chains" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]
    assert config.parse(tiny_yaml(str(tmp_path / "x.h5"))).cage.chains == 1   # the default


# ---------------------------------------------------------------------------- ballistic end

def _synthetic_msd(t, T, plateau, D):
    """Ballistic 3Tt² crossing over to a plateau, then diffusion 6Dt."""
    ballistic = 3 * T * t ** 2
    return ballistic * plateau / (ballistic + plateau) + 6 * D * t


def test_ballistic_end_of_a_synthetic_msd():
    T, plateau = 0.55, 0.015
    exact = np.sqrt(plateau / (3 * T))                     # 0.0953 τ
    t = np.logspace(-2, np.log10(75), 25)                  # the demo's read-out grid
    for D in (0.0, 2e-5):
        msd = _synthetic_msd(t, T, plateau, D)
        if D == 0.0:     # a plateau that never ends: smallest slope at the last read-out
            assert np.isnan(dynamics.ballistic_end(t, msd, T))
            continue
        got = dynamics.ballistic_end(t, msd, T)
        assert got == pytest.approx(exact, rel=0.03)
        # the definition evaluated on a 10⁵-point grid (no refinement needed there)
        fine = np.logspace(-2, np.log10(75), 100001)
        m = _synthetic_msd(fine, T, plateau, D)
        k = np.argmin(np.gradient(np.log(m), np.log(fine)))
        assert got == pytest.approx(np.sqrt(m[k] / (3 * T)), rel=0.01)
    # per species: a second, larger plateau gives a later t_x
    msd2 = np.stack([_synthetic_msd(t, T, plateau, 2e-5), _synthetic_msd(t, T, 4 * plateau, 2e-5)])
    tx = dynamics.ballistic_end(t, msd2, T)
    assert tx.shape == (2,) and tx[1] / tx[0] == pytest.approx(2.0, rel=0.03)


def test_ballistic_end_nan_without_a_plateau():
    T = 0.55
    t = np.logspace(-2, 2, 25)
    # ballistic → diffusive with no cage: the slope falls monotonically from 2 to 1
    assert np.isnan(dynamics.ballistic_end(t, 3 * T * t ** 2 / (1 + t / 0.5), T))
    # purely ballistic, and read-outs that stop before the plateau is reached
    assert np.isnan(dynamics.ballistic_end(t, 3 * T * t ** 2, T))
    assert np.isnan(dynamics.ballistic_end(t[:8], _synthetic_msd(t[:8], T, 0.015, 2e-5), T))
    with pytest.raises(ValueError):
        dynamics.ballistic_end(t, t[:-1], T)


# ---------------------------------------------------------------------------- chain statistics

def test_spearman_brown_predicts_the_reliability_of_more_chains():
    """Split-half Pearson of K chains stepped up by Spearman–Brown equals the measured correlation
    between two independent K-chain means (synthetic cages: fixed offsets + chain noise). Exact
    for additive noise; Δr^CS is a norm, so with chain noise comparable to Δr^CS it underestimates
    slightly (by 0.03–0.09 at noise 0.12 here), hence the moderate noise."""
    rng = np.random.default_rng(3)
    N = 40000
    init = rng.uniform(0, 10, (N, 3))
    offset = rng.normal(size=(N, 3))
    offset *= (rng.uniform(0.05, 0.3, N) / np.linalg.norm(offset, axis=1))[:, None]
    types = np.zeros(N, int)
    for K in (2, 3, 4):
        chains = init + offset + rng.normal(scale=0.05, size=(2 * K, N, 3))
        predicted = chain_reliability([split_half_pearson(chains[:K], init, types, 1)], K)[1][0]
        dr = [np.linalg.norm(c.mean(axis=0) - init, axis=1) for c in (chains[:K], chains[K:])]
        measured = np.corrcoef(*dr)[0, 1]
        assert 0.6 < measured < 0.95
        assert predicted == pytest.approx(measured, abs=0.02), K
    assert spearman_brown(0.5, 1.0) == 0.5 and spearman_brown(0.5, 3.0) == pytest.approx(0.75)


# ---------------------------------------------------------------------------- the pipeline

def _direct_chain(cfg, pos, types, box, seed_rng):
    c = cfg.cage
    sigma = get_model(cfg.model.name).sigma_self()
    return cage_state(pos, types, box, cage_potential(cfg.model.name), cfg.model.temperature,
                      c.equilibration_sweeps, c.measurement_sweeps,
                      int(seed_rng.integers(2 ** 62)), cage=c.cage, cage_radius=c.radius * sigma,
                      cage_sigma=sigma, target_acceptance=c.target_acceptance,
                      moves_per_visit=c.moves_per_visit)


def test_two_chains_in_the_pipeline(two_chains, tmp_path):
    out, text, summary = two_chains
    cfg = config.parse(text)
    with h5py.File(out, "r") as f:
        x0 = f["snapshots/positions"][()]
        chains = f["states/cage/chains/positions"][()]
        S, N = x0.shape[:2]
        assert chains.shape == (S, 2, N, 3)
        r_cs = f["states/cage/positions"][()]
        np.testing.assert_array_equal(r_cs, (chains[:, 0] + chains[:, 1]) / 2)
        np.testing.assert_allclose(f["states/cage/displacement"][()],
                                   np.linalg.norm(r_cs - x0, axis=-1), rtol=1e-14)
        # independent chains: same cages, different noise; both near r^init (caged)
        diff = np.linalg.norm(chains[:, 0] - chains[:, 1], axis=-1)
        assert np.all(diff.mean(axis=1) > 1e-3)
        assert np.all(np.linalg.norm(chains - x0[:, None], axis=-1).mean(axis=2) < 0.5)
        acc = f["states/cage/chains/acceptance"][()]
        assert acc.shape == (S, 2) and np.all(np.abs(acc - 0.3) < 0.1)
        np.testing.assert_allclose(f["states/cage/acceptance"][()], acc.mean(axis=1), rtol=1e-14)
        np.testing.assert_allclose(f["states/cage/step"][()],
                                   f["states/cage/chains/step"][()].mean(axis=1), rtol=1e-14)
        # chain 0 is the single-chain result: seed task_rng(seed, 'cage', s) as with chains = 1;
        # chain 1 is seeded by task_rng(seed, 'cage', s, 1)
        types, box = f["snapshots/types"][()], f["snapshots/box"][()]
        for s, k in ((0, 0), (3, 1)):
            ident = (s,) if k == 0 else (s, k)
            ref = _direct_chain(cfg, x0[s], types[s], box[s], task_rng(cfg.seed, "cage", *ident))
            np.testing.assert_array_equal(chains[s, k], ref["positions"])
        # the MC-noise report: per-species split-half Pearson of Δr^CS, mean over snapshots
        g = f["states/cage"]
        assert g.attrs["chains"] == 2
        split = f["states/cage/chains/split_half_pearson"][()]
        for s in range(S):
            np.testing.assert_allclose(split[s], split_half_pearson(chains[s], x0[s], types[s], 2))
        np.testing.assert_allclose(g.attrs["chain_split_half_pearson"], split.mean(axis=0))
        rel = g.attrs["chain_reliability"]
        assert rel.shape == (2,) and np.all((0 < rel) & (rel < 1))
        # convergence diagnostics: the halves of each chain average to the chain's r^CS; the
        # per-chain statistics and R̂ recomputed from the stored halves
        conv = f["states/cage/convergence"]
        halves = conv["half_positions"][()]
        assert halves.shape == (S, 2, 2, N, 3) and conv["half_variance"].shape == (S, 2, 2, N)
        P = passes(cfg.cage.measurement_sweeps, cfg.cage.moves_per_visit)   # samples
        np.testing.assert_allclose((P // 2 * halves[:, :, 0] + (P - P // 2) * halves[:, :, 1]) / P,
                                   chains, rtol=0, atol=1e-12)
        for s in range(S):
            for k in range(2):
                d = half_diagnostics(halves[s, k], x0[s], types[s], 2)
                np.testing.assert_array_equal(conv["half_displacement"][s, k], d["displacement"])
                np.testing.assert_array_equal(conv["shift"][s, k], d["shift"])
                np.testing.assert_array_equal(conv["shift_se"][s, k], d["shift_se"])
                np.testing.assert_array_equal(conv["half_pearson"][s, k], d["pearson"])
            np.testing.assert_array_equal(conv["rhat"][s], split_rhat(
                halves[s], conv["half_variance"][s], P / 2))
        assert np.all(conv["rhat"][()] > 1)
        for key in CONVERGENCE_ATTRS:
            assert g.attrs[key].shape == (2,), key
        np.testing.assert_allclose(g.attrs["convergence_shift"], conv["shift"][()].mean((0, 1)))
        # 20 equilibration sweeps of the tiny run are far too few: the halves still drift
        assert np.all(g.attrs["convergence_shift_z"] > 4)
        # end of the ballistic regime from an MSD recomputed from the stored displacements
        d = f["iso/displacements"][()].astype(np.float64)
        r2 = (d ** 2).sum(-1)                                            # (S, R, T, N)
        msd = np.array([[r2[s][:, :, types[s] == sp].mean(axis=(0, 2)) for sp in (0, 1)]
                        for s in range(S)]).mean(axis=0)
        np.testing.assert_allclose(f["dynamics/msd_mean"][()], msd, rtol=1e-10)
        times = f["iso/times"][()]
        tx = f["dynamics"].attrs["ballistic_end"]
        # the run sums replica by replica (stages.dynamics_stage), this recomputation all at once
        np.testing.assert_allclose(tx, dynamics.ballistic_end(times, msd, 0.8), rtol=1e-12)
        np.testing.assert_array_equal(tx, summary["ballistic_end"])
        assert "minimum of d ln MSD" in f["dynamics"].attrs["ballistic_end_definition"]
        # --dry-run's output size is exact with the chain datasets too
        layout = stages.layout(cfg, stages.descriptor_spec(cfg, 2.0).n_features)
        assert "states/cage/chains/positions" in layout
        assert cluster.output_bytes(cfg) == sum(f[n].size * f[n].dtype.itemsize for n in layout)
    # the plotting tool shades t < t_x (or skips it when t_x is NaN) and still draws
    png = str(tmp_path / "rho.png")
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "plot_pearson.py")
    subprocess.run([sys.executable, tool, out, "-o", png], check=True, capture_output=True)
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_one_chain_writes_the_single_chain_seed_result(two_chains, tmp_path):
    """cage.chains = 1 keeps the seed scheme of the single-chain stage (output unchanged): run the
    cage stage alone on the stored snapshots; it equals chain 0 of the two-chain run, bitwise."""
    out, text, _ = two_chains
    cfg = config.parse(mutate_yaml(text, ("output",), str(tmp_path / "one.h5")))
    cfg1 = config.parse(mutate_yaml(mutate_yaml(text, ("output",), str(tmp_path / "one.h5")),
                                    ("cage", "chains"), 1))
    assert cfg.cage.chains == 2 and cfg1.cage.chains == 1
    layout = {k: v for k, v in stages.layout(cfg1, 1).items()
              if k.startswith(("snapshots/", "states/cage/"))}
    assert not any("chains" in k for k in layout)
    ctx = Context(MPI.COMM_SELF)
    store = Store(cfg1.output, ctx, layout, mode="shards")
    try:
        with h5py.File(out, "r") as f:
            for name in ("snapshots/positions", "snapshots/types", "snapshots/box"):
                for s in range(cfg1.snapshots.count):
                    store.write(name, (s,), f[name][s])
            chain0 = f["states/cage/chains/positions"][:, 0]
            acc0 = f["states/cage/chains/acceptance"][:, 0]
        store.sync()
        stages.cage_stage(ctx, cfg1, store)
        for s in range(cfg1.snapshots.count):
            np.testing.assert_array_equal(store.read("states/cage/positions", (s,)), chain0[s])
            assert store.read("states/cage/acceptance", (s,)) == acc0[s]
    finally:
        store.close()


def test_killed_in_both_cage_passes_resumes_to_the_same_file(two_chains, tmp_path):
    """SIGKILL after 3 chain tasks, resume, SIGKILL after the first chain average, resume: the
    finished chains are not rerun and the file equals the uninterrupted run's, bitwise."""
    ref, text, _ = two_chains
    out = tmp_path / "killed.h5"
    cfg = tmp_path / "killed.yaml"
    cfg.write_text(mutate_yaml(text, ("output",), str(out)))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(*flags, kill=None):
        env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
        env.pop("GLASSHPC_KILL_AFTER", None)
        if kill:
            env["GLASSHPC_KILL_AFTER"] = kill
        return subprocess.run([sys.executable, "-m", "glasshpc.run", str(cfg), *flags],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    assert run(kill="cage states:3").returncode != 0
    p = run("--resume", kill="cage chain average:1")
    assert p.returncode != 0 and "[cage states] resuming: 3 of 10 tasks already done" in p.stdout
    p = run("--resume")
    assert p.returncode == 0, p.stderr
    assert "[cage chain average] resuming: 1 of 5 tasks already done" in p.stdout
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        for name in CAGE_DATASETS:
            assert np.array_equal(a[name][()], b[name][()]), name


@pytest.mark.mpi(min_size=2)
def test_chains_one_and_two_ranks_identical(tiny_yaml, tmp_path):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path), root=0)
    two, one = os.path.join(folder, "two.h5"), os.path.join(folder, "one.h5")
    _run(chains_yaml(tiny_yaml, two), comm)
    if comm.rank == 0:
        _run(chains_yaml(tiny_yaml, one), MPI.COMM_SELF)
    comm.Barrier()
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in CAGE_DATASETS:
            assert np.array_equal(a[name][()], b[name][()]), name
        for key in ("chains", "chain_split_half_pearson", "chain_reliability") + CONVERGENCE_ATTRS:
            assert np.array_equal(a["states/cage"].attrs[key], b["states/cage"].attrs[key]), key
        assert np.array_equal(a["dynamics"].attrs["ballistic_end"],
                              b["dynamics"].attrs["ballistic_end"], equal_nan=True)
        assert b["provenance"].attrs["ranks"] == comm.size
