"""Glass-forming models: parameters and the LAMMPS commands that define them.

Reduced LJ units of species A. Each model module exposes a ``Model`` instance with the fields the
engines need; :func:`get_model` maps the YAML ``model.name`` to it.
"""
from .kob_andersen import KOB_ANDERSEN

MODELS = {KOB_ANDERSEN.name: KOB_ANDERSEN}


def get_model(name):
    """Return the model registered under ``name``; KeyError lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
