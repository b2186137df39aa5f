"""Bead-spring melt of linear chains ([DW] §3; SCIENCE.md §1), run through LAMMPS.

Fully flexible linear chains (pentamers in [DW]) of identical monomers (one species "A").
Non-bonded monomers: LJ 4ε[(σ/r)¹² − (σ/r)⁶] truncated at 2.5σ and shifted to zero there
(``pair_modify shift yes``). Bonded monomers: U_b = k (r − r₀)², k = 555.5 ε/σ², r₀ = 0.97σ;
LAMMPS ``bond_style harmonic`` is E = K (r − r₀)² ("the usual 1/2 factor is included in K"), so
K = k = 555.5 with no factor 2. "Non-bonded monomers interact via LJ" ([DW]): bonded (1-2)
pairs have no LJ term, 1-3 and 1-4 pairs interact fully: ``special_bonds lj 0.0 1.0 1.0``.
Paper state: N = 10 000 monomers, ρ = 1.02, five T near T_g ≈ 0.395.
Reduced LJ units (σ = ε = m = k_B = 1). Particle i belongs to chain i // chain_length, bonds join
consecutive particles of a chain.
"""
from dataclasses import dataclass

import numpy as np

from .mixture import Mixture


@dataclass(frozen=True)
class BeadSpringModel(Mixture):
    """Linear bead-spring chains; all lengths σ, energies ε."""
    name: str
    species: tuple
    fractions: tuple
    chain_length: int
    bond_k: float
    bond_r0: float
    lj_epsilon: float
    lj_sigma: float
    lj_cutoff: float

    def sigma_self(self):
        """(1,) σ, the size of the cage test of [CAGE] Eq. 10."""
        return np.array([self.lj_sigma])

    def chains(self, n):
        """(n,) int64 chain (molecule) index of every monomer; ValueError if n is not a multiple
        of chain_length."""
        if n % self.chain_length:
            raise ValueError(f"{n} monomers are not a whole number of chains of {self.chain_length}")
        return np.arange(n, dtype=np.int64) // self.chain_length

    def bonds(self, n):
        """(n_bonds, 2) int64 particle indices (i, i+1) of every bond."""
        i = np.arange(n, dtype=np.int64)
        i = i[(i + 1) % self.chain_length != 0]
        return np.stack([i, i + 1], axis=1)

    def bond_energy(self, r):
        """Reference bond energy k (r − r₀)² (ε)."""
        return self.bond_k * (np.asarray(r, dtype=np.float64) - self.bond_r0) ** 2

    def bond_force(self, r):
        """−dU_b/dr = −2k (r − r₀) (ε/σ; > 0 pushes the monomers apart)."""
        return -2.0 * self.bond_k * (np.asarray(r, dtype=np.float64) - self.bond_r0)

    def lj_energy(self, r):
        """Truncated-and-shifted LJ between non-bonded monomers (ε)."""
        r = np.asarray(r, dtype=np.float64)

        def lj(x):
            return 4 * self.lj_epsilon * ((self.lj_sigma / x) ** 12 - (self.lj_sigma / x) ** 6)
        return np.where(r < self.lj_cutoff, lj(r) - lj(self.lj_cutoff), 0.0)

    def lammps_pair_commands(self):
        return [f"pair_style lj/cut {self.lj_cutoff:.12g}",
                f"pair_coeff 1 1 {self.lj_epsilon:.12g} {self.lj_sigma:.12g} {self.lj_cutoff:.12g}",
                "pair_modify shift yes"]

    def lammps_bond_commands(self):
        return ["bond_style harmonic", f"bond_coeff 1 {self.bond_k:.12g} {self.bond_r0:.12g}",
                "special_bonds lj 0.0 1.0 1.0"]


def bead_spring(chain_length=5):
    """The [DW] melt with chains of ``chain_length`` monomers."""
    return BeadSpringModel(name="bead_spring", species=("A",), fractions=(1.0,),
                           chain_length=int(chain_length), bond_k=555.5, bond_r0=0.97,
                           lj_epsilon=1.0, lj_sigma=1.0, lj_cutoff=2.5)


BEAD_SPRING = bead_spring()
