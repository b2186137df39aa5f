"""Glass-forming models: parameters and the LAMMPS commands that define them.

Reduced LJ units of species A. Each model module exposes a ``Model`` instance with the fields the
engines need; :func:`get_model` maps the YAML ``model.name`` to it. Every model has ``name``,
``species`` (names, index 0 first), ``fractions``, ``counts(n)``, ``types(n)`` and
``sigma_self()`` (the per-species sizes σ_s of the cage test, [CAGE] Eq. 10).

| name | module | engine |
|---|---|---|
| kob_andersen | kob_andersen.py | LAMMPS |
| harmonic_spheres | harmonic_spheres.py | LAMMPS (pair_style harmonic/cut) |
| hard_spheres | hard_spheres.py | EDMD (md/edmd.py) |
| bead_spring | bead_spring.py | LAMMPS with bonds (md/bead_spring.py) |
"""
from .bead_spring import BEAD_SPRING
from .hard_spheres import HARD_SPHERES
from .harmonic_spheres import HARMONIC_SPHERES
from .kob_andersen import KOB_ANDERSEN

MODELS = {m.name: m for m in (KOB_ANDERSEN, HARMONIC_SPHERES, HARD_SPHERES, BEAD_SPRING)}


def get_model(name):
    """Return the model registered under ``name``; KeyError lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None


def cage_potential(name):
    """The glasshpc.states.cage.PairPotential of a model, for the cage-state MC ([CAGE] Eq. 10):
    KA truncated and shifted, harmonic spheres, hard spheres. ValueError for the melt (bonds are
    not part of that potential)."""
    from ..states.cage import PairPotential
    if name == "kob_andersen":
        return PairPotential.kob_andersen(shift=True)
    if name == "harmonic_spheres":
        return PairPotential.harmonic_spheres(HARMONIC_SPHERES.diameters[1])
    if name == "hard_spheres":
        return PairPotential.hard_spheres(HARD_SPHERES.diameters[1])
    raise ValueError(f"no cage-state pair potential for model {name!r}")
