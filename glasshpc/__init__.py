"""glasshpc: predicting the dynamics of glass-forming liquids from their structure.

Reduced Lennard-Jones units of the large species A throughout (sigma_AA = eps_AA = m = k_B = 1,
tau = sqrt(m sigma_AA^2 / eps_AA)); see ../shared/SCIENCE.md.

Besides the batch job (``python -m glasshpc.run``) the package is a library: the names in ``__all__`` are
the pieces the pipeline uses, importable from ``glasshpc`` directly (loaded on first use, so ``import
glasshpc`` stays cheap). Arrays are numpy: positions (N, 3) float64 σ, types (N,) int species indices
(0 = A), box (3,) float64 σ; see each function's docstring and README "Library use".
"""

__version__ = "0.1.0"

# numba fixes each kernel's cache directory when its @njit(cache=True) decorator runs: choose it
# (GLASSHPC_CACHE_DIR, NUMBA_CACHE_DIR, or a private fallback) before any kernel module is imported
from . import jitcache as _jitcache  # noqa: E402

_jitcache.configure()

# public name → module (relative to the package) that defines it
_EXPORTS = {
    # structural descriptors ([CAGE], [SOFT], [AVG]) and neighbours
    "DescriptorSpec": "structure.descriptors", "compute_descriptors": "structure.descriptors",
    "descriptor_preset": ("structure.descriptors", "preset"), "feature_names": "structure.descriptors",
    "radial_distribution": "structure.descriptors", "NeighborList": "structure.neighbors",
    "sann_neighbors": "structure.sann", "structure_factor": "structure.structure_factor",
    # states: cage state (constrained MC), inherent state (FIRE)
    "cage_state": "states.cage", "PairPotential": "states.cage", "cage_potential": "models",
    "inherent_state": "states.inherent",
    # dynamics of isoconfigurational ensembles
    "propensity": "dynamics", "self_intermediate_scattering": "dynamics", "tau_alpha": "dynamics",
    "mean_squared_displacement": "dynamics", "debye_waller": "dynamics",
    "chi4_fs": "dynamics", "chi4_propensity": "dynamics", "chi4_threshold": "dynamics",
    # learning (scikit-learn estimators)
    "GroupedRidgeCV": "learn.ridge", "pearson": "learn.ridge", "SoftnessSVC": "learn.softness",
    # models and published data
    "get_model": "models", "read_glassbench": "io.imported", "read_bapst": "io.imported",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    import importlib
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'glasshpc' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(f".{module}", __name__), attr, None)
    if value is None:
        raise AttributeError(f"module 'glasshpc' has no attribute {name!r} (not in glasshpc.{module})")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
