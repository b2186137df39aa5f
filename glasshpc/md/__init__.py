"""Engines behind one interface (the calls the pipeline stages make):

``prepare_snapshot(n, density, temperature, rng, melt_temperature, melt_time, nvt_time, nve_time,
tdamp)`` → (positions (N, 3), types (N,), box (3,)); ``run_replica(positions, types, box,
temperature, rng, steps)`` → (len(steps), N, 3) unwrapped displacements at t = steps · timestep;
``static_properties``, ``inherent_state``, ``close()`` and ``log`` (provenance).

:func:`make_engine` picks the engine for ``cfg.model.name``.
"""
import dataclasses


def make_engine(cfg):
    """The engine of the configured model (one per rank, reused by every task).

    kob_andersen, harmonic_spheres → LammpsEngine; bead_spring → BeadSpringEngine (chains of
    ``model.chain_length``); hard_spheres → EdmdEngine (Lubachevsky–Stillinger growth rate
    ``model.growth_rate``). LAMMPS engines use ``cfg.md.suffix``, which must be resolved
    (:func:`glasshpc.md.accel.resolve_suffix`; EDMD ignores it). Raises KeyError for an unknown
    model name, ValueError for ``md.suffix: auto`` not yet resolved."""
    from ..models import get_model
    m = cfg.model
    model = get_model(m.name)
    if m.name == "hard_spheres":
        from .edmd import EdmdEngine
        rate = m.growth_rate if m.growth_rate is not None else 0.02
        return EdmdEngine(model, cfg.md.timestep, growth_rate=rate)
    if m.name == "bead_spring":
        from .bead_spring import BeadSpringEngine
        if m.chain_length is not None:
            model = dataclasses.replace(model, chain_length=m.chain_length)
        return BeadSpringEngine(model, cfg.md.timestep, cfg.md.skin,
                               suffix=cfg.md.suffix)
    from .lammps import LammpsEngine
    return LammpsEngine(model, cfg.md.timestep, cfg.md.skin, suffix=cfg.md.suffix)
