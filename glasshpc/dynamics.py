"""Dynamics of isoconfigurational ensembles: propensity, F_s(q,t), τ_α, MSD and the end of the
ballistic regime, four-point susceptibilities χ₄ of F_s and of the propensity, S(q).

Reduced LJ units of species A (lengths σ_AA, times τ). Displacements are unwrapped
r_i(t) − r_i(0) (SCIENCE.md §2).
"""
import numpy as np


def propensity(displacements, kind="abs"):
    """Dynamic propensity over the replicas of one snapshot ([CAGE] Eq. 4).

    displacements : (R, T, N, 3) float, unwrapped r_i(t) − r_i(0) of R replicas
    kind : 'abs' → ⟨|Δr_i(t)|⟩_iso ; 'squared' → ⟨|Δr_i(t)|²⟩_iso
    Returns (T, N) float64. Replicas are summed in index order, so the result does not depend on
    which rank ran which replica. Raises ValueError for an unknown kind or a bad shape.
    """
    d = np.asarray(displacements)
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"displacements must have shape (R, T, N, 3), got {d.shape}")
    r2 = np.einsum("rtnk,rtnk->rtn", d, d, dtype=np.float64)
    if kind == "abs":
        return np.sqrt(r2).mean(axis=0)
    if kind == "squared":
        return r2.mean(axis=0)
    raise ValueError(f"propensity kind must be 'abs' or 'squared', got {kind!r}")


def debye_waller(displacements, times, t=1.0):
    """Local Debye–Waller factor ⟨|r_i(t) − r_i(0)|²⟩_iso at the read-out closest to ``t``
    (default 1 τ, [DW] §2; SCIENCE.md §2).

    displacements : (R, T, N, 3) float; times : (T,) read-out times (τ).
    Returns ((N,) float64, the read-out time actually used (τ)). Replicas are summed in index
    order (rank-count independent)."""
    d = np.asarray(displacements)
    times = np.asarray(times, dtype=np.float64)
    if d.ndim != 4 or d.shape[1] != times.size:
        raise ValueError(f"displacements (R, T, N, 3) must match {times.size} times, got {d.shape}")
    k = int(np.argmin(np.abs(times - t)))
    dk = d[:, k].astype(np.float64)
    return np.einsum("rnk,rnk->rn", dk, dk).mean(axis=0), float(times[k])


def self_intermediate_scattering(displacements, types, q, n_species):
    """Isotropic self-intermediate scattering function per species.

    F_s(q,t) = ⟨(1/N_s) Σ_{j∈s} sin(q|Δr_j|)/(q|Δr_j|)⟩ over replicas — the orientational average of
    exp(i q·Δr_j) (SCIENCE.md §2).

    displacements : (R, T, N, 3); types : (N,) int; q : float (σ⁻¹)
    Returns (n_species, T) float64.
    """
    d = np.asarray(displacements, dtype=np.float64)
    r = np.sqrt(np.einsum("rtnk,rtnk->rtn", d, d))
    f = np.sinc(q * r / np.pi)           # np.sinc(x) = sin(πx)/(πx)
    out = np.empty((n_species, d.shape[1]))
    for s in range(n_species):
        out[s] = f[:, :, types == s].mean(axis=(0, 2))
    return out


def mean_squared_displacement(displacements, types, n_species):
    """Mean squared displacement per species, ⟨|Δr_j(t)|²⟩ over replicas and the particles j of
    each species (SCIENCE.md §2).

    displacements : (R, T, N, 3) float, unwrapped; types : (N,) int species indices
    Returns (n_species, T) float64 (σ²); NaN rows for species absent from ``types``."""
    d = np.asarray(displacements)
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"displacements must have shape (R, T, N, 3), got {d.shape}")
    r2 = np.einsum("rtnk,rtnk->rtn", d, d, dtype=np.float64)
    out = np.full((n_species, d.shape[1]), np.nan)
    for s in range(n_species):
        if np.any(types == s):
            out[s] = r2[:, :, types == s].mean(axis=(0, 2))
    return out


def debye_waller_index(times, t=1.0):
    """Index of the read-out closest to ``t`` (τ): the time of the Debye–Waller factor."""
    return int(np.argmin(np.abs(np.asarray(times, dtype=np.float64) - t)))


# the Debye–Waller factor is ⟨|Δr|²⟩ on the cage plateau, ≈ 1 τ ([DW] §2). "Near" = the read-out
# used (debye_waller_index) lies within a factor DW_NEAR_FACTOR of DW_TIME: on the KA plateau the
# MSD changes by tens of % over such a factor, while a read-out far off measures the ballistic
# regime or the α-relaxation (e.g. the one time of an imported file: the target itself)
DW_TIME = 1.0
DW_NEAR_FACTOR = 2.0


def debye_waller_near(times, t=DW_TIME, factor=DW_NEAR_FACTOR):
    """True if the read-out closest to ``t`` (τ) lies in [t / factor, t · factor]: the
    Debye–Waller block ``dw`` of the fits (and its single-variable ρ) is only defined then."""
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0:
        return False
    tk = times[debye_waller_index(times, t)]
    return bool(t / factor <= tk <= t * factor)


def replica_sums(displacement, types, q, n_species, k_dw, kind="abs"):
    """The per-replica reductions every replica average of the dynamics stage is built from
    (:func:`combine_replica_sums`), so that replicas can be reduced where they run and the
    [R, T, N, 3] displacements need not be kept (``iso.store_displacements: false``).

    displacement : (T, N, 3) float, unwrapped r_i(t) − r_i(0) of one replica (σ) — pass the float32
    array that would be stored, so both paths see the same numbers; types : (N,) int;
    q : wave number of F_s (σ⁻¹); k_dw : read-out index of the Debye–Waller factor
    (:func:`debye_waller_index`); kind : propensity kind 'abs' | 'squared'.
    Returns dict of float64 arrays: ``propensity`` (T, N) |Δr_i(t)| (or |Δr_i(t)|²),
    ``debye_waller`` (N,) |Δr_i(t_k)|², ``fs`` (n_species, T) Σ_{j∈s} sin(q|Δr_j|)/(q|Δr_j|),
    ``msd`` (n_species, T) Σ_{j∈s} |Δr_j|². Raises ValueError for a bad shape or kind."""
    d = np.asarray(displacement)
    if d.ndim != 3 or d.shape[-1] != 3 or d.shape[1] != len(types):
        raise ValueError(f"displacement must have shape (T, {len(types)}, 3), got {d.shape}")
    if kind not in ("abs", "squared"):
        raise ValueError(f"propensity kind must be 'abs' or 'squared', got {kind!r}")
    r2 = np.einsum("tnk,tnk->tn", d, d, dtype=np.float64)
    r = np.sqrt(r2)
    f = np.sinc(q * r / np.pi)           # np.sinc(x) = sin(πx)/(πx)
    fs = np.zeros((n_species, d.shape[0]))
    msd = np.zeros((n_species, d.shape[0]))
    for s in range(n_species):
        m = types == s
        fs[s] = f[:, m].sum(axis=1)
        msd[s] = r2[:, m].sum(axis=1)
    return {"propensity": r if kind == "abs" else r2, "debye_waller": r2[k_dw].copy(),
            "fs": fs, "msd": msd}


REPLICA_SUMS = ("propensity", "debye_waller", "fs", "msd")


def combine_replica_sums(parts, types, n_species):
    """Replica averages from :func:`replica_sums` of every replica of one snapshot, **in replica
    order** (the sums are added left to right: the result does not depend on where each replica
    ran). ``parts``: iterable of those dicts.

    Returns dict: ``propensity`` (T, N) ⟨|Δr_i(t)|⟩_iso (or ⟨|Δr_i|²⟩), ``debye_waller`` (N,)
    ⟨|Δr_i(t_k)|²⟩_iso, ``fs`` (n_species, T) F_s(q,t), ``msd`` (n_species, T) (σ²),
    ``fs_replicas`` (R, n_species, T) the one-trajectory F̂_s(q,t) of every replica (for
    :func:`chi4_fs`), all float64; NaN rows of ``fs``/``msd``/``fs_replicas`` for species absent
    from ``types``. Raises ValueError without replicas."""
    acc, n, fs_each = None, 0, []
    for part in parts:
        if acc is None:
            acc = {k: np.array(part[k], dtype=np.float64) for k in REPLICA_SUMS}
        else:
            for k in REPLICA_SUMS:
                acc[k] += part[k]
        fs_each.append(np.array(part["fs"], dtype=np.float64))
        n += 1
    if n == 0:
        raise ValueError("no replicas to combine")
    counts = np.bincount(np.asarray(types), minlength=n_species)[:n_species].astype(np.float64)
    per_species = np.where(counts > 0, n * counts, np.nan)[:, None]
    return {"propensity": acc["propensity"] / n, "debye_waller": acc["debye_waller"] / n,
            "fs": acc["fs"] / per_species, "msd": acc["msd"] / per_species,
            "fs_replicas": np.stack(fs_each) / np.where(counts > 0, counts, np.nan)[None, :, None]}


CHI4_FS_DEFINITION = (
    "chi4_fs[s, t] = N_s [<Fhat_s(q,t)^2> - <Fhat_s(q,t)>^2], the variance over all S x R "
    "trajectories (every replica of every snapshot, population variance 1/(S R)) of the "
    "one-trajectory self-intermediate scattering function Fhat_s(q,t) = (1/N_s) sum_{j in s} "
    "sin(q|dr_j(t)|)/(q|dr_j(t)|) (the orientational average of cos(q.dr_j)), q = attr q; "
    "N_s = particles of species s per snapshot (mean over snapshots). This is Tripodo et al., Int. J. "
    "Mol. Sci. 23, 9322 (2022) Eq. 8, (1/N)[sum_ij <f_i f_j> - (sum_i <f_i>)^2], with the "
    "per-particle overlap f_i = sin(q|dr_i|)/(q|dr_i|) of one trajectory in place of q_i^a and <.> "
    "over trajectories: the usual chi_4 of the self overlap (e.g. Berthier et al., Science 310, "
    "1797 (2005)); SCIENCE.md section 2")
CHI4_PROPENSITY_DEFINITION = (
    "chi4_propensity[s, t] = (1/N_s) [<Q_s(t)^2> - <Q_s(t)>^2] with Q_s(t) = sum_{i in s} q_i, "
    "q_i = 1 if the propensity Delta r_i(t) > a_s else 0, <.> the mean over the S snapshots "
    "(isoconfigurational ensembles; population variance 1/S; NaN for S < 2), a_s = attr "
    "chi4_threshold[s] = mean propensity of species s at tau_alpha of species s (attr "
    "chi4_threshold_time; the first / last read-out when tau_alpha lies before / after them or "
    "F_s does not reach 1/e): Tripodo et al., Int. J. Mol. Sci. 23, 9322 (2022) Eq. 8; "
    "SCIENCE.md section 2")


def chi4_fs(fs_replicas, types, n_species):
    """Four-point susceptibility of the self overlap F_s per species and time
    (definition: :data:`CHI4_FS_DEFINITION`): [DW] (Tripodo et al. 2022) Eq. 8,
    (1/N)[Σ_ij ⟨f_i f_j⟩ − (Σ_i ⟨f_i⟩)²], with the one-trajectory overlap f_i = sin(q|Δr_i|)/(q|Δr_i|)
    of SCIENCE.md §2 in place of q_i^a and ⟨·⟩ over trajectories — the usual χ₄ of the self overlap
    (e.g. Berthier et al., Science 310, 1797 (2005)).

    χ₄^s(t) = N_s [⟨F̂_s(q,t)²⟩ − ⟨F̂_s(q,t)⟩²], the population variance over all S × R trajectories
    (replicas of every snapshot) of the one-trajectory F̂_s = (1/N_s) Σ_{j∈s} sin(q|Δr_j|)/(q|Δr_j|).

    fs_replicas : (S, R, n_species, T) float, F̂_s of every replica (``fs_replicas`` of
    :func:`combine_replica_sums`; /dynamics/fs_replicas); types : (S, N) or (N,) int species.
    Returns (n_species, T) float64 (dimensionless; NaN rows for absent species). The sums run over
    the whole stored array in a fixed order: the same numbers whoever computed the replicas.
    Raises ValueError for a bad shape."""
    f = np.asarray(fs_replicas, dtype=np.float64)
    if f.ndim != 4 or f.shape[2] != n_species:
        raise ValueError(f"fs_replicas must have shape (S, R, {n_species}, T), got {f.shape}")
    n_s = _species_counts(types, n_species)
    flat = f.reshape(-1, n_species, f.shape[3])
    mean = flat.mean(axis=0)
    var = ((flat - mean) ** 2).mean(axis=0)     # two-pass: no cancellation of ⟨F²⟩ − ⟨F⟩²
    return n_s[:, None] * var


def _species_counts(types, n_species):
    """(n_species,) float64 mean number of particles per snapshot of each species (NaN if none)."""
    t = np.asarray(types)
    t = t.reshape(1, -1) if t.ndim == 1 else t
    c = np.array([np.bincount(row, minlength=n_species)[:n_species] for row in t], np.float64)
    c = c.mean(axis=0)
    return np.where(c > 0, c, np.nan)


def chi4_threshold(times, propensity, types, tau, n_species):
    """Probe length a_s of :func:`chi4_propensity` ([DW] after Eq. 8): the mean propensity of
    species s at t = τ_α of species s, linearly interpolated in ln t between read-outs.

    times : (T,) τ; propensity : (S, T, N); types : (S, N); tau : (n_species,) τ_α (before the first
    read-out: the first is used; NaN or after the last: the last). Returns ((n_species,) a_s in σ (σ² for the squared
    propensity), (n_species,) the time used (τ)), float64 each."""
    times = np.asarray(times, dtype=np.float64)
    prop = np.asarray(propensity, dtype=np.float64)
    types = np.asarray(types)
    a = np.full(n_species, np.nan)
    used = np.full(n_species, np.nan)
    for s in range(n_species):
        m = types == s
        if not m.any():
            continue
        mean = np.array([prop[:, k][m].mean() for k in range(times.size)])
        # τ_α before the first read-out: the first; NaN (F_s above 1/e) or after the last: the last
        t = float(np.clip(tau[s], times[0], times[-1])) if np.isfinite(tau[s]) \
            else float(times[-1])
        a[s] = np.interp(np.log(t), np.log(times), mean)
        used[s] = t
    return a, used


def chi4_propensity(propensity, types, threshold, n_species):
    """Four-point susceptibility of the propensity per species and time ([DW] Eq. 8):
    χ₄^s(t) = (1/N_s)[Σ_{i,j∈s} ⟨q_i q_j⟩ − (Σ_{i∈s} ⟨q_i⟩)²] = Var(Q_s)/N_s, q_i = Θ(Δr_i(t) − a_s),
    Q_s = Σ_{i∈s} q_i, ⟨·⟩ the mean over snapshots (each snapshot one isoconfigurational ensemble,
    Δr_i its propensity; population variance). Definition: :data:`CHI4_PROPENSITY_DEFINITION`.

    propensity : (S, T, N) float (σ, or σ² for the squared kind) — measured or predicted;
    types : (S, N) int; threshold : (n_species,) a_s (:func:`chi4_threshold`) or a scalar.
    Returns (n_species, T) float64 (dimensionless); all NaN for S < 2 or an absent species.
    Raises ValueError for mismatched shapes."""
    prop = np.asarray(propensity, dtype=np.float64)
    types = np.asarray(types)
    if prop.ndim != 3 or types.shape != (prop.shape[0], prop.shape[2]):
        raise ValueError(f"propensity (S, T, N) {prop.shape} and types (S, N) {types.shape} "
                         "must match")
    a = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n_species,))
    n_s = _species_counts(types, n_species)
    out = np.full((n_species, prop.shape[1]), np.nan)
    if prop.shape[0] < 2:
        return out
    for s in range(n_species):
        m = (types == s)[:, None, :]
        if not np.isfinite(n_s[s]) or not np.isfinite(a[s]):
            continue
        Q = ((prop > a[s]) & m).sum(axis=2).astype(np.float64)     # (S, T)
        out[s] = ((Q - Q.mean(axis=0)) ** 2).mean(axis=0) / n_s[s]
    return out


BALLISTIC_END_DEFINITION = ("t_x = sqrt(MSD_plateau / (3 T)): the time at which the ballistic MSD "
                            "3 k_B T t^2 / m reaches the plateau MSD, MSD_plateau = MSD at the "
                            "minimum of d ln MSD / d ln t; NaN when that minimum is not inside the "
                            "read-out times")


def ballistic_end(times, msd, temperature):
    """End of the ballistic regime t_x (τ), per species.

    The ballistic MSD 3 k_B T t² / m (m = k_B = 1) reaches the cage plateau at
    t_x = sqrt(MSD_plateau / (3 T)), with MSD_plateau the MSD where the log-log slope
    d ln MSD / d ln t is smallest (the plateau between the ballistic slope 2 and the diffusive
    slope 1). The slope is taken by second-order finite differences in ln t; its minimum is refined
    by a parabola through the smallest slope and its two neighbours, and ln MSD interpolated
    linearly in ln t there.

    times : (T,) increasing read-out times (τ); msd : (T,) or (n_species, T) MSD (σ²);
    temperature : k_B T (ε).
    Returns float (or (n_species,) float64 for 2-d ``msd``); NaN when the smallest slope is the
    first or last read-out (no plateau inside the measured times) or fewer than 3 finite points.
    Raises ValueError for mismatched shapes or temperature ≤ 0."""
    times = np.asarray(times, dtype=np.float64)
    msd = np.asarray(msd, dtype=np.float64)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if msd.ndim == 2:
        return np.array([ballistic_end(times, m, temperature) for m in msd])
    if msd.shape != times.shape:
        raise ValueError(f"msd {msd.shape} and times {times.shape} must match")
    if times.size < 3 or not (np.all(np.isfinite(msd)) and np.all(msd > 0)):
        return float("nan")
    x, y = np.log(times), np.log(msd)
    slope = np.gradient(y, x)
    k = int(np.argmin(slope))
    if k == 0 or k == times.size - 1:
        return float("nan")
    # vertex of the parabola through (x, slope) at k-1, k, k+1 (a minimum: the middle is lowest)
    xs, ss = x[k - 1:k + 2], slope[k - 1:k + 2]
    a, b, _ = np.polyfit(xs - xs[1], ss, 2)
    x_min = xs[1] + (-b / (2 * a) if a > 0 else 0.0)
    x_min = min(max(x_min, xs[0]), xs[2])
    plateau = np.exp(np.interp(x_min, x, y))
    return float(np.sqrt(plateau / (3.0 * temperature)))


def tau_alpha(times, fs, level=np.exp(-1.0)):
    """Structural relaxation time: first t where F_s(q,t) falls below ``level`` (default 1/e),
    linearly interpolated in log t. times (T,) increasing, fs (T,). Returns float (τ), or NaN when
    F_s never reaches the level within the times."""
    times = np.asarray(times, dtype=np.float64)
    fs = np.asarray(fs, dtype=np.float64)
    below = np.flatnonzero(fs < level)
    if below.size == 0:
        return float("nan")
    k = below[0]
    if k == 0:
        return float(times[0])
    lt0, lt1 = np.log(times[k - 1]), np.log(times[k])
    w = (fs[k - 1] - level) / (fs[k - 1] - fs[k])
    return float(np.exp(lt0 + w * (lt1 - lt0)))


def q_grid(q_max=12.0, n_bins=120):
    """Edges (n_bins + 1,) of the |q| bins used by :func:`structure_factor` (σ⁻¹)."""
    return np.linspace(0.0, q_max, n_bins + 1)


def structure_factor(positions, box, edges):
    """Static structure factor S(q) binned in |q| (σ⁻¹): (B,) float64, NaN in bins holding no
    reciprocal-lattice vector. The non-uniform-FFT evaluation of
    :func:`glasshpc.structure.structure_factor.structure_factor` (arguments and errors there)."""
    from .structure.structure_factor import structure_factor as fast
    return fast(positions, box, edges)


def first_peak(edges, sq, q_min=3.0):
    """|q| (bin centre, σ⁻¹) of the highest S(q) above ``q_min`` (skips the small-q region)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = np.isfinite(sq) & (centres > q_min)
    return float(centres[ok][np.argmax(sq[ok])])
