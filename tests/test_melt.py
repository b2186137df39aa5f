"""Bead-spring pentamer melt through LAMMPS ([DW]; SCIENCE.md §1): bond and LJ energies/forces
against the formulas (LAMMPS K = k, no factor 2; bonded pairs without LJ), chain preparation
without overlaps or stretched bonds, energy conservation, Debye–Waller factor. Reduced LJ units."""
import dataclasses

import numpy as np
import pytest

from glasshpc import dynamics
from glasshpc.md.bead_spring import BeadSpringEngine, bond_lengths, build_chains
from glasshpc.models import get_model
from glasshpc.parallel import task_rng

MELT = get_model("bead_spring")
DT = 0.005            # inputs/melt*.yaml


def brute_force(pos, box, n_chain):
    """Total energy and forces: bonds k(r − r0)² plus truncated-and-shifted LJ between monomers
    that are not bonded (|i − j| ≠ 1 within a chain)."""
    n = len(pos)
    e = 0.0
    f = np.zeros((n, 3))
    chain = np.arange(n) // n_chain
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[j] - pos[i]
            d -= box * np.rint(d / box)
            r = np.linalg.norm(d)
            if chain[i] == chain[j] and j == i + 1:
                e += MELT.bond_energy(r)
                fr = MELT.bond_force(r)
            elif r < 2.5:
                e += MELT.lj_energy(r)
                fr = 24 * (2 * r ** -12 - r ** -6) / r
            else:
                continue
            f[i] -= fr * d / r
            f[j] += fr * d / r
    return e, f


@pytest.fixture(scope="module")
def engine():
    eng = BeadSpringEngine(MELT, timestep=DT)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def melt(engine):
    """250 monomers (50 pentamers) at ρ = 1.02, T = 0.7, briefly equilibrated."""
    return engine.prepare_snapshot(250, 1.02, 0.7, task_rng(6, "snapshot", 0),
                                   melt_temperature=1.5, melt_time=5.0, nvt_time=10.0,
                                   nve_time=5.0, tdamp=0.5)


def test_topology():
    assert MELT.bonds(10).tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [7, 8],
                                       [8, 9]]
    assert MELT.chains(10).tolist() == [0] * 5 + [1] * 5
    with pytest.raises(ValueError, match="chains of 5"):
        MELT.chains(12)


def test_bond_and_lj_energy_forces_match_formula(engine):
    """Two pentamers: stretched/compressed bonds (LAMMPS bond_style harmonic E = K(r − r0)² with
    K = 555.5), 1-3 / 1-4 / inter-chain LJ present, bonded pairs without LJ."""
    box = np.full(3, 9.0)
    rng = np.random.default_rng(2)
    pos = np.array([[1.0, 1.0, 1.0], [1.95, 1.1, 1.0], [2.5, 1.9, 1.2], [3.4, 2.2, 1.0],
                    [4.1, 2.9, 1.5], [1.2, 2.1, 2.0], [1.5, 2.9, 2.6], [8.7, 3.3, 3.0],
                    [8.2, 4.1, 3.3], [8.9, 4.8, 3.7]])
    pos += 0.01 * rng.normal(size=pos.shape)
    e_ref, f_ref = brute_force(pos, box, 5)
    eper, f = engine.static_properties(pos, np.zeros(10, np.int32), box)
    assert eper.sum() == pytest.approx(e_ref, rel=1e-12)
    assert engine.thermo("pe") * 10 == pytest.approx(e_ref, rel=1e-12)
    np.testing.assert_allclose(f, f_ref, rtol=1e-10, atol=1e-10)
    # one bond alone (a dimer, so no other term): U = k (r − r0)² exactly (no factor 1/2), and
    # no LJ between the bonded pair although r < 2.5
    dimer = BeadSpringEngine(dataclasses.replace(MELT, chain_length=2), timestep=DT)
    try:
        eper, f = dimer.static_properties(np.array([[1.0, 1, 1], [2.1, 1, 1]]),
                                          np.zeros(2, np.int32), box)
    finally:
        dimer.close()
    assert eper.sum() == pytest.approx(555.5 * (1.1 - 0.97) ** 2, rel=1e-12)
    assert f[0, 0] == pytest.approx(2 * 555.5 * (1.1 - 0.97), rel=1e-12)


def test_chain_growth_without_overlaps():
    box = np.full(3, (500 / 1.02) ** (1 / 3))
    pos = build_chains(500, 5, box, 0.97, np.random.default_rng(1))
    b = MELT.bonds(500)
    np.testing.assert_allclose(bond_lengths(pos, box, b), 0.97, rtol=1e-12)
    d = pos[:, None] - pos[None]
    d -= box * np.rint(d / box)
    r = np.linalg.norm(d, axis=-1)
    r[b[:, 0], b[:, 1]] = r[b[:, 1], b[:, 0]] = np.inf
    np.fill_diagonal(r, np.inf)
    assert r.min() >= 0.75
    again = build_chains(500, 5, box, 0.97, np.random.default_rng(1))
    assert np.array_equal(pos, again)


def test_prepared_melt(engine, melt):
    pos, types, box = melt
    bonds = MELT.bonds(len(pos))
    lengths = bond_lengths(pos, box, bonds)
    assert lengths.max() < 1.5 and lengths.min() > 0.8
    assert abs(lengths.mean() - 0.97) < 0.03
    d = pos[:, None] - pos[None]
    d -= box * np.rint(d / box)
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    assert r.min() > 0.8          # no overlapping monomers left after the push-off
    assert np.all((pos >= 0) & (pos < box))


def test_nve_conserves_energy(engine, melt):
    pos, types, box = melt
    steps = np.arange(1, 11) * 500                   # 5000 steps = 25 τ
    disp = engine.run_replica(pos, types, box, 0.7, task_rng(6, "replica", 0, 0), steps)
    e = engine.last_energies
    ke = 1.5 * 0.7
    assert np.abs(e - e[0]).max() < 2e-3 * ke, np.abs(e - e[0]).max() / ke
    # bonds stay bonds during the dynamics
    assert bond_lengths(pos + disp[-1], box, MELT.bonds(len(pos))).max() < 1.5


def test_debye_waller_factor(engine, melt):
    """⟨|Δr_i(t≈1)|²⟩ over replicas at the read-out closest to 1 τ ([DW])."""
    pos, types, box = melt
    steps = np.array([20, 100, 180, 400])            # 0.1, 0.5, 0.9, 2.0 τ
    disp = np.stack([engine.run_replica(pos, types, box, 0.7, task_rng(6, "replica", 0, r), steps)
                     for r in range(3)])
    dw, t = dynamics.debye_waller(disp, steps * DT)
    assert t == pytest.approx(0.9)
    np.testing.assert_allclose(dw, np.mean(np.sum(disp[:, 2] ** 2, axis=-1), axis=0), rtol=1e-14)
    assert dw.shape == (len(pos),) and 0.01 < dw.mean() < 0.5   # caged, not ballistic


def test_engine_factory_chain_length():
    from glasshpc import config
    from glasshpc.md import make_engine
    from glasshpc.md.lammps import LammpsEngine
    text = """
output: x.h5
model: {name: bead_spring, n_particles: 400, density: 1.02, temperature: 0.6, chain_length: 4}
md: {suffix: omp}
snapshots: {count: 5}
iso: {replicas: 2, times: {start: 0.01, stop: 1.0, count: 3}}
descriptors: {radial: [{r_min: 0.8, r_max: 2.0, count: 4, delta: 0.1}],
              angular: [{r_min: 1.0, r_max: 2.0, count: 2, delta: 0.1}]}
fits: {cv_folds: 3}
"""
    eng = make_engine(config.parse(text))
    try:
        assert isinstance(eng, BeadSpringEngine) and eng.model.chain_length == 4
        assert eng.timestep == 0.005 and eng.suffix == "omp"   # md.suffix reaches the engine
    finally:
        eng.close()
    ka = make_engine(config.parse(text.replace(
        "name: bead_spring, n_particles: 400, density: 1.02, temperature: 0.6, chain_length: 4",
        "name: kob_andersen, n_particles: 400, density: 1.2, temperature: 0.6")))
    try:
        assert type(ka) is LammpsEngine and ka.model.name == "kob_andersen"
    finally:
        ka.close()


def test_fire_inherent_state_with_bonds(engine, melt):
    pos, types, box = melt
    e0, _ = engine.static_properties(pos, types, box)
    r_is, e_is, fmax = engine.inherent_state(pos, types, box, 1e-6, 100000)
    assert fmax < 1e-6 and e_is.sum() < e0.sum()
    e_ref, f_ref = brute_force(r_is, box, MELT.chain_length)
    assert e_ref == pytest.approx(e_is.sum(), rel=1e-9)
    assert np.sqrt((f_ref ** 2).sum(axis=1)).max() < 1e-5
    assert bond_lengths(r_is, box, MELT.bonds(len(pos))).max() < 1.1
