"""LAMMPS engine: snapshot preparation and isoconfigurational replicas through the Python module.

Reduced LJ units of species A (σ_AA = ε_AA = m = k_B = 1, τ = sqrt(m σ_AA²/ε_AA)); all masses 1.

One :class:`LammpsEngine` per MPI rank drives one serial LAMMPS instance (``comm=MPI.COMM_SELF``),
reused across tasks: the box and atoms are created once and every task only overwrites positions,
image flags and velocities. Because each instance owns all its atoms on one process, per-atom
arrays are read through ``lmp.numpy.extract_atom`` (copied at once) and written with
``scatter_atoms`` (STACK.md: a restore costs ≈ 0.2 ms).

Determinism: atom sorting is off (``atom_modify sort 0 0.0``, STACK.md) and every velocity is drawn
by numpy from a generator the caller derives from the task identity, so a run is bitwise
reproducible for a given seed. The LAMMPS commands issued are kept in :attr:`LammpsEngine.log`
for the provenance record.
"""
import ctypes

import numpy as np

from ..parallel import MPI  # mpi4py.MPI must be imported before lammps (STACK.md)
from .velocities import maxwell_boltzmann  # noqa: F401  (replica velocities, SCIENCE.md §2)


_LOG_LINES = 2000


def import_lammps():
    """Import the LAMMPS Python module, with a clear error when it is missing."""
    try:
        import lammps
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the LAMMPS Python module is not importable; install the wheels with "
            "`pip install .[wheels]` or point PYTHONPATH at your own LAMMPS build "
            f"({err})") from err
    return lammps


def lattice_start(n, box, rng):
    """(n, 3) float64 start positions: n randomly chosen sites of the smallest simple-cubic lattice
    with ≥ n sites filling ``box``, jittered by 5 % of the spacing (no close pairs, unlike random
    insertion at liquid density)."""
    m = int(np.ceil(n ** (1.0 / 3.0) - 1e-9))
    grid = np.stack(np.meshgrid(*(np.arange(m),) * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = rng.choice(len(grid), size=n, replace=False)
    spacing = np.asarray(box) / m
    pos = (grid[sites] + 0.5 + 0.05 * rng.uniform(-1, 1, (n, 3))) * spacing
    return pos


class LammpsEngine:
    """A reusable serial LAMMPS instance for one pair model.

    Parameters
    ----------
    model : glasshpc.models.kob_andersen.PairModel
    timestep : float, τ
    skin : float, neighbour-list skin (σ); STACK.md measured 0.3 fastest for KA
    comm : MPI communicator of the instance (default COMM_SELF; an engine group's communicator
        for glasshpc.md.group.GroupLammpsEngine)
    suffix : str, LAMMPS accelerator suffix (``md.suffix`` resolved, see glasshpc/md/accel.py):
        'none' (plain styles), 'opt', 'omp' (one thread), 'intel', 'kk', 'gpu'; kept through
        ``clear``. Raises ValueError for 'auto' or an unknown name.
    """

    def __init__(self, model, timestep, skin=0.3, comm=None, suffix="none"):
        from .accel import cmdargs
        lammps = import_lammps()
        self.model = model
        self.timestep = float(timestep)
        self.skin = float(skin)
        self.suffix = suffix
        extra = cmdargs(suffix)
        self.lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite", *extra],
                                 comm=MPI.COMM_SELF if comm is None else comm)
        self.log = [f"# command line: {' '.join(extra)}"] if extra else []
        self._signature = None
        self._img = {k: int(self.lmp.extract_setting(k))
                     for k in ("IMGMASK", "IMGMAX", "IMGBITS", "IMG2BITS")}

    # -- low level ---------------------------------------------------------------------------
    def command(self, *lines):
        """Issue LAMMPS commands, recording them for provenance."""
        for line in lines:
            # provenance needs the protocol, not every read-out of every task: keep the first lines
            if len(self.log) < _LOG_LINES:
                self.log.append(line)
            self.lmp.command(line)

    def close(self):
        """Free the LAMMPS instance (never ``finalize``: MPI stays up for the caller)."""
        if self.lmp is not None:
            self.lmp.close()
            self.lmp = None

    def _local(self, name):
        nlocal = self.lmp.extract_global("nlocal")
        return self.lmp.numpy.extract_atom(name)[:nlocal]

    def _order(self):
        return np.argsort(self._local("id"), kind="stable")

    # -- system ------------------------------------------------------------------------------
    def load(self, positions, types, box):
        """Set the configuration: positions (N, 3) float64 (any image; wrapped into the box here),
        types (N,) int species indices, box (3,) edge lengths. Image flags are reset to 0 and
        velocities to 0. The box and atoms are created only when N, types or box change.

        Raises ValueError for non-finite positions (naming the first offending particle) or types
        outside the model's species."""
        positions = np.asarray(positions, dtype=np.float64)
        types = np.asarray(types)
        box = np.asarray(box, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if bad.size:
            raise ValueError(f"particle {bad[0]} has a non-finite position {positions[bad[0]]}")
        if types.min() < 0 or types.max() >= len(self.model.species):
            raise ValueError(f"species indices must lie in [0, {len(self.model.species) - 1}]")
        wrapped = positions - box * np.floor(positions / box)
        wrapped[wrapped >= box] -= np.broadcast_to(box, wrapped.shape)[wrapped >= box]
        sig = (len(types), types.tobytes(), box.tobytes())
        if sig != self._signature:
            self._build(wrapped, types, box)
            self._signature = sig
        else:
            self._scatter("x", wrapped)
            self._scatter("v", np.zeros_like(wrapped))
            self._reset_images()

    def _build(self, wrapped, types, box):
        self.command("clear", "units lj", "atom_style atomic", "atom_modify map array sort 0 0.0",
                     "boundary p p p",
                     f"region box block 0 {box[0]:.17g} 0 {box[1]:.17g} 0 {box[2]:.17g}",
                     f"create_box {len(self.model.species)} box", "mass * 1.0")
        n = len(types)
        self.lmp.create_atoms(n, list(range(1, n + 1)), (np.asarray(types) + 1).tolist(),
                              wrapped.ravel().tolist())
        self.log.append(f"# create_atoms via library: {n} atoms")
        self.command(*self.model.lammps_pair_commands(),
                     f"neighbor {self.skin} bin", "neigh_modify every 1 delay 0 check yes",
                     f"timestep {self.timestep}", "thermo_style custom step temp pe ke etotal press",
                     "thermo 0",
                     # tallied only on steps that ask for it (run 0, minimize), so free elsewhere
                     "compute peatom all pe/atom")
        if self.lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {self.lmp.get_natoms()} atoms, expected {n}")

    def _scatter(self, name, values):
        """Write a per-atom property ordered by atom id through the library's scatter (safe against
        LAMMPS reallocating its arrays, unlike writes into extract_atom views)."""
        values = np.ascontiguousarray(values)
        dtype = 1 if values.dtype == np.float64 else 0
        count = 1 if values.ndim == 1 else values.shape[1]
        self.lmp.scatter_atoms(name, dtype, count, values.ctypes.data_as(ctypes.c_void_p))

    def _reset_images(self):
        i = self._img
        packed = i["IMGMAX"] | (i["IMGMAX"] << i["IMGBITS"]) | (i["IMGMAX"] << i["IMG2BITS"])
        self._scatter("image", np.full(self.lmp.get_natoms(), packed, dtype=np.int32))

    def set_velocities(self, v):
        """Overwrite velocities; v (N, 3) float64 ordered by particle index (atom id − 1)."""
        self._scatter("v", np.asarray(v, dtype=np.float64))

    def velocities(self):
        """(N, 3) float64 velocities ordered by particle index."""
        order = self._order()
        return self._local("v")[order].copy()

    def positions(self):
        """(N, 3) float64 wrapped positions ordered by particle index."""
        order = self._order()
        return self._local("x")[order].copy()

    def unwrapped_positions(self):
        """(N, 3) float64 unwrapped positions x + image·L ordered by particle index."""
        order = self._order()
        x = self._local("x")[order]
        img = self._local("image")[order].astype(np.int64)
        i = self._img
        im = np.stack([(img & i["IMGMASK"]) - i["IMGMAX"],
                       ((img >> i["IMGBITS"]) & i["IMGMASK"]) - i["IMGMAX"],
                       (img >> i["IMG2BITS"]) - i["IMGMAX"]], axis=1)
        box = self.box()
        return x + im * box

    def box(self):
        """(3,) float64 box edge lengths."""
        lo, hi = self.lmp.extract_box()[:2]
        return np.array(hi) - np.array(lo)

    def energies(self):
        """(N,) float64 per-particle potential energy (ε, half of each pair term) of the last
        ``run 0`` or ``minimize``, ordered by particle index."""
        lammps = import_lammps()
        pe = self.lmp.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)
        nlocal = self.lmp.extract_global("nlocal")
        return np.array(pe[:nlocal])[self._order()]

    def forces(self):
        """(N, 3) float64 net force on each particle (ε/σ), ordered by particle index."""
        return self._local("f")[self._order()].copy()

    def thermo(self, key):
        """Thermodynamic quantity of the last step (``pe``, ``ke``, ``etotal``, ``temp``, ``press``)."""
        return float(self.lmp.get_thermo(key))

    # -- protocols ---------------------------------------------------------------------------
    def _run(self, steps, first):
        self.command(f"run {int(steps)} pre {'yes' if first else 'no'} post no")

    def prepare_snapshot(self, n, density, temperature, rng, melt_temperature, melt_time,
                         nvt_time, nve_time, tdamp):
        """Equilibrated snapshot: lattice start, Nosé–Hoover NVT melt at ``melt_temperature``,
        NVT at ``temperature`` for ``nvt_time``, NVE for ``nve_time`` (SCIENCE.md §1 preparation).

        Returns (positions (N, 3) float64 wrapped, types (N,) int32, box (3,) float64).
        """
        L = (n / density) ** (1.0 / 3.0)
        box = np.full(3, L)
        types = self.model.types(n)
        self.load(lattice_start(n, box, rng), types, box)
        self._equilibrate(n, temperature, rng, melt_temperature, melt_time, nvt_time, nve_time,
                          tdamp)
        return self.positions(), types, box

    def _equilibrate(self, n, temperature, rng, melt_temperature, melt_time, nvt_time, nve_time,
                     tdamp):
        """Maxwell–Boltzmann velocities at ``melt_temperature``, Nosé–Hoover NVT melt, NVT at
        ``temperature``, NVE (the protocol of :meth:`prepare_snapshot`, shared with subclasses)."""
        self.command("reset_timestep 0")
        self.set_velocities(maxwell_boltzmann(n, melt_temperature, rng))
        dt = self.timestep
        # every phase changes the fixes, so each starts with `pre yes`: with `pre no` LAMMPS keeps
        # its lists of the previous fixes and the integrator calls a deleted fix (SIGSEGV).
        for t_target, duration in ((melt_temperature, melt_time), (temperature, nvt_time)):
            if duration > 0:
                self.command(f"fix thermostat all nvt temp {t_target} {t_target} {tdamp}")
                self._run(round(duration / dt), first=True)
                self.command("unfix thermostat")
        if nve_time > 0:
            self.command("fix integrate all nve")
            self._run(round(nve_time / dt), first=True)
            self.command("unfix integrate")

    def run_replica(self, positions, types, box, temperature, rng, steps):
        """One isoconfigurational replica (SCIENCE.md §2): restore ``positions``, draw fresh
        Maxwell–Boltzmann velocities at ``temperature`` (:func:`maxwell_boltzmann`), integrate NVE
        and record r_i(t) − r_i(0) (unwrapped) at the step counts ``steps`` (increasing ints > 0).

        Returns (len(steps), N, 3) float64 displacements in σ. The total energy per particle at each
        read-out is kept in :attr:`last_energies` ((len(steps),) float64, ε) for drift checks.
        """
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size == 0 or steps[0] <= 0 or np.any(np.diff(steps) <= 0):
            raise ValueError("replica read-out steps must be positive and strictly increasing")
        self.load(positions, types, box)
        x0 = self.positions()
        self.set_velocities(maxwell_boltzmann(len(types), temperature, rng))
        self.command("reset_timestep 0", "fix integrate all nve")
        out = np.empty((steps.size, len(types), 3))
        self.last_energies = np.empty(steps.size)
        done = 0
        for k, s in enumerate(steps):
            # `pre yes` once: fresh forces after the restore and set-up of the new fix (STACK.md)
            self._run(s - done, first=(k == 0))
            done = s
            out[k] = self.unwrapped_positions() - x0
            self.last_energies[k] = self.thermo("etotal")
        self.command("unfix integrate")
        return out

    def static_properties(self, positions, types, box):
        """Per-particle potential energy and net force of a configuration ([CAGE] |F^net| feature).

        Returns (energies (N,) float64 ε, forces (N, 3) float64 ε/σ), ordered by particle index."""
        self.load(positions, types, box)
        self.command("run 0 pre yes post no")
        return self.energies(), self.forces()

    def inherent_state(self, positions, types, box, force_tolerance, max_iterations):
        """Inherent state by FIRE energy minimisation (SCIENCE.md §3; Bitzek et al. 2006) with
        LAMMPS ``min_style fire``; converged when the largest per-particle |F_i| (``min_modify norm
        max``) is below ``force_tolerance`` (ε/σ).

        Returns (positions (N, 3) float64 in the same periodic image as ``positions`` — r^IS − r^init
        is the true displacement —, energies (N,) float64 per-particle potential energy ε,
        max_force float ε/σ). Raises RuntimeError if the tolerance is not reached within
        ``max_iterations`` (the inherent state would be silently wrong)."""
        positions = np.asarray(positions, dtype=np.float64)
        self.load(positions, types, box)
        x0 = self.positions()
        self.command("reset_timestep 0", "min_style fire", "min_modify norm max",
                     f"minimize 0 {force_tolerance:.6g} {int(max_iterations)} "
                     f"{10 * int(max_iterations)}")
        r_is = positions + (self.unwrapped_positions() - x0)
        fmax = float(np.sqrt((self.forces() ** 2).sum(axis=1).max()))
        if not fmax < force_tolerance:
            raise RuntimeError(f"FIRE stopped at max |F| = {fmax:.3g} > tolerance "
                               f"{force_tolerance:.3g} after {int(max_iterations)} iterations; "
                               "raise inherent.max_iterations")
        return r_is, self.energies(), fmax
