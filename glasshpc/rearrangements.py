"""Rearrangement indicators and training sets of the softness method ([SOFT], SCIENCE.md §2, §5).

Reduced LJ units of species A (lengths σ_AA, times τ). Every function takes trajectories as
``frames`` of shape (F, N, 3): *unwrapped* positions at the equally spaced times
t_k = k · frame_interval (τ), k = 0 … F − 1 ([SOFT] uses frame_interval = 1 τ).

p_hop ([SOFT] Eq. in §2.2.2; SCIENCE.md §2)::

    p_hop(i, t) = sqrt( ⟨(r_i − ⟨r_i⟩_B)²⟩_A · ⟨(r_i − ⟨r_i⟩_A)²⟩_B ),  A = [t − 5, t], B = [t, t + 5]

with both windows closed (the frame at t belongs to both), so p_hop is in σ² and is defined for
half_window ≤ t ≤ t_last − half_window; other frames hold NaN. A particle rearranges at t when
p_hop > p_c (default 0.2 σ²).

Cumulative squared displacement ([SOFT] Appendix A.0.2; SCIENCE.md §2)::

    CSD(i, t) = (1/10) Σ_{t'=t−9}^{t} |r_i(t') − r_i(t' − 1)|²

over ``n_steps`` = 10 consecutive 1 τ steps, defined for t ≥ 10 τ; threshold 0.0966 σ².

Which threshold goes with which indicator (SCIENCE.md §2): ``P_C = 0.2`` for p_hop, ``CSD_C = 0.0966`` for the
CSD, ``P_L = 0.0085`` is the "quiet" threshold of non-rearranging training examples ([SOFT] §2.2.3).

Hot loops (window averages over N × F) are numba kernels.
"""
import math

import numpy as np
from numba import njit

P_C = 0.2        # p_hop rearrangement threshold (σ²) [SOFT] §2.2.3
P_L = 0.0085     # p_hop upper bound of "non-rearranging" for ≥ 120 τ (σ²) [SOFT] §2.2.3
CSD_C = 0.0966   # CSD rearrangement threshold (σ²) [SOFT] App. A.0.2


def _check_frames(frames):
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"frames must have shape (F, N, 3), got {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"frames has a non-finite entry at frame {bad[0]}, particle {bad[1]}")
    return np.ascontiguousarray(x)


def _frames_per(duration, frame_interval, what):
    if not frame_interval > 0:
        raise ValueError(f"frame_interval must be positive, got {frame_interval}")
    k = duration / frame_interval
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise ValueError(f"{what} = {duration} τ must be a positive whole number of frame intervals "
                         f"({frame_interval} τ)")
    return int(round(k))


@njit(cache=True)
def _p_hop_kernel(x, w, out):
    # direct window sums (no running sums: they lose precision on long unwrapped trajectories)
    F, N = x.shape[0], x.shape[1]
    inv = 1.0 / (w + 1)
    for i in range(N):
        for t in range(w, F - w):
            ax = ay = az = 0.0
            bx = by = bz = 0.0
            for k in range(t - w, t + 1):
                ax += x[k, i, 0]
                ay += x[k, i, 1]
                az += x[k, i, 2]
            for k in range(t, t + w + 1):
                bx += x[k, i, 0]
                by += x[k, i, 1]
                bz += x[k, i, 2]
            ax *= inv
            ay *= inv
            az *= inv
            bx *= inv
            by *= inv
            bz *= inv
            sa = 0.0   # ⟨(r − ⟨r⟩_B)²⟩_A
            for k in range(t - w, t + 1):
                u, v, q = x[k, i, 0] - bx, x[k, i, 1] - by, x[k, i, 2] - bz
                sa += u * u + v * v + q * q
            sb = 0.0   # ⟨(r − ⟨r⟩_A)²⟩_B
            for k in range(t, t + w + 1):
                u, v, q = x[k, i, 0] - ax, x[k, i, 1] - ay, x[k, i, 2] - az
                sb += u * u + v * v + q * q
            out[t, i] = math.sqrt(sa * inv * sb * inv)


def p_hop(frames, frame_interval=1.0, half_window=5.0):
    """p_hop(i, t) of every particle at every frame ([SOFT] §2.2.2, SCIENCE.md §2).

    frames : (F, N, 3) float, unwrapped positions (σ) every ``frame_interval`` τ
    half_window : length of each of the windows A = [t − w, t] and B = [t, t + w] (τ), a whole
        number of frame intervals.
    Returns (F, N) float64 in σ²; NaN for the first and last half_window/frame_interval frames,
    where a window would leave the trajectory. Raises ValueError for bad shapes or non-finite
    positions.
    """
    x = _check_frames(frames)
    w = _frames_per(half_window, frame_interval, "half_window")
    out = np.full(x.shape[:2], np.nan)
    if x.shape[0] > 2 * w:
        _p_hop_kernel(x, w, out)
    return out


@njit(cache=True)
def _csd_kernel(x, m, out):
    F, N = x.shape[0], x.shape[1]
    for i in range(N):
        for t in range(m, F):
            s = 0.0
            for k in range(t - m + 1, t + 1):
                for d in range(3):
                    u = x[k, i, d] - x[k - 1, i, d]
                    s += u * u
            out[t, i] = s / m


def csd(frames, n_steps=10):
    """Cumulative squared displacement ([SOFT] App. A.0.2): mean of |r_i(t') − r_i(t'−1)|² over
    the ``n_steps`` frame steps ending at t.

    frames : (F, N, 3) float unwrapped positions, one frame per step (1 τ in [SOFT]).
    Returns (F, N) float64 in σ²; NaN for t < n_steps frames.
    """
    x = _check_frames(frames)
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    out = np.full(x.shape[:2], np.nan)
    _csd_kernel(x, int(n_steps), out)
    return out


def rearranging(indicator, threshold=P_C):
    """(F, N) bool: indicator > threshold (NaN frames count as not rearranging)."""
    ind = np.asarray(indicator, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ind > threshold


def rearranged_within(indicator, start, stop, threshold=P_C):
    """(N,) bool: particle rearranged (indicator > threshold) at some frame k with start ≤ k ≤ stop.

    This is the "rearranged by 25 τ" of p_r ([SOFT] §3) with start = first defined frame, and the
    "rearranges in the 2 τ window" of P_R ([SOFT] §2.3) with (start, stop) = (t0 + 1, t0 + 2) frames.
    Raises ValueError when the frames are outside the trajectory or hold NaN for some particle
    (the indicator must be defined on the whole window)."""
    ind = np.asarray(indicator, dtype=np.float64)
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop < ind.shape[0]:
        raise ValueError(f"window frames [{start}, {stop}] outside 0..{ind.shape[0] - 1}")
    part = ind[start:stop + 1]
    if np.isnan(part).any():
        k = start + int(np.argwhere(np.isnan(part))[0, 0])
        raise ValueError(f"indicator undefined (NaN) at frame {k} inside the window [{start}, {stop}]")
    return (part > threshold).any(axis=0)


def rearrangement_probability(rearranged):
    """Isoconfigurational rearrangement probability p_r(i) ([SOFT] §3, SCIENCE.md §2).

    rearranged : (R, N) bool, replica r → particle i rearranged by the read-out time.
    Returns (N,) float64, the fraction of the R replicas in which i rearranged."""
    r = np.asarray(rearranged, dtype=bool)
    if r.ndim != 2 or r.shape[0] < 1:
        raise ValueError(f"rearranged must have shape (R ≥ 1, N), got {r.shape}")
    return r.mean(axis=0)


def logit_rearrangement_probability(counts, replicas):
    """logit p_r = ln(p/(1 − p)) from ``counts`` (N,) of R = ``replicas`` replicas, regularised as
    p = (k + 1/2)/(R + 1) so that particles that never (or always) rearranged stay finite
    (the Jeffreys/Krichevsky–Trofimov estimate; plain k/R would give ±∞)."""
    k = np.asarray(counts, dtype=np.float64)
    if np.any(k < 0) or np.any(k > replicas):
        raise ValueError(f"counts must lie in [0, {replicas}]")
    p = (k + 0.5) / (replicas + 1.0)
    return np.log(p / (1.0 - p))


# -- training sets ([SOFT] §2.2.3) ---------------------------------------------------------------

@njit(cache=True)
def _quiet_runs(p, p_l, min_len, out_frame, out_particle):
    """Maximal runs of consecutive defined frames with p < p_l lasting ≥ min_len frame steps;
    writes the middle frame and particle of each run, returns the count."""
    F, N = p.shape
    n = 0
    for i in range(N):
        start = -1
        for t in range(F + 1):
            ok = False
            if t < F:
                v = p[t, i]
                ok = (v == v) and v < p_l
            if ok:
                if start < 0:
                    start = t
            elif start >= 0:
                last = t - 1
                if last - start >= min_len:
                    out_frame[n] = (start + last) // 2
                    out_particle[n] = i
                    n += 1
                start = -1
    return n


def rearranging_candidates(p, p_c=P_C, lag=2.0, frame_interval=1.0):
    """All (structure frame, particle) pairs of rearranging examples: p_hop(i, t) > p_c, structure
    taken at t − lag ([SOFT] §2.2.3: lag = 2 τ). Returns (frames (K,) int64, particles (K,) int64),
    sorted by (frame, particle); pairs whose structure frame would precede frame 0 are dropped."""
    p = np.asarray(p, dtype=np.float64)
    lag_f = _frames_per(lag, frame_interval, "lag") if lag else 0
    with np.errstate(invalid="ignore"):
        t, i = np.nonzero(p > p_c)
    keep = t - lag_f >= 0
    return (t[keep] - lag_f).astype(np.int64), i[keep].astype(np.int64)


def quiet_candidates(p, p_l=P_L, quiet_time=120.0, frame_interval=1.0):
    """Non-rearranging examples ([SOFT] §2.2.3): each maximal run of consecutive frames in which
    p_hop(i, t) < p_l lasting ≥ ``quiet_time`` τ gives one example, its structure taken at the
    middle frame of the run. Returns (frames (K,) int64, particles (K,) int64), sorted by particle
    then frame."""
    p = np.ascontiguousarray(np.asarray(p, dtype=np.float64))
    m = _frames_per(quiet_time, frame_interval, "quiet_time")
    cap = p.shape[1] * (p.shape[0] // (m + 1) + 1)
    fr = np.empty(cap, np.int64)
    pa = np.empty(cap, np.int64)
    n = _quiet_runs(p, float(p_l), m, fr, pa)
    return fr[:n].copy(), pa[:n].copy()


def tail_candidates(p, fraction, lag=2.0, frame_interval=1.0, thresholds=None):
    """"Fluidity" training examples ([SOFT] §2.2.3, above the onset): the extreme ``fraction`` of
    the defined p_hop values at each tail (0.033 % = 3.3e-4 in [SOFT]), structure at t − lag.

    thresholds : optional (p_l, p_u) to use instead of this trajectory's quantiles (e.g. pooled
    over all trajectories of a state point, so every trajectory applies the same cut).
    Returns (low_frames, low_particles, high_frames, high_particles, (p_l, p_u))."""
    p = np.asarray(p, dtype=np.float64)
    if not 0 < fraction < 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5), got {fraction}")
    if thresholds is None:
        vals = p[np.isfinite(p)]
        if vals.size == 0:
            raise ValueError("p_hop has no defined values (trajectory shorter than its windows)")
        p_lo, p_hi = np.quantile(vals, [fraction, 1.0 - fraction])
    else:
        p_lo, p_hi = thresholds
    lag_f = _frames_per(lag, frame_interval, "lag") if lag else 0
    with np.errstate(invalid="ignore"):
        tl, il = np.nonzero(p < p_lo)
        th, ih = np.nonzero(p > p_hi)
    kl, kh = tl - lag_f >= 0, th - lag_f >= 0
    return ((tl[kl] - lag_f).astype(np.int64), il[kl].astype(np.int64),
            (th[kh] - lag_f).astype(np.int64), ih[kh].astype(np.int64), (float(p_lo), float(p_hi)))


def balanced_sample(positive, negative, n_each, rng):
    """Balanced training set: up to ``n_each`` examples drawn without replacement from each class,
    the same number from both (the smaller of n_each and the rarer class's count).

    positive, negative : tuples of equally long 1-D arrays (e.g. (frames, particles)).
    rng : numpy Generator (derive it from the task identity, never the rank).
    Returns (pos_subset, neg_subset): tuples of arrays, each sorted by the original order."""
    npos, nneg = len(positive[0]), len(negative[0])
    n = int(min(n_each, npos, nneg))
    a = np.sort(rng.choice(npos, size=n, replace=False)) if n else np.empty(0, np.int64)
    b = np.sort(rng.choice(nneg, size=n, replace=False)) if n else np.empty(0, np.int64)
    return tuple(np.asarray(x)[a] for x in positive), tuple(np.asarray(x)[b] for x in negative)
