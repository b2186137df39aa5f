"""Binary harmonic spheres ([CAGE]; SCIENCE.md §1), run through LAMMPS.

V_ij(r) = ε (1 − r/σ_ij)² for r < σ_ij, 0 beyond; additive σ_ij = (σ_i + σ_j)/2 with
σ_A = 1, σ_B = 1.4 (species A is the small one), N_A/N = 0.5, all ε_ij = ε = 1.
Paper state point ρσ_A³ = 0.82, T = 0.0045 (τ_α ≈ 671 τ).
Reduced units of species A: σ_A = ε = m = k_B = 1, τ = sqrt(m σ_A²/ε).
Species index 0 = A (LAMMPS type 1), 1 = B (LAMMPS type 2).

LAMMPS: ``pair_style harmonic/cut`` computes E = k (r_c − r)² for r < r_c ("the usual 1/2 factor is
included in k", docs.lammps.org/pair_harmonic_cut.html), so ε(1 − r/σ_ij)² = (ε/σ_ij²)(σ_ij − r)²
gives k_ij = ε/σ_ij², r_c = σ_ij. Energy and force vanish continuously at σ_ij (no shift needed);
tests/test_harmonic.py checks energy and forces against the formula.
"""
from dataclasses import dataclass

import numpy as np

from .kob_andersen import PairModel


@dataclass(frozen=True)
class HarmonicModel(PairModel):
    """PairModel whose interaction is the repulsive harmonic V = ε(1 − r/σ_ij)², r < σ_ij.

    Extra field ``diameters`` (S,) σ_i; ``sigma`` is the additive (S, S) σ_ij."""
    diameters: tuple = ()

    def sigma_self(self):
        """(S,) σ_i, the per-species size of the cage test of [CAGE] Eq. 10."""
        return np.asarray(self.diameters, dtype=np.float64).copy()

    def pair_energy(self, r, a, b):
        """Reference formula ε_ab (1 − r/σ_ab)² for r < σ_ab else 0 (float or array, ε)."""
        s, e = self.sigma[a, b], self.epsilon[a, b]
        r = np.asarray(r, dtype=np.float64)
        return np.where(r < s, e * (1.0 - r / s) ** 2, 0.0)

    def pair_force(self, r, a, b):
        """−dV/dr = (2ε/σ)(1 − r/σ) for r < σ (repulsive, > 0), ε/σ."""
        s, e = self.sigma[a, b], self.epsilon[a, b]
        r = np.asarray(r, dtype=np.float64)
        return np.where(r < s, 2.0 * e / s * (1.0 - r / s), 0.0)

    def lammps_pair_commands(self):
        s = len(self.species)
        cmds = ["pair_style harmonic/cut"]
        for a in range(s):
            for b in range(a, s):
                k = self.epsilon[a, b] / self.sigma[a, b] ** 2
                cmds.append(f"pair_coeff {a + 1} {b + 1} {k:.17g} {self.sigma[a, b]:.17g}")
        return cmds


def harmonic_spheres(size_ratio=1.4, x_a=0.5, epsilon=1.0):
    """The [CAGE] binary harmonic-sphere model (σ_B/σ_A = ``size_ratio``, N_A/N = ``x_a``)."""
    d = np.array([1.0, float(size_ratio)])
    sig = 0.5 * (d[:, None] + d[None, :])
    return HarmonicModel(name="harmonic_spheres", species=("A", "B"), fractions=(x_a, 1.0 - x_a),
                         epsilon=np.full((2, 2), float(epsilon)), sigma=sig, cutoff=sig.copy(),
                         shifted=False, diameters=tuple(d))


HARMONIC_SPHERES = harmonic_spheres()
