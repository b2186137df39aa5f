"""Binary hard spheres ([CAGE], [CMP], [AVG]; SCIENCE.md §1), run by our event-driven MD
(glasshpc/md/edmd.py).

Hard core at σ_ij = (σ_i + σ_j)/2 (additive), σ_A = 1 (species A is the LARGE one),
σ_B/σ_A = 0.85, N_A/N = 0.3. Paper state point η = 0.58, N = 2000 (τ_α ≈ 10⁴ τ).
Units: σ_A, m = 1, k_B T = 1 by convention, τ = sqrt(m σ_A²/k_B T).
Species index 0 = A, 1 = B; particles are ordered A first (as in the papers' files).
"""
from dataclasses import dataclass

import numpy as np

from .mixture import Mixture


@dataclass(frozen=True)
class HardSphereModel(Mixture):
    """Binary additive hard spheres: ``diameters`` (S,) σ_s, ``fractions`` (S,) number fractions."""
    name: str
    species: tuple
    fractions: tuple
    diameters: tuple

    def sigma_self(self):
        """(S,) σ_s, the per-species size of the cage test of [CAGE] Eq. 10."""
        return np.asarray(self.diameters, dtype=np.float64).copy()

    def particle_diameters(self, types):
        """(N,) float64 σ_i of each particle from its species index."""
        return self.sigma_self()[np.asarray(types)]

    def packing_fraction(self, n, density):
        """η = (π/6) Σ_i σ_i³ / V with V = n/ρ, using the actual species counts of N = n."""
        d3 = np.sum(self.counts(n) * np.asarray(self.diameters) ** 3)
        return float(np.pi / 6.0 * d3 * density / n)

    def density(self, n, packing_fraction):
        """Number density ρ (σ_A⁻³) giving packing fraction η for N = n (inverse of the above)."""
        return float(packing_fraction / self.packing_fraction(n, 1.0))


HARD_SPHERES = HardSphereModel(name="hard_spheres", species=("A", "B"), fractions=(0.3, 0.7),
                               diameters=(1.0, 0.85))
