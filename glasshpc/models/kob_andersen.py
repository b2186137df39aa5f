"""Kob–Andersen binary Lennard-Jones mixture (Kob & Andersen, PRE 51, 4626 (1995)).

SCIENCE.md §1: V_ij(r) = 4 ε_ij[(σ_ij/r)^12 − (σ_ij/r)^6], ε_AA:ε_AB:ε_BB = 1:1.5:0.5,
σ_AA:σ_AB:σ_BB = 1:0.80:0.88 (non-additive), cut at 2.5 σ_ij and **shifted** to zero at the cutoff
(``pair_modify shift yes``: forces are unchanged, energies are continuous so NVE conserves the total).
Composition N_A/N = 0.8. Reduced LJ units of species A (σ_AA = ε_AA = m = k_B = 1).
Species index 0 = A (LAMMPS type 1), 1 = B (LAMMPS type 2).
"""
from dataclasses import dataclass

import numpy as np

from .mixture import Mixture


@dataclass(frozen=True)
class PairModel(Mixture):
    """A pair-potential glass former run through LAMMPS.

    ``epsilon``, ``sigma``, ``cutoff`` are (S, S) symmetric arrays in reduced units;
    ``fractions`` (S,) the number fractions, species 0 first.
    """
    name: str
    species: tuple
    fractions: tuple
    epsilon: np.ndarray
    sigma: np.ndarray
    cutoff: np.ndarray
    shifted: bool

    def sigma_self(self):
        """(S,) σ_ss, the per-species size used by the cage test of [CAGE] Eq. 10 for KA."""
        return np.diag(self.sigma).copy()

    def lammps_pair_commands(self):
        """LAMMPS commands defining the interaction (after ``create_box``)."""
        s = len(self.species)
        cmds = [f"pair_style lj/cut {float(self.cutoff.max()):.12g}"]
        for a in range(s):
            for b in range(a, s):
                cmds.append(f"pair_coeff {a + 1} {b + 1} {self.epsilon[a, b]:.12g} "
                            f"{self.sigma[a, b]:.12g} {self.cutoff[a, b]:.12g}")
        cmds.append("pair_modify shift " + ("yes" if self.shifted else "no"))
        return cmds


_SIG = np.array([[1.0, 0.8], [0.8, 0.88]])
KOB_ANDERSEN = PairModel(
    name="kob_andersen",
    species=("A", "B"),
    fractions=(0.8, 0.2),
    epsilon=np.array([[1.0, 1.5], [1.5, 0.5]]),
    sigma=_SIG,
    cutoff=2.5 * _SIG,
    shifted=True,
)
