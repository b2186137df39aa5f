"""Averaging independent cage-state MC chains, and how much MC noise is left in the average.

Reduced LJ units of species A (lengths σ_AA). The cage state r^CS = ⟨r_i⟩ over constrained MC
([CAGE] Eq. 10, SCIENCE.md §3) is estimated by K independent chains started from the same r^init
with different seeds (glasshpc.stages.cage_seed); r^CS is their mean. The constrained system mixes
slowly (measured on the KA demo: the chain-to-chain noise of Δr^CS falls only ~ n^-0.34 with the
chain length n), so K short chains estimate ⟨r⟩ better than one K-times longer chain.

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
