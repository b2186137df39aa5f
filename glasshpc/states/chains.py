"""Averaging independent cage-state MC chains, and how much MC noise is left in the average.

Reduced LJ units of species A (lengths σ_AA). The cage state r^CS = ⟨r_i⟩ over constrained MC
([CAGE] Eq. 10, SCIENCE.md §3) is estimated by K independent chains started from the same r^init
with different seeds (glasshpc.stages.cage_seed); r^CS is their mean. The constrained system mixes
slowly (measured on the KA demo: the chain-to-chain noise of Δr^CS falls only ~ n^-0.34 with the
chain length n). K short chains are not the same estimator as one K-times longer chain: the chains
drift apart over ≥ 10⁴ sweeps (split-R̂ ≈ 1.2 across chains, ⟨Δr^CS⟩ growing with the
equilibration), and on the KA demo the mean of K short chains from r^init correlates better with
the propensity (bench/study_cage_convergence.py). The convergence diagnostics below measure this.

The MC noise is measured by the split-half correlation of Δr^CS = |r^CS − r^init| between the
means of two disjoint halves of the chains; the Spearman–Brown formula R_m = m r / (1 + (m − 1) r)
turns a correlation r between two estimates into the reliability of an estimate averaging m times
as many independent chains (classical test theory; here the "test" is one chain). It is exact for
additive noise; Δr^CS is a norm, so when the chain noise is comparable to Δr^CS the step-up
underestimates the reliability slightly (synthetic cages: by ≤ 0.015 at reliability ≈ 0.85, by
0.03–0.09 at ≈ 0.4; tests/test_cage_chains.py).
"""
import numpy as np


def average_chains(chain_positions):
    """r^CS of one snapshot from its chains.

    chain_positions : (K, N, 3) float, the per-chain averages ⟨r_i⟩_k (same image as r^init)
    Returns (N, 3) float64, the mean over chains, summed in chain order (a fixed order: the result
    does not depend on which rank ran which chain). Raises ValueError for a bad shape."""
    c = np.asarray(chain_positions, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] != 3 or c.shape[0] < 1:
        raise ValueError(f"chain positions must have shape (K, N, 3), K ≥ 1, got {c.shape}")
    return c.mean(axis=0)


def split_half_pearson(chain_positions, init, types, n_species):
    """Per-species Pearson correlation of Δr^CS between the two halves of the chains.

    chain_positions : (K, N, 3) float, K ≥ 2; init : (N, 3) r^init (same image); types : (N,) int
    The halves are chains [0, h) and [h, 2h), h = K // 2 (with odd K the last chain is left out);
    Δr^CS of each half is |mean of its chains − r^init|.
    Returns (n_species,) float64; NaN for a species with fewer than 2 particles or no spread.
    Use :func:`spearman_brown` with m = K / h for the reliability of the K-chain mean."""
    c = np.asarray(chain_positions, dtype=np.float64)
    K = c.shape[0]
    if K < 2:
        raise ValueError(f"need at least 2 chains for a split-half correlation, got {K}")
    h = K // 2
    init = np.asarray(init, dtype=np.float64)
    types = np.asarray(types)
    da = np.linalg.norm(c[:h].mean(axis=0) - init, axis=1)
    db = np.linalg.norm(c[h:2 * h].mean(axis=0) - init, axis=1)
    out = np.full(n_species, np.nan)
    for sp in range(n_species):
        a, b = da[types == sp], db[types == sp]
        if a.size >= 2 and a.std() > 0 and b.std() > 0:
            out[sp] = np.corrcoef(a, b)[0, 1]
    return out


def spearman_brown(r, m):
    """Reliability of an average of m times as many independent chains as the two estimates whose
    correlation is ``r``: m r / (1 + (m − 1) r). Array-friendly; NaN stays NaN."""
    r = np.asarray(r, dtype=np.float64)
    return m * r / (1.0 + (m - 1.0) * r)


def chain_reliability(split_half, n_chains):
    """Reliability (n_species,) of the K-chain mean r^CS from the per-snapshot split-half Pearson
    correlations ``split_half`` (S, n_species): their mean over snapshots, stepped up by
    Spearman–Brown with m = K / (K // 2). Returns (mean split-half r, reliability)."""
    r = np.mean(np.asarray(split_half, dtype=np.float64), axis=0)
    return r, spearman_brown(r, n_chains / (n_chains // 2))


# --------------------------------------------------------------------------- convergence
# A chain that is still relaxing (equilibration too short) or chains that sit in different
# sub-basins of the constrained system (their averages are then not estimates of one ⟨r_i⟩)
# show up as a systematic change of Δr^CS between the two halves of a chain's measurement and
# as a potential-scale reduction R̂ > 1 across the half-chains. Thresholds of the warning:
DRIFT_Z = 4.0    # |mean shift of Δr^CS between the halves| / its standard error
RHAT_LIMIT = 1.1  # median split-R̂ of a species (Gelman et al., Bayesian Data Analysis, 3rd ed.)


def half_diagnostics(half_positions, init, types, n_species):
    """Drift of one chain between the two halves of its measurement, per species.

    half_positions : (2, N, 3) float, ⟨r_i⟩ over the first and over the second half of the
        measurement sweeps (cage_state's ``half_positions``; same image as ``init``)
    init : (N, 3) r^init; types : (N,) int species indices
    Returns a dict of float64 arrays, all NaN for a species with < 2 particles (or empty halves):
      displacement (2, n_species) — ⟨Δr^CS⟩ of each half, Δr^CS = |⟨r_i⟩_half − r_i^init| (σ);
      pearson (n_species,) — Pearson of the per-particle Δr^CS of the two halves;
      shift (n_species,) — ⟨Δr^CS_2nd − Δr^CS_1st⟩ over the species' particles (σ);
      shift_se (n_species,) — its standard error std(d_i) / √N_s (particles taken as
        independent; spatial correlations make it somewhat small, hence the wide DRIFT_Z).
    A stationary chain has E[shift] = 0 (both halves have the same length, so the same noise
    bias of the norm); a chain still relaxing from r^init has shift > 0."""
    h = np.asarray(half_positions, dtype=np.float64)
    if h.ndim != 3 or h.shape[0] != 2 or h.shape[2] != 3:
        raise ValueError(f"half positions must have shape (2, N, 3), got {h.shape}")
    types = np.asarray(types)
    dr = np.linalg.norm(h - np.asarray(init, dtype=np.float64)[None], axis=2)   # (2, N)
    out = {k: np.full(shape, np.nan) for k, shape in
           (("displacement", (2, n_species)), ("pearson", (n_species,)),
            ("shift", (n_species,)), ("shift_se", (n_species,)))}
    for sp in range(n_species):
        a, b = dr[0, types == sp], dr[1, types == sp]
        if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        d = b - a
        out["displacement"][:, sp] = a.mean(), b.mean()
        out["shift"][sp] = d.mean()
        out["shift_se"][sp] = d.std(ddof=1) / np.sqrt(d.size)
        if a.std() > 0 and b.std() > 0:
            out["pearson"][sp] = np.corrcoef(a, b)[0, 1]
    return out


def split_rhat(half_positions, half_variance, half_samples):
    """Split potential-scale reduction R̂ per particle across all half-chains of a snapshot.

    half_positions : (K, 2, N, 3) float, the half-chain means ⟨r_i⟩ (K chains × 2 halves = M
        half-chains, K ≥ 1: one chain gives the split-R̂ of its two halves)
    half_variance : (K, 2, N) float, the within-half sample variances of r_i (ddof 1), each
        averaged over the three coordinates (cage_state's ``half_variance``, σ²)
    half_samples : samples per half-chain n (cage_state's ``half_samples``: one per pass; the
        mean of the two half lengths if they differ)
    With per particle i, pooled over the coordinates (per-coordinate R̂ from M − 1 degrees of
    freedom would be too noisy per particle):
        W = mean over the M half-chains of their within variances,
        B/n = (1/3) Σ_coords var_M(half-chain means, ddof 1),
        R̂ = √[((n − 1)/n · W + B/n) / W]
    (Gelman & Rubin 1992; split form: Gelman et al., BDA3 §11.4, without rank normalisation).
    R̂ → 1 as the halves become equivalent samples of one distribution; R̂ ≈ √(1 + τ/n) for
    stationary chains of integrated autocorrelation time τ, and larger when chains (or halves)
    sit in different sub-basins of the cage or still drift. Returns (N,) float64, NaN where
    W = 0, n < 2 or a half is empty. Raises ValueError for inconsistent shapes."""
    m = np.asarray(half_positions, dtype=np.float64)
    v = np.asarray(half_variance, dtype=np.float64)
    if m.ndim != 4 or m.shape[1] != 2 or m.shape[3] != 3 or v.shape != m.shape[:3]:
        raise ValueError(f"need half positions (K, 2, N, 3) and variances (K, 2, N), got "
                         f"{m.shape} and {v.shape}")
    N = m.shape[2]
    n = float(half_samples)
    if n < 2:
        return np.full(N, np.nan)
    m = m.reshape(-1, N, 3)
    W = v.reshape(-1, N).mean(axis=0)
    B_n = m.var(axis=0, ddof=1).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sqrt(((n - 1) / n * W + B_n) / W)
    r[~(W > 0)] = np.nan
    return r


def convergence_summary(displacement, pearson, shift, shift_se, rhat, types, species, keys):
    """Run-level convergence report of the cage states (rank-count independent: fixed order).

    displacement (S, K, 2, n_sp), pearson / shift / shift_se (S, K, n_sp): half_diagnostics of
    every chain; rhat (S, N) split_rhat per snapshot; types (S, N); species: names; keys: dict
    with the config values equilibration_sweeps / measurement_sweeps / chains (for the advice).
    Returns (attrs, lines, warning): attrs {name: (n_sp,) float64} for /states/cage, log lines,
    and the warning text (None when no chain drifts and R̂ stays below RHAT_LIMIT).
    The pooled drift z = Σ shift / √(Σ shift_se²) over all chains of all snapshots."""
    disp, pear = np.asarray(displacement), np.asarray(pearson)
    sh, se = np.asarray(shift), np.asarray(shift_se)
    rhat, types = np.asarray(rhat), np.asarray(types)
    n_sp = len(species)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_chain = sh / se
        z = np.nansum(sh, axis=(0, 1)) / np.sqrt(np.nansum(se ** 2, axis=(0, 1)))
    rh = [rhat[types == sp] for sp in range(n_sp)]
    rh = [r[np.isfinite(r)] for r in rh]
    attrs = {
        "convergence_displacement_first_half": np.nanmean(disp[:, :, 0], axis=(0, 1)),
        "convergence_displacement_second_half": np.nanmean(disp[:, :, 1], axis=(0, 1)),
        "convergence_half_pearson": np.nanmean(pear, axis=(0, 1)),
        "convergence_shift": np.nanmean(sh, axis=(0, 1)),
        "convergence_shift_z": z,
        "convergence_drifting_chains": np.sum(np.abs(z_chain) > DRIFT_Z, axis=(0, 1)),
        "convergence_rhat_median": np.array([np.median(r) if r.size else np.nan for r in rh]),
        "convergence_rhat_max": np.array([r.max() if r.size else np.nan for r in rh]),
        "convergence_rhat_above_limit": np.array([np.mean(r > RHAT_LIMIT) if r.size else np.nan
                                                  for r in rh]),
    }
    n_chains = sh.shape[0] * sh.shape[1]

    def per(name, fmt):
        return ", ".join(f"{fmt.format(v)} ({s})" for s, v in zip(species, attrs[name]))

    lines = [
        "cage convergence: ⟨Δr^CS⟩ first → second half of the measurement "
        + ", ".join(f"{a:.4f} → {b:.4f} σ ({s})" for s, a, b in
                    zip(species, attrs["convergence_displacement_first_half"],
                        attrs["convergence_displacement_second_half"]))
        + "; shift z " + per("convergence_shift_z", "{:+.1f}")
        + f"; drifting chains (|z| > {DRIFT_Z:g}) "
        + per("convergence_drifting_chains", "{:d}") + f" of {n_chains}",
        "cage convergence: Pearson of the halves' Δr^CS " + per("convergence_half_pearson",
                                                              "{:.3f}")
        + "; split-R̂ median " + per("convergence_rhat_median", "{:.3f}")
        + ", max " + per("convergence_rhat_max", "{:.3f}")
        + f", fraction > {RHAT_LIMIT:g} " + per("convergence_rhat_above_limit", "{:.3f}"),
    ]
    problems = []
    drifting = np.abs(z) > DRIFT_Z
    if np.any(drifting) or np.any(attrs["convergence_drifting_chains"] > 0):
        problems.append(
            f"Δr^CS changes between the halves of the measurement (pooled z "
            + per("convergence_shift_z", "{:+.1f}") + "): the chains are still relaxing — raise "
            f"cage.equilibration_sweeps (now {keys['equilibration_sweeps']})")
    if np.any(attrs["convergence_rhat_median"] > RHAT_LIMIT):
        problems.append(
            f"split-R̂ median " + per("convergence_rhat_median", "{:.3f}")
            + f" > {RHAT_LIMIT:g}: the half-chains do not sample one distribution — raise "
            f"cage.measurement_sweeps (now {keys['measurement_sweeps']}) and "
            f"cage.equilibration_sweeps (now {keys['equilibration_sweeps']}); more cage.chains "
            f"(now {keys['chains']}) average the noise of r^CS but do not lower R̂")
    warning = ("glasshpc: warning: cage states not converged: " + "; ".join(problems)
               if problems else None)
    return attrs, lines, warning
