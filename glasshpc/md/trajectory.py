"""Trajectories with frames every ``frame_interval`` τ for p_hop and CSD ([SOFT] §2.2, SCIENCE.md §2).

Reduced LJ units of species A (σ_AA, ε_AA, m = k_B = 1, τ = sqrt(m σ_AA²/ε_AA)).

Drives an existing :class:`glasshpc.md.lammps.LammpsEngine` through its public methods only
(``load``, ``set_velocities``, ``command``, ``unwrapped_positions``, ``positions``, ``thermo``): the
physics is plain LAMMPS (``fix nvt`` = Nosé–Hoover, or ``fix nve``). Velocities come from the numpy
Generator the caller derives from the task identity, and the engine runs with atom sorting off, so a
trajectory is bitwise reproducible for a given seed.
"""
import numpy as np

from .velocities import maxwell_boltzmann

ENSEMBLES = ("nvt", "nve")


def run_trajectory(engine, positions, types, box, temperature, rng, duration, frame_interval=1.0,
                   ensemble="nvt", tdamp=0.5, energies=False):
    """Run one trajectory from a configuration and record unwrapped positions.

    Parameters
    ----------
    engine : LammpsEngine (reused; its box/atoms are rebuilt only if N, types or box change)
    positions : (N, 3) float64 start positions (σ), any periodic image
    types : (N,) int species indices; box : (3,) float64 edges (σ)
    temperature : float > 0 — Maxwell–Boltzmann velocities at T (zero momentum, kinetic T exactly
        T) and, for ``ensemble='nvt'``, the Nosé–Hoover target
    rng : numpy.random.Generator — the only random input
    duration : float τ, a whole number of frame intervals; frame_interval : float τ, a whole number
        of timesteps
    ensemble : 'nvt' (Nosé–Hoover, damping ``tdamp`` τ, [SOFT]) or 'nve'
    energies : also return the total energy per particle at each frame (ε), for drift checks

    Returns
    -------
    frames : (F, N, 3) float64, F = duration/frame_interval + 1, unwrapped positions at
        t = 0, frame_interval, …, duration; frames[0] equals ``positions`` wrapped into the box.
    (frames, etot (F,) float64) when ``energies`` is true.

    Raises ValueError for an unknown ensemble, non-positive temperature, or a duration /
    frame interval that is not a whole number of frame intervals / timesteps.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dt = float(engine.timestep)
    per = frame_interval / dt
    if not frame_interval > 0 or abs(per - round(per)) > 1e-6 * max(1.0, per) or round(per) < 1:
        raise ValueError(f"frame_interval = {frame_interval} τ must be a positive whole number of "
                         f"timesteps ({dt} τ)")
    n_frames = duration / frame_interval
    if not duration > 0 or abs(n_frames - round(n_frames)) > 1e-6:
        raise ValueError(f"duration = {duration} τ must be a positive whole number of frame "
                         f"intervals ({frame_interval} τ)")
    per, n_frames = int(round(per)), int(round(n_frames))
    types = np.asarray(types)
    engine.load(positions, types, box)
    engine.set_velocities(maxwell_boltzmann(len(types), temperature, rng))
    fix = (f"fix traj all nvt temp {temperature:.17g} {temperature:.17g} {tdamp:.17g}"
           if ensemble == "nvt" else "fix traj all nve")
    engine.command("reset_timestep 0", fix)
    out = np.empty((n_frames + 1, len(types), 3))
    etot = np.empty(n_frames + 1)
    try:
        # `pre yes` on the first segment only: fresh forces after the restore and the new fix
        # (STACK.md); `run 0` also defines the energy of frame 0.
        engine.command("run 0 pre yes post no")
        out[0] = engine.unwrapped_positions()
        if energies:
            etot[0] = engine.thermo("etotal")
        for k in range(1, n_frames + 1):
            engine.command(f"run {per} pre no post no")
            out[k] = engine.unwrapped_positions()
            if energies:
                etot[k] = engine.thermo("etotal")
    finally:
        engine.command("unfix traj")
    return (out, etot) if energies else out
