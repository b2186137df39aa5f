"""Initial velocities shared by both engines (LAMMPS and hard-sphere EDMD).

Reduced LJ units (velocities in σ/τ, unit masses); for hard spheres τ = sqrt(m σ_A²/k_B T).
"""
import math

import numpy as np


def maxwell_boltzmann(n, T=1.0, seed_or_rng=None):
    """Maxwell–Boltzmann velocities, (n, 3) float64, m = 1.

    Gaussian components of variance T, then the mean (total momentum) is subtracted and the
    velocities are rescaled so that the kinetic energy is EXACTLY (3/2)(n - 1) k_B T
    (the n - 1 counts the 3(n - 1) degrees of freedom left once the total momentum is fixed
    at zero; this is also the temperature definition used by :class:`HardSphereSystem`).
    For n = 1 the only momentum-free velocity is zero.

    seed_or_rng : int, None or numpy.random.Generator.
    Raises ValueError for n < 1 or T <= 0.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need at least one particle, got n={n}")
    if not T > 0:
        raise ValueError(f"temperature must be positive, got {T}")
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    v = rng.normal(0.0, math.sqrt(T), size=(n, 3))
    v -= v.mean(axis=0)
    if n == 1:
        return np.zeros((1, 3))
    ke = 0.5 * np.sum(v * v)
    v *= math.sqrt(1.5 * (n - 1) * T / ke)
    return v
