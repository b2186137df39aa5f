"""LAMMPS engine for the bead-spring melt ([DW]; SCIENCE.md §1): molecules, bonds, preparation.

Reduced LJ units (σ = ε = m = k_B = 1, τ = sqrt(mσ²/ε)).

:class:`BeadSpringEngine` is a :class:`~glasshpc.md.lammps.LammpsEngine` whose system carries
molecules and bonds (``atom_style bond``, created with ``read_data`` from a temporary data file,
since the library's ``create_atoms`` cannot create bonds). Everything else — restoring positions,
replicas, unwrapping, energies, FIRE inherent states — is inherited unchanged.

Preparation (:meth:`BeadSpringEngine.prepare_snapshot`): chains grown as self-avoiding random
walks with bond length r₀ at the target density (no two monomers closer than ``d_min``, checked
with a cell list), pushed off with the soft potential ``pair_style soft`` (minimisation, bonds
active, bonded pairs excluded as for LJ), switched to the LJ melt and minimised, then Nosé–Hoover
NVT at ``melt_temperature``, NVT at T and NVE (as for the atomic models).
"""
import os
import tempfile

import numpy as np
from numba import njit

from .lammps import LammpsEngine


@njit(cache=True)
def _grow_chains(n, chain_length, box, r0, d_min, u, max_tries):
    """Self-avoiding random-walk chains; u: uniform random numbers (rows of 3) consumed in order.
    A chain whose walk gets stuck (``max_tries`` rejected steps) is removed and restarted.
    Returns (positions (n, 3) unwrapped, ok)."""
    pos = np.zeros((n, 3))
    nc = np.maximum(1, (box / d_min).astype(np.int64))
    ncell = nc[0] * nc[1] * nc[2]
    cap = 64
    cnt = np.zeros(ncell, np.int64)
    mem = np.zeros((ncell, cap), np.int64)
    cell_of = np.zeros(n, np.int64)
    k = 0
    dmin2 = d_min * d_min
    i = 0
    while i < n:
        first = i % chain_length == 0
        placed = False
        for _ in range(max_tries):
            if k + 1 >= u.shape[0]:
                return pos, False
            if first:
                x = u[k, 0] * box[0]
                y = u[k, 1] * box[1]
                z = u[k, 2] * box[2]
            else:
                ct = 2.0 * u[k, 0] - 1.0
                st = np.sqrt(1.0 - ct * ct)
                ph = 2.0 * np.pi * u[k, 1]
                x = pos[i - 1, 0] + r0 * st * np.cos(ph)
                y = pos[i - 1, 1] + r0 * st * np.sin(ph)
                z = pos[i - 1, 2] + r0 * ct
            k += 1
            wx = x - box[0] * np.floor(x / box[0])
            wy = y - box[1] * np.floor(y / box[1])
            wz = z - box[2] * np.floor(z / box[2])
            cx = min(int(wx / box[0] * nc[0]), nc[0] - 1)
            cy = min(int(wy / box[1] * nc[1]), nc[1] - 1)
            cz = min(int(wz / box[2] * nc[2]), nc[2] - 1)
            ok = True
            for ddx in range(-1, 2):
                for ddy in range(-1, 2):
                    for ddz in range(-1, 2):
                        c = (((cx + ddx) % nc[0]) * nc[1] + (cy + ddy) % nc[1]) * nc[2] \
                            + (cz + ddz) % nc[2]
                        for m in range(cnt[c]):
                            j = mem[c, m]
                            if j == i - 1 and not first:
                                continue   # the bonded predecessor sits at r0 by construction
                            dx = pos[j, 0] - x
                            dy = pos[j, 1] - y
                            dz = pos[j, 2] - z
                            dx -= box[0] * np.rint(dx / box[0])
                            dy -= box[1] * np.rint(dy / box[1])
                            dz -= box[2] * np.rint(dz / box[2])
                            if dx * dx + dy * dy + dz * dz < dmin2:
                                ok = False
                                break
                        if not ok:
                            break
                    if not ok:
                        break
                if not ok:
                    break
            if ok:
                c = (cx * nc[1] + cy) * nc[2] + cz
                if cnt[c] >= cap:
                    return pos, False
                mem[c, cnt[c]] = i
                cnt[c] += 1
                cell_of[i] = c
                pos[i, 0] = x
                pos[i, 1] = y
                pos[i, 2] = z
                placed = True
                break
        if placed:
            i += 1
        else:
            # stuck: take the chain's monomers back out (they are the last entries of their
            # cells) and start the chain again elsewhere
            i0 = i - i % chain_length
            for j in range(i - 1, i0 - 1, -1):
                cnt[cell_of[j]] -= 1
            i = i0
    return pos, True


def build_chains(n, chain_length, box, r0, rng, d_min=0.75, max_tries=200):
    """(n, 3) float64 unwrapped monomer positions of n/chain_length linear chains: self-avoiding
    random walks of step r0 (no two non-bonded monomers closer than ``d_min``, minimum image).
    Deterministic for a given numpy Generator ``rng``. Raises RuntimeError when the walk cannot be
    completed (density too high for ``d_min``) and ValueError for n not a multiple of
    chain_length."""
    if n % chain_length:
        raise ValueError(f"{n} monomers are not a whole number of chains of {chain_length}")
    box = np.asarray(box, dtype=np.float64)
    budget = 200 * n
    for attempt in range(3):
        u = rng.random((budget, 3))
        pos, ok = _grow_chains(n, chain_length, box, float(r0), float(d_min), u, max_tries)
        if ok:
            return pos
        budget *= 4
    raise RuntimeError(f"could not grow {n // chain_length} chains with minimum distance {d_min} "
                       f"in box {box}")


def bond_lengths(positions, box, bonds):
    """(n_bonds,) minimum-image lengths of the bonds (pairs of particle indices)."""
    d = positions[bonds[:, 1]] - positions[bonds[:, 0]]
    d -= box * np.rint(d / box)
    return np.linalg.norm(d, axis=1)


class BeadSpringEngine(LammpsEngine):
    """LammpsEngine for glasshpc.models.bead_spring.BeadSpringModel (chains with harmonic bonds).

    Parameters as LammpsEngine (``suffix`` included); ``soft_prefactor`` A of the push-off ``pair_style soft``
    (E = A[1 + cos(π r/r_c)], r_c = 2^(1/6) σ), ``d_min`` the closest approach of non-bonded
    monomers when the chains are grown."""

    def __init__(self, model, timestep, skin=0.3, soft_prefactor=60.0, d_min=0.75,
                 suffix="none"):
        super().__init__(model, timestep, skin, suffix=suffix)
        self.soft_prefactor = float(soft_prefactor)
        self.d_min = float(d_min)

    def _build(self, wrapped, types, box):
        n = len(types)
        m = self.model
        chains = m.chains(n)
        bonds = m.bonds(n)
        lines = ["glasshpc bead-spring melt", "", f"{n} atoms", f"{len(bonds)} bonds",
                 "1 atom types", "1 bond types", "",
                 f"0 {box[0]:.17g} xlo xhi", f"0 {box[1]:.17g} ylo yhi", f"0 {box[2]:.17g} zlo zhi",
                 "", "Masses", "", "1 1.0", "", "Atoms # bond", ""]
        lines += [f"{i + 1} {chains[i] + 1} {types[i] + 1} {wrapped[i, 0]:.17g} "
                  f"{wrapped[i, 1]:.17g} {wrapped[i, 2]:.17g}" for i in range(n)]
        lines += ["", "Bonds", ""]
        lines += [f"{k + 1} 1 {a + 1} {b + 1}" for k, (a, b) in enumerate(bonds)]
        fd, path = tempfile.mkstemp(prefix="glasshpc-melt-", suffix=".data")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            self.command("clear", "units lj", "atom_style bond",
                         "atom_modify map array sort 0 0.0", "boundary p p p")
            self.lmp.command(f"read_data {path}")
            self.log.append(f"# read_data: {n} atoms in {n // m.chain_length} chains, "
                            f"{len(bonds)} bonds")
        finally:
            os.unlink(path)
        self.command(*m.lammps_bond_commands(), *m.lammps_pair_commands(),
                     f"neighbor {self.skin} bin", "neigh_modify every 1 delay 0 check yes",
                     f"timestep {self.timestep}",
                     "thermo_style custom step temp pe ke etotal press", "thermo 0",
                     "compute peatom all pe/atom")
        if self.lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {self.lmp.get_natoms()} atoms, expected {n}")

    def prepare_snapshot(self, n, density, temperature, rng, melt_temperature, melt_time,
                         nvt_time, nve_time, tdamp):
        """Equilibrated melt snapshot: random-walk chains at density ``density`` (no overlaps),
        soft push-off (minimisation with ``pair_style soft``), LJ minimisation, then NVT at
        ``melt_temperature`` for ``melt_time``, NVT at ``temperature`` for ``nvt_time``, NVE for
        ``nve_time`` (τ; Nosé–Hoover damping ``tdamp``). ``rng`` numpy Generator.

        Returns (positions (N, 3) float64 wrapped, types (N,) int32, box (3,) float64)."""
        m = self.model
        box = np.full(3, (n / density) ** (1.0 / 3.0))
        types = m.types(n)
        pos = build_chains(n, m.chain_length, box, m.bond_r0, rng, self.d_min)
        self._signature = None             # fresh system: pair styles change below
        self.load(pos, types, box)
        rc = 2.0 ** (1.0 / 6.0) * m.lj_sigma
        self.command(f"pair_style soft {rc:.12g}", f"pair_coeff 1 1 {self.soft_prefactor:.12g}",
                     "min_style cg", "minimize 0 1e-4 1000 10000",
                     *m.lammps_pair_commands(), "minimize 0 1e-4 1000 10000")
        self._equilibrate(n, temperature, rng, melt_temperature, melt_time, nvt_time, nve_time,
                          tdamp)
        # LAMMPS lets atoms stray up to skin/2 outside the box between re-neighbourings
        pos = self.positions()
        pos -= box * np.floor(pos / box)
        pos[pos >= box] = 0.0
        return pos, types, box
