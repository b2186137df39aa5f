"""Energy barriers from the probability of rearranging ([SOFT] §2.3, §3.3.2; SCIENCE.md §6).

Reduced LJ units of species A (energies ε_AA, temperatures ε_AA/k_B, times τ).

Particles are binned by a structural variable x — softness S, or a model's Z-score
x = (w·F − b_best)/σ_tr (:func:`z_score`) — and at each temperature T the fraction of a bin's particles
that rearrange within a short window (2 τ in [SOFT]) estimates P_R(x, T) = k/n. Per bin:

    Arrhenius:  ln P_R = Σ(x) − ΔE(x)/T                 ([SOFT] §3.3.2)
    Kramers:    P_R = (1/T) e^{Σ(x)} e^{−ΔE(x)/T},  i.e. ln(T P_R) = Σ − ΔE/T   ([SOFT] §2.3)

fitted by weighted least squares in 1/T with binomial errors: Var(ln P̂) ≈ (1 − P)/(n P) = (1 − P̂)/k
(delta method); points with k = 0 or k = n carry no finite log and are left out (reported in
``used``). Uncertainties are the square roots of the diagonal of the WLS covariance (AᵀWA)⁻¹ with
absolute (binomial) weights; ``chi2``/``dof`` tells whether the model describes the data.

ΔE is close to linear in x ([SOFT]); with ΔE(x) = E0 + E1 x and Σ(x) = S0 + S1 x the lines
ln P_R(1/T) of all bins cross at one temperature, the onset T_on = E1/S1 (:func:`fit_landscape`, a
joint 4-parameter WLS over all bins and temperatures with the delta-method error of T_on).
:func:`line_intersections` gives the model-free alternative (pairwise crossings of per-bin lines).

Model comparison: :func:`explained_variance_fraction` (law of total variance, binned) and
:func:`jensen_shannon` (natural log: 0 for equal distributions, ln 2 for disjoint ones).
"""
from dataclasses import dataclass

import numpy as np

FORMS = ("arrhenius", "kramers")


def z_score(output, b_best, sigma_tr):
    """x = (output − b_best)/σ_tr ([SOFT] §3.3.2): a model output (w·F for linear models) made
    comparable across models. output : array (any shape); returns float64 of the same shape."""
    if not sigma_tr > 0:
        raise ValueError(f"sigma_tr must be positive, got {sigma_tr}")
    return (np.asarray(output, dtype=np.float64) - b_best) / sigma_tr


def rearrangement_counts(x, rearranged, edges):
    """Per-bin counts: n (B,) particles with x in [edges[b], edges[b+1]), k (B,) of them rearranging.

    x : (M,) float, rearranged : (M,) bool, edges : (B+1,) increasing. Particles outside the edges
    are not counted. Returns (n, k) int64."""
    x = np.asarray(x, dtype=np.float64).ravel()
    r = np.asarray(rearranged, dtype=bool).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    if x.shape != r.shape:
        raise ValueError(f"x {x.shape} and rearranged {r.shape} differ")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be a strictly increasing 1-D array of ≥ 2 values")
    n, _ = np.histogram(x, edges)
    k, _ = np.histogram(x[r], edges)
    return n.astype(np.int64), k.astype(np.int64)


def _log_rate(T, k, n, form):
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    T = np.asarray(T, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 ≤ k ≤ n for every point")
    use = (k > 0) & (k < n)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        y = np.log(p) + (np.log(T) if form == "kramers" else 0.0)
        var = (1.0 - p) / k
    return y, var, use


def _wls(A, y, var):
    W = 1.0 / var
    AtW = A.T * W
    cov = np.linalg.inv(AtW @ A)
    beta = cov @ (AtW @ y)
    r = y - A @ beta
    return beta, cov, float(np.sum(W * r * r))


@dataclass
class BarrierFit:
    """Per-bin fits. sigma, delta_e, sigma_err, delta_e_err, chi2 : (B,) float64 (NaN where fewer
    than 2 usable temperatures); cov : (B, 2, 2) covariance of (Σ, ΔE); dof : (B,) int;
    used : (T, B) bool points that entered the fit; form : 'arrhenius' | 'kramers'."""
    sigma: np.ndarray
    delta_e: np.ndarray
    sigma_err: np.ndarray
    delta_e_err: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    used: np.ndarray
    form: str


def fit_barriers(temperatures, k, n, form="arrhenius"):
    """Fit ln P_R = Σ − ΔE/T (or the Kramers form) for every bin ([SOFT] §2.3, §3.3.2).

    temperatures : (T,) float > 0; k, n : (T, B) int rearranging / total particles per bin.
    Returns :class:`BarrierFit`. Raises ValueError for shape mismatches, T ≤ 0, k > n."""
    T = np.asarray(temperatures, dtype=np.float64)
    k = np.atleast_2d(np.asarray(k))
    n = np.atleast_2d(np.asarray(n))
    if T.ndim != 1 or k.shape != n.shape or k.shape[0] != T.size:
        raise ValueError(f"temperatures (T,) = {T.shape}, k and n (T, B) = {k.shape}, {n.shape}")
    if np.any(T <= 0):
        raise ValueError("temperatures must be positive")
    y, var, use = _log_rate(T[:, None], k, n, form)
    B = k.shape[1]
    out = BarrierFit(*(np.full(B, np.nan) for _ in range(4)), np.full((B, 2, 2), np.nan),
                     np.full(B, np.nan), np.zeros(B, np.int64), use, form)
    for b in range(B):
        u = use[:, b]
        if u.sum() < 2:
            continue
        A = np.stack([np.ones(u.sum()), -1.0 / T[u]], axis=1)
        beta, cov, chi2 = _wls(A, y[u, b], var[u, b])
        out.sigma[b], out.delta_e[b] = beta
        out.cov[b] = cov
        out.sigma_err[b], out.delta_e_err[b] = np.sqrt(np.diag(cov))
        out.chi2[b], out.dof[b] = chi2, u.sum() - 2
    return out


@dataclass
class Landscape:
    """Joint linear fit ln P_R(x, T) = S0 + S1 x − (E0 + E1 x)/T (+ ln(1/T) for Kramers).

    params : (4,) = (S0, S1, E0, E1); cov : (4, 4); errors : (4,) sqrt(diag cov);
    onset : float T_on = E1/S1, the common crossing of the lines ln P_R vs 1/T; onset_err : float
    (delta method with the full covariance); chi2 : float; dof : int; form : str."""
    params: np.ndarray
    cov: np.ndarray
    errors: np.ndarray
    onset: float
    onset_err: float
    chi2: float
    dof: int
    form: str

    def delta_e(self, x):
        """ΔE(x) = E0 + E1 x (ε)."""
        return self.params[2] + self.params[3] * np.asarray(x, dtype=np.float64)

    def sigma(self, x):
        """Σ(x) = S0 + S1 x."""
        return self.params[0] + self.params[1] * np.asarray(x, dtype=np.float64)


def fit_landscape(x_centers, temperatures, k, n, form="arrhenius"):
    """Joint WLS of all bins and temperatures with ΔE and Σ linear in x ([SOFT] §2.3: ΔE ≈ e₀ − e₁S),
    giving the onset temperature where the fitted lines intersect (SCIENCE.md §6).

    x_centers : (B,) bin centres; temperatures : (T,); k, n : (T, B). Returns :class:`Landscape`.
    Raises ValueError if fewer than 5 usable points remain or the slopes are undetermined."""
    x = np.asarray(x_centers, dtype=np.float64)
    T = np.asarray(temperatures, dtype=np.float64)
    k = np.asarray(k)
    n = np.asarray(n)
    if k.shape != (T.size, x.size) or n.shape != k.shape:
        raise ValueError(f"k and n must have shape (T, B) = ({T.size}, {x.size}), got {k.shape}")
    y, var, use = _log_rate(T[:, None], k, n, form)
    tt, bb = np.nonzero(use)
    if tt.size < 5:
        raise ValueError(f"only {tt.size} (T, bin) points with 0 < k < n; need ≥ 5")
    inv = 1.0 / T[tt]
    A = np.stack([np.ones_like(inv), x[bb], -inv, -inv * x[bb]], axis=1)
    beta, cov, chi2 = _wls(A, y[tt, bb], var[tt, bb])
    S1, E1 = beta[1], beta[3]
    onset = E1 / S1 if S1 != 0 else np.nan
    g = np.array([0.0, -E1 / S1 ** 2, 0.0, 1.0 / S1]) if S1 != 0 else np.full(4, np.nan)
    onset_err = float(np.sqrt(g @ cov @ g))
    return Landscape(beta, cov, np.sqrt(np.diag(cov)), float(onset), onset_err, chi2,
                     int(tt.size - 4), form)


def line_intersections(sigma, delta_e):
    """Temperatures where the fitted lines ln P_R = Σ_b − ΔE_b/T of bins a < b cross:
    T_ab = (ΔE_a − ΔE_b)/(Σ_a − Σ_b). Returns a 1-D float64 array over the finite pairs; its median
    is a model-free onset estimate ([SOFT] §2.3)."""
    s = np.asarray(sigma, dtype=np.float64)
    e = np.asarray(delta_e, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(e)
    s, e = s[ok], e[ok]
    a, b = np.triu_indices(s.size, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (e[a] - e[b]) / (s[a] - s[b])
    return t[np.isfinite(t)]


def explained_variance_fraction(y, x, n_bins=20):
    """Fraction of Var(Y) explained by X, Var(E[Y|X])/Var(Y) (law of total variance; [SOFT] §3.3.3,
    SCIENCE.md §6), E[Y|X] estimated by the mean of Y in ``n_bins`` equally populated bins of X
    (ties in X never straddle a bin edge).

    y : (M,) float (e.g. logit p_r^true); x : (M,) float (a model's output). Returns float in [0, 1].
    With finite samples a pure-noise X still gives ≈ (n_bins − 1)/M."""
    y = np.asarray(y, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.shape != y.shape or y.size < 2:
        raise ValueError(f"x {x.shape} and y {y.shape} must be equally long (≥ 2)")
    vy = y.var()
    if vy == 0:
        raise ValueError("Var(y) is zero")
    edges = np.unique(np.quantile(x, np.linspace(0, 1, int(n_bins) + 1)[1:-1]))
    idx = np.searchsorted(edges, x, side="right")
    cnt = np.bincount(idx)
    mean = np.bincount(idx, y) / np.maximum(cnt, 1)
    return float(np.sum(cnt * (mean - y.mean()) ** 2) / y.size / vy)


def jensen_shannon(a, b, bins=50, range=None):
    """Jensen–Shannon divergence between the distributions of samples ``a`` and ``b`` ([SOFT] §3.3.1):
    JSD = (D(P‖M) + D(Q‖M))/2, M = (P + Q)/2, from histograms on common edges (``bins`` over
    ``range``, default the joint min..max), natural log: 0 for equal, ln 2 for disjoint supports."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples must be non-empty")
    if range is None:
        range = (min(a.min(), b.min()), max(a.max(), b.max()))
        if range[0] == range[1]:
            return 0.0
    P, edges = np.histogram(a, bins, range)
    Q, _ = np.histogram(b, edges)
    P = P / P.sum()
    Q = Q / Q.sum()
    M = 0.5 * (P + Q)

    def kl(p):
        m = p > 0
        return float(np.sum(p[m] * np.log(p[m] / M[m])))

    return 0.5 * (kl(P) + kl(Q))
