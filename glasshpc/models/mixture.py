"""Composition of a multi-species model: particles per species and the species of each particle.

Reduced LJ units of species A (nothing here carries a unit). Particles are ordered species by
species, A first, as in the papers' files.
"""
import numpy as np


class Mixture:
    """Mixin for model dataclasses with ``species`` (names) and ``fractions`` (number fractions)."""

    def counts(self, n):
        """(S,) int64 particles per species for N = n, the last species taking the rounding rest."""
        c = [int(round(f * n)) for f in self.fractions[:-1]]
        return np.array(c + [n - sum(c)], dtype=np.int64)

    def types(self, n):
        """(n,) int32 species index of each particle: A first, then B, …"""
        return np.repeat(np.arange(len(self.species), dtype=np.int32), self.counts(n))
