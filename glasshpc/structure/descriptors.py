"""Per-particle structural descriptors: radial, angular (bond-order) and generation averages.

Reduced LJ units throughout (lengths in sigma_AA). Definitions follow SCIENCE.md §4:

Radial (Eq. 5 of [CAGE], Eq. 1 of [AVG])::

    G_i(r, δ, s) = Σ_{j≠i, s_j=s} exp(−(r_ij − r)² / (2δ²))

Angular (Eq. 6–7 of [CAGE], Eq. 2–3 of [AVG]), all species together::

    q_i(l, m, r, δ) = (1/Z_i) Σ_{j≠i} w_ij Y_l^m(r̂_ij),   w_ij = exp(−(r_ij − r)² / (2δ²)),  Z_i = Σ_{j≠i} w_ij
    q_i(l, r, δ)    = sqrt( 4π/(2l+1) Σ_{m=−l..l} |q_i(l, m, r, δ)|² )           (0 when Z_i = 0)

Generations (Eq. 9 of [CAGE], Eq. 4 of [AVG]), the sum including j = i with weight e⁰ = 1::

    x_i^(n) = Σ_{j: r_ij<r_c} e^{−r_ij/r_c} x_j^(n−1) / Σ_{j: r_ij<r_c} e^{−r_ij/r_c}

**Truncation.** Every Gaussian shell is truncated: a pair contributes to shell (r, δ) only if
``|r_ij − r| <= truncation * δ`` (default 7, i.e. terms below exp(−24.5) ≈ 2.3e-11 are dropped). The neighbour
cutoff is therefore ``max over shells of r + truncation * δ`` (:meth:`DescriptorSpec.cutoff`), and pairs enter the
neighbour list when ``r_ij < cutoff``. The same truncation applies to Z_i.

**Layout of the feature vector** (see :meth:`DescriptorSpec.feature_names`)::

    [gen0 | gen1 | … | gen n_max],  each block = [radial (species-major: s*n_rad + k) | angular (shell-major: a*n_l + l_index)]

Hot loops are numba ``@njit(cache=True)``:

- radial: each pair once (i < j, added to both rows). :func:`compute_descriptors` walks the cell list directly in cell
  order (no long neighbour list stored); :func:`radial_descriptors` does the same from a :class:`NeighborList`.
  Shells of equal δ and uniform spacing Δ (a "run") use the recurrence w_{k+1} = w_k g_k, g_{k+1} = g_k e^{−Δ²/δ²}:
  two exps per pair and run instead of one per shell.
- angular: Y_l^m by the normalised associated-Legendre recursion for m ≥ 0 only (|Y_l^{−m}| = |Y_l^m|), evaluated for
  16 neighbours side by side (independent recursions -> SIMD); Σ_j w_j Y_lm(r̂_ij) accumulated only on the shells
  whose truncation window holds r_ij.
- generations: sparse row averages on the short neighbour list.

Cost (bench/bench_descriptors.py, KA liquid N = 4096, ρ = 1.2, ``preset("ka_avg")``: 1176 features, cutoff 5.7):
≈ 0.44 s CPU per configuration on one core (neighbour search included), ~100x the vectorised numpy/scipy reference
of bench/ (50 s). hs_cmp 0.38 s, softness_135 0.34 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .neighbors import NeighborList, _cell_sort, _stencil_cells, check_cutoff, minimum_image

__all__ = [
    "DescriptorSpec",
    "compute_descriptors",
    "radial_descriptors",
    "angular_descriptors",
    "generation_average",
    "radial_distribution",
    "second_minimum_gAA",
    "preset",
    "PRESETS",
    "feature_names",
    "spec_from_config",
]


# ---------------------------------------------------------------------------------------------------------------------
# Specification
# ---------------------------------------------------------------------------------------------------------------------

def _fmt_num(x, dec_min=2, dec_max=6):
    """Fixed point with >= dec_min decimals and as many more (<= dec_max) as x needs: 1.10, 0.025, 0.025333."""
    for dec in range(dec_min, dec_max + 1):
        if abs(round(x, dec) - x) <= 1e-9 * max(1.0, abs(x)):
            return f"{x:.{dec}f}"
    return f"{x:.{dec_max}f}"


def _fmt_shells(r, d):
    """'r=1.10,δ=0.05' per shell: each number with the decimals it needs (so δ = 0.025 is not shown as 0.03);
    more decimals if two distinct shells would still print alike."""
    names = [f"r={_fmt_num(a)},δ={_fmt_num(b)}" for a, b in zip(r, d)]
    if len(set(names)) == len(names):
        return names
    for dec in range(7, 13):
        names = [f"r={a:.{dec}f},δ={b:.{dec}f}" for a, b in zip(r, d)]
        if len(set(names)) == len(names):
            return names
    return [f"r={a!r},δ={b!r}" for a, b in zip(r, d)]


@dataclass(frozen=True)
class DescriptorSpec:
    """Descriptor grid (hyper-parameters of SCIENCE.md §4). Immutable; arrays are stored as read-only float64.

    Parameters
    ----------
    radial_r : (n_rad,) float64 — radial shell centres r (σ_AA), r >= 0
    radial_delta : (n_rad,) float64 — radial shell widths δ > 0
    angular_r : (n_ang,) float64 — angular shell centres
    angular_delta : (n_ang,) float64 — angular shell widths δ > 0
    angular_l : tuple of int — spherical-harmonic degrees l >= 0 (e.g. (1, …, 12))
    n_species : int >= 1 — radial features are computed for each species s = 0..n_species−1
    generations : int >= 0 — n_max of the generation averages (0 = only the bare descriptors)
    r_generation : float > 0 — r_c of the generation averages (≈ second minimum of g_AA, see
        :func:`second_minimum_gAA`)
    truncation : float > 0 — Gaussians are cut at |r_ij − r| > truncation·δ
    angular_kind : "gaussian" (default; weights exp(−(r_ij − r)²/(2δ²)), [AVG] Eq. 2) or "sharp" (every neighbour
        with angular_r < r_ij < angular_r + angular_delta has weight 1, all others 0: the Q_l(i; r_min, r_max) of
        [SOFT] Eq. 3.2–3.3, with angular_r = r_min and angular_delta = r_max − r_min)

    Raises ValueError for mismatched shapes, non-positive widths, negative centres or degrees, duplicate shells, an
    unknown angular_kind.
    """

    radial_r: np.ndarray
    radial_delta: np.ndarray
    angular_r: np.ndarray
    angular_delta: np.ndarray
    angular_l: tuple
    n_species: int
    generations: int = 2
    r_generation: float = 2.1
    truncation: float = 7.0
    angular_kind: str = "gaussian"

    def __post_init__(self):
        for name in ("radial_r", "radial_delta", "angular_r", "angular_delta"):
            if np.ndim(getattr(self, name)) > 1:
                raise ValueError(f"DescriptorSpec.{name} must be one-dimensional")
            a = np.array(getattr(self, name), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"DescriptorSpec.{name} must be finite")
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        if self.radial_r.shape != self.radial_delta.shape:
            raise ValueError(f"radial_r {self.radial_r.shape} and radial_delta {self.radial_delta.shape} differ")
        if self.angular_r.shape != self.angular_delta.shape:
            raise ValueError(f"angular_r {self.angular_r.shape} and angular_delta {self.angular_delta.shape} differ")
        if np.any(self.radial_delta <= 0) or np.any(self.angular_delta <= 0):
            raise ValueError("shell widths δ must be positive")
        if np.any(self.radial_r < 0) or np.any(self.angular_r < 0):
            raise ValueError("shell centres r must be non-negative")
        ls = tuple(int(l) for l in np.atleast_1d(self.angular_l))
        if any(l != float(l0) for l, l0 in zip(ls, np.atleast_1d(self.angular_l))) or any(l < 0 for l in ls):
            raise ValueError(f"angular_l must be non-negative integers, got {self.angular_l}")
        if len(set(ls)) != len(ls):
            raise ValueError(f"angular_l has duplicates: {ls}")
        if self.angular_r.size and not ls:
            raise ValueError("angular shells given but angular_l is empty")
        object.__setattr__(self, "angular_l", ls)
        if int(self.n_species) != self.n_species or self.n_species < 1:
            raise ValueError(f"n_species must be a positive integer, got {self.n_species}")
        object.__setattr__(self, "n_species", int(self.n_species))
        if int(self.generations) != self.generations or self.generations < 0:
            raise ValueError(f"generations must be a non-negative integer, got {self.generations}")
        object.__setattr__(self, "generations", int(self.generations))
        if not (np.isfinite(self.r_generation) and self.r_generation > 0):
            raise ValueError(f"r_generation must be positive, got {self.r_generation}")
        object.__setattr__(self, "r_generation", float(self.r_generation))
        if not (np.isfinite(self.truncation) and self.truncation > 0):
            raise ValueError(f"truncation must be positive, got {self.truncation}")
        object.__setattr__(self, "truncation", float(self.truncation))
        if self.angular_kind not in ANGULAR_KINDS:
            raise ValueError(f"angular_kind must be one of {ANGULAR_KINDS}, got {self.angular_kind!r}")
        for kind, r, d in (("radial", self.radial_r, self.radial_delta), ("angular", self.angular_r,
                                                                          self.angular_delta)):
            pairs = set(zip(r.tolist(), d.tolist()))
            if len(pairs) != r.size:
                raise ValueError(f"duplicate {kind} shells (same r and δ)")
        if self.n_base_features == 0:
            raise ValueError("DescriptorSpec has no shells")

    # arrays make the generated __eq__/__hash__ unusable; compare by value instead
    def _key(self):
        return (self.radial_r.tobytes(), self.radial_delta.tobytes(), self.angular_r.tobytes(),
                self.angular_delta.tobytes(), self.angular_l, self.n_species, self.generations, self.r_generation,
                self.truncation, self.angular_kind)

    def __eq__(self, other):
        if not isinstance(other, DescriptorSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    @property
    def n_radial(self) -> int:
        """Number of radial features per generation, n_species * n_rad."""
        return self.n_species * self.radial_r.size

    @property
    def n_angular(self) -> int:
        """Number of angular features per generation, n_ang * len(angular_l)."""
        return self.angular_r.size * len(self.angular_l)

    @property
    def n_base_features(self) -> int:
        """Features per generation (radial + angular)."""
        return self.n_radial + self.n_angular

    @property
    def n_features(self) -> int:
        """Total number of features, n_base_features * (generations + 1)."""
        return self.n_base_features * (self.generations + 1)

    def radial_cutoff(self) -> float:
        """max(r + truncation·δ) over radial shells (0 if none)."""
        return float(np.max(self.radial_r + self.truncation * self.radial_delta)) if self.radial_r.size else 0.0

    def angular_cutoff(self) -> float:
        """max(r + truncation·δ) over angular shells (sharp shells: max(r_min + width)); 0 if none."""
        if not self.angular_r.size:
            return 0.0
        reach = 1.0 if self.angular_kind == "sharp" else self.truncation
        return float(np.max(self.angular_r + reach * self.angular_delta))

    def cutoff(self) -> float:
        """Neighbour cutoff of the radial and angular kernels: max over all shells of r + truncation·δ (σ_AA).

        Must be below half the shortest box edge (minimum image). The generation averages use their own cutoff
        ``r_generation``.
        """
        return max(self.radial_cutoff(), self.angular_cutoff())

    def feature_names(self, species_names=("A", "B")) -> list:
        """Names of the n_features columns, in output order, e.g. 'G_A(r=1.10,δ=0.05)', 'q_6(r=1.40,δ=0.10)',
        'gen1:G_A(r=1.10,δ=0.05)'. Generation-0 names carry no prefix. Sharp angular shells ([SOFT]) are named
        'Q_6(1.00<r<1.50)'.

        Raises ValueError if fewer species names than n_species are given.
        """
        if len(species_names) < self.n_species:
            raise ValueError(f"need {self.n_species} species names, got {species_names}")
        rad = _fmt_shells(self.radial_r, self.radial_delta)
        base = [f"G_{species_names[s]}({sh})" for s in range(self.n_species) for sh in rad]
        if self.angular_kind == "sharp":
            lo, hi = self.angular_r, self.angular_r + self.angular_delta
            ang = [nm.replace("r=", "").replace(",δ=", "<r<")
                   for nm in _fmt_shells(lo, hi)]
            base += [f"Q_{l}({sh})" for sh in ang for l in self.angular_l]
        else:
            ang = _fmt_shells(self.angular_r, self.angular_delta)
            base += [f"q_{l}({sh})" for sh in ang for l in self.angular_l]
        out = list(base)
        for g in range(1, self.generations + 1):
            out += [f"gen{g}:{b}" for b in base]
        return out


ANGULAR_KINDS = ("gaussian", "sharp")

PRESETS = ("hs_cmp", "ka_avg", "melt_dw", "softness_135")

# per-preset defaults: (n_species, generations, r_generation)
_PRESET_DEFAULTS = {
    "hs_cmp": (2, 2, 2.1),        # [CMP]: r_c = 2.1 σ_L, n ≤ 2 (1062 features)
    "ka_avg": (2, 2, 2.1),        # [AVG]: r_c ≈ second minimum of g_AA (pass the measured one), n ≤ 2
    "melt_dw": (1, 2, 2.5),       # [DW]: one monomer species, r_c = 2.5, n ≤ 2 (876 features)
    "softness_135": (2, 0, 2.1),  # [SOFT] §3.2.3: M = 135 without generations (M = 405 with n ≤ 2, §3.4)
}


def _dw_shells():
    """[DW] §2.2.1 (and [AVG], whose set it reuses): radial 60 shells δ = 0.025 on [0.5, 2], 20 δ = 0.05 on (2, 3],
    20 δ = 0.1 on (3, 5]; angular 16 shells δ = 0.1 on [0.5, 2.5]."""
    rr = np.concatenate([np.linspace(0.5, 2.0, 60), np.linspace(2.0, 3.0, 21)[1:], np.linspace(3.0, 5.0, 21)[1:]])
    dd = np.concatenate([np.full(60, 0.025), np.full(20, 0.05), np.full(20, 0.1)])
    return rr, dd, np.linspace(0.5, 2.5, 16), np.full(16, 0.1)


def preset(name: str, n_species: int = None, generations: int = None, r_generation: float = None,
           truncation: float = 7.0) -> DescriptorSpec:
    """Descriptor grids of the papers (SCIENCE.md §4). Lengths in σ_AA (σ_L for hard spheres).

    - ``"hs_cmp"`` [CMP] Sec. II.B: radial 46 r in [0.86, 2.0], 20 in (2.0, 3.0], 15 in (3.0, 4.5] per species
      (81 per species, 162 for the binary mixture); δ = the local spacing (1.14/45, 0.05, 0.1; the paper gives the
      intervals only); angular l = 1..12 on 16 r in [1, 2.5], δ = 0.1 (192). 354 per generation, 1062 for n ≤ 2.
    - ``"ka_avg"`` [AVG] (200 radial + 192 angular per generation; the shells are those of [DW] §2.2.1, which
      states it uses the set of [AVG]) for two species: 392 per generation, 1176 for n ≤ 2. Neighbour cutoff 5.7
      (boxes below 11.4 σ, N ≲ 1800 at ρ = 1.2, are replicated by :func:`compute_descriptors`).
    - ``"melt_dw"`` [DW] §2.2.1 for the one-species bead-spring melt: 100 radial + 192 angular = 292 per
      generation, 876 for n ≤ 2 with r_c = 2.5.
    - ``"softness_135"`` [SOFT] §3.2.3, Eq. 3.1–3.3: radial δ = 0.2 at r = 0, 0.1, …, 4.9 per species (100);
      angular Q_l on sharp shells r_min < r_ij < r_min + 0.5, r_min ∈ {1.0, 1.5, 2.0, 2.5, 3.0}, l ∈ {2, 4, …, 14}
      (35): M = 135. Neighbour cutoff 6.3 (box replicated below 12.6 σ, N ≲ 2400 at ρ = 1.2).

    ``n_species``, ``generations``, ``r_generation`` default to the paper's values (table above); pass the model's
    species count and the measured second minimum of g_AA (:func:`second_minimum_gAA`) when they differ.

    Raises ValueError for an unknown name.
    """
    if name not in _PRESET_DEFAULTS:
        raise ValueError(f"unknown descriptor preset {name!r}; known: {', '.join(repr(p) for p in PRESETS)}")
    d_ns, d_gen, d_rg = _PRESET_DEFAULTS[name]
    n_species = d_ns if n_species is None else n_species
    generations = d_gen if generations is None else generations
    r_generation = d_rg if r_generation is None else r_generation
    kind = "gaussian"
    ls = tuple(range(1, 13))
    if name == "hs_cmp":
        r1 = np.linspace(0.86, 2.0, 46)
        r2 = np.linspace(2.0, 3.0, 21)[1:]
        r3 = np.linspace(3.0, 4.5, 16)[1:]
        rr = np.concatenate([r1, r2, r3])
        dd = np.concatenate([np.full(46, r1[1] - r1[0]), np.full(20, 0.05), np.full(15, 0.1)])
        ar = np.linspace(1.0, 2.5, 16)
        ad = np.full(16, 0.1)
    elif name in ("melt_dw", "ka_avg"):
        rr, dd, ar, ad = _dw_shells()
    else:  # softness_135
        rr = np.round(np.arange(50) * 0.1, 10)
        dd = np.full(50, 0.2)
        ar = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
        ad = np.full(5, 0.5)
        ls = tuple(range(2, 15, 2))
        kind = "sharp"
    return DescriptorSpec(rr, dd, ar, ad, ls, n_species, generations, r_generation, truncation, kind)


def feature_names(spec, species_names=("A", "B")) -> list:
    """Human-readable names of the ``spec.n_features`` columns of :func:`compute_descriptors`, in column order:
    'G_A(r=1.10,δ=0.05)', 'q_6(r=1.40,δ=0.10)', 'Q_4(1.00<r<1.50)' (sharp shells), 'gen2:G_B(…)'.

    Raises ValueError if fewer species names than spec.n_species are given.
    """
    return spec.feature_names(species_names)


def spec_from_config(dcfg, n_species, r_generation) -> DescriptorSpec:
    """DescriptorSpec of a ``descriptors:`` YAML section (glasshpc.config.DescriptorsConfig).

    With ``preset`` set: :func:`preset` (name, n_species, dcfg.generations, r_generation, dcfg.truncation);
    otherwise the explicit shell blocks ``radial``/``angular`` ({r_min, r_max, count, delta}, linspace) and ``l``.

    Parameters
    ----------
    dcfg : DescriptorsConfig; n_species : int, the model's species count; r_generation : float, r_c of the
        generation averages (σ_AA), already resolved from 'auto'.

    Raises ValueError (from DescriptorSpec) for an inconsistent grid.
    """
    name = getattr(dcfg, "preset", None)
    if name:
        return preset(name, n_species=n_species, generations=dcfg.generations, r_generation=float(r_generation),
                      truncation=dcfg.truncation)

    def shells(blocks):
        r = np.concatenate([np.linspace(b.r_min, b.r_max, b.count) for b in blocks])
        return r, np.concatenate([np.full(b.count, b.delta) for b in blocks])

    rr, rd = shells(dcfg.radial)
    ar, ad = shells(dcfg.angular)
    return DescriptorSpec(radial_r=rr, radial_delta=rd, angular_r=ar, angular_delta=ad, angular_l=tuple(dcfg.l),
                          n_species=int(n_species), generations=dcfg.generations, r_generation=float(r_generation),
                          truncation=dcfg.truncation)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------

def _shell_runs(r, delta, tol=1e-13):
    """Split the shells (in spec order) into runs of equal δ and uniform spacing Δ > 0.

    Returns start (R+1,) int64 (run q holds shells start[q]:start[q+1]) and spacing (R,) float64 (0 for a single
    shell). Within a run the Gaussians obey w_{k+1} = w_k g_k, g_{k+1} = g_k e^{−Δ²/δ²}: two exps per pair and run.
    """
    starts = [0]
    spacing = []
    k = 0
    n = r.size
    while k < n:
        e = k + 1
        if e < n and delta[e] == delta[k] and r[e] > r[k]:
            dr = r[e] - r[k]
            while e < n and delta[e] == delta[k] and abs(r[e] - (r[k] + (e - k) * dr)) <= tol * max(1.0, abs(r[e])):
                e += 1
        spacing.append((r[k + 1] - r[k]) if e > k + 1 else 0.0)
        starts.append(e)
        k = e
    return np.asarray(starts, np.int64), np.asarray(spacing, np.float64)


def _run_table(r, delta, truncation, cutoff, starts):
    """Lookup table distance bin -> candidate runs whose window [r_first − tδ, r_last + tδ] overlaps the bin."""
    lo = r[starts[:-1]] - truncation * delta[starts[:-1]]
    hi = r[starts[1:] - 1] + truncation * delta[starts[:-1]]
    h = max(min(2.0 * truncation * delta.min() / 4.0, cutoff / 16.0), cutoff / 200000.0)
    nbins = int(np.ceil(cutoff / h)) + 1
    b0 = np.clip(np.floor(lo / h).astype(np.int64), 0, nbins - 1)
    b1 = np.clip(np.floor(hi / h).astype(np.int64), 0, nbins - 1)
    counts = np.zeros(nbins + 1, np.int64)
    for q in range(lo.size):
        counts[b0[q] + 1:b1[q] + 2] += 1
    tstart = np.cumsum(counts)
    idx = np.empty(tstart[-1], np.int64)
    fill = tstart[:-1].copy()
    for q in range(lo.size):
        for bb in range(b0[q], b1[q] + 1):
            idx[fill[bb]] = q
            fill[bb] += 1
    return 1.0 / h, tstart, idx


@njit(cache=True)
def _run_factors(delta, run_start, run_dr):
    """e^{−Δ²/δ²} of every run."""
    n_runs = run_dr.shape[0]
    run_c = np.empty(n_runs)
    for q in range(n_runs):
        dd = delta[run_start[q]]
        run_c[q] = np.exp(-run_dr[q] * run_dr[q] / (dd * dd))
    return run_c


@njit(cache=True)
def _radial_batch(m, pi, pj, pd, out, toff, r, delta, truncation, run_start, run_dr, run_c, inv_h, tstart, idx):
    """For the m pairs (pi[k], pj[k]) at distance pd[k]: add w(d) of every shell within its truncation window to
    out[i, toff[j] + s] and out[j, toff[i] + s] (toff = species offset s_j * n_rad)."""
    nbins = tstart.shape[0] - 1
    for k in range(m):
        i = pi[k]
        j = pj[k]
        d = pd[k]
        ti = toff[i]
        tj = toff[j]
        bb = int(d * inv_h)
        if bb >= nbins:
            bb = nbins - 1
        for p in range(tstart[bb], tstart[bb + 1]):
            q = idx[p]
            s0 = run_start[q]
            s1 = run_start[q + 1]
            dl = delta[s0]
            tw = truncation * dl
            inv2d2 = 0.5 / (dl * dl)
            dr = run_dr[q]
            if s1 - s0 > 1:  # first/last shell of the window, then fix rounding at the edges
                a = s0 + min(s1 - s0, max(0, int(np.ceil((d - tw - r[s0]) / dr))))
                e = s0 + max(-1, min(s1 - s0 - 1, int(np.floor((d + tw - r[s0]) / dr))))
                while a > s0 and abs(d - r[a - 1]) <= tw:
                    a -= 1
                while a <= e and abs(d - r[a]) > tw:
                    a += 1
                while e < s1 - 1 and abs(d - r[e + 1]) <= tw:
                    e += 1
                while e >= a and abs(d - r[e]) > tw:
                    e -= 1
            else:
                a = s0
                e = s0 if abs(d - r[s0]) <= tw else s0 - 1
            if e < a:
                continue
            u = d - r[a]
            w = np.exp(-u * u * inv2d2)
            if e > a:
                g = np.exp((2.0 * u * dr - dr * dr) * inv2d2)
                c = run_c[q]
                for s in range(a, e + 1):
                    out[i, tj + s] += w
                    out[j, ti + s] += w
                    w *= g
                    g *= c
            else:
                out[i, tj + a] += w
                out[j, ti + a] += w


@njit(cache=True)
def _radial_kernel(offsets, nbr, dist, types, n_species, r, delta, truncation, run_start, run_dr, inv_h, tstart,
                   idx):
    n = offsets.shape[0] - 1
    n_rad = r.shape[0]
    out = np.zeros((n, n_species * n_rad))
    run_c = _run_factors(delta, run_start, run_dr)
    toff = types * n_rad
    maxrow = 1
    for i in range(n):
        maxrow = max(maxrow, offsets[i + 1] - offsets[i])
    pi = np.empty(maxrow, np.int64)
    pj = np.empty(maxrow, np.int64)
    pd = np.empty(maxrow)
    for i in range(n):
        m = 0
        for k in range(offsets[i], offsets[i + 1]):
            j = nbr[k]
            if j > i:  # every pair once; contributes to both i and j (w is symmetric)
                pi[m] = i
                pj[m] = j
                pd[m] = dist[k]
                m += 1
        _radial_batch(m, pi, pj, pd, out, toff, r, delta, truncation, run_start, run_dr, run_c, inv_h, tstart, idx)
    return out


@njit(cache=True)
def _radial_direct(positions, box, cutoff, types, n_species, r, delta, truncation, run_start, run_dr, inv_h, tstart,
                   idx, n_keep):
    """Radial descriptors straight from the cell list: each pair once, in cell order (rows of nearby particles are
    nearby in memory), no neighbour list stored. Same result as _radial_kernel. Only the rows of particles
    0..n_keep−1 are right: pairs of two particles ≥ n_keep are skipped (a replicated box's copies; the kept rows
    get the same additions in the same order, so the same bits)."""
    n = positions.shape[0]
    n_rad = r.shape[0]
    wrapped, nc, cx, start, order, xs, offs, lo, wrap = _cell_sort(positions, box, cutoff)
    run_c = _run_factors(delta, run_start, run_dr)
    ts = np.empty(n, np.int64)
    kept = np.empty(n, np.bool_)
    for p in range(n):
        ts[p] = types[order[p]] * n_rad
        kept[p] = order[p] < n_keep
    outs = np.zeros((n, n_species * n_rad))
    st = np.empty(offs.shape[0], np.int64)
    cap = 1024
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    pd = np.empty(cap)
    rc2 = cutoff * cutoff
    b0 = box[0]
    b1 = box[1]
    b2 = box[2]
    hb0 = 0.5 * b0
    hb1 = 0.5 * b1
    hb2 = 0.5 * b2
    for c0 in range(nc[0]):
        for c1 in range(nc[1]):
            for c2 in range(nc[2]):
                c = (c0 * nc[1] + c1) * nc[2] + c2
                if start[c] == start[c + 1]:
                    continue
                _stencil_cells(c0, c1, c2, nc, offs, lo, wrap, st)
                cand = 0
                for s in range(st.shape[0]):
                    cand += start[st[s] + 1] - start[st[s]]
                cand *= start[c + 1] - start[c]
                if cand > cap:
                    cap = max(2 * cap, cand)
                    pi = np.empty(cap, np.int64)
                    pj = np.empty(cap, np.int64)
                    pd = np.empty(cap)
                m = 0
                for p in range(start[c], start[c + 1]):
                    x0 = xs[p, 0]
                    y0 = xs[p, 1]
                    z0 = xs[p, 2]
                    kp = kept[p]
                    for s in range(st.shape[0]):
                        cc = st[s]
                        for q in range(max(start[cc], p + 1), start[cc + 1]):  # each pair once (q > p)
                            if not (kp or kept[q]):
                                continue
                            dx = xs[q, 0] - x0
                            dy = xs[q, 1] - y0
                            dz = xs[q, 2] - z0
                            dx = minimum_image(dx, b0, hb0)
                            dy = minimum_image(dy, b1, hb1)
                            dz = minimum_image(dz, b2, hb2)
                            r2 = dx * dx + dy * dy + dz * dz
                            if r2 < rc2:
                                pi[m] = p
                                pj[m] = q
                                pd[m] = np.sqrt(r2)
                                m += 1
                _radial_batch(m, pi, pj, pd, outs, ts, r, delta, truncation, run_start, run_dr, run_c, inv_h,
                              tstart, idx)
    out = np.empty_like(outs)
    for p in range(n):
        out[order[p]] = outs[p]
    return out


@njit(cache=True)
def _legendre_coefficients(lmax):
    """Coefficients of the normalised associated-Legendre recursion (see _ylm_row)."""
    a = np.zeros((lmax + 1, lmax + 1))
    b = np.zeros((lmax + 1, lmax + 1))
    for m in range(lmax + 1):
        for l in range(m + 2, lmax + 1):
            a[l, m] = np.sqrt((4.0 * l * l - 1.0) / (l * l - m * m))
            b[l, m] = np.sqrt(((l - 1.0) ** 2 - m * m) / (4.0 * (l - 1.0) ** 2 - 1.0))
    fmm = np.zeros(lmax + 1)
    fm1 = np.zeros(lmax + 1)
    fmm[0] = 0.28209479177387814  # 1/sqrt(4π)
    for m in range(lmax + 1):
        if m > 0:
            fmm[m] = -np.sqrt((2.0 * m + 1.0) / (2.0 * m))
        fm1[m] = np.sqrt(2.0 * m + 3.0)
    return a, b, fmm, fm1


_BLOCK = 16  # neighbours whose Y_lm are evaluated together (independent recursions -> SIMD, no latency stall)


@njit(cache=True)
def _ylm_block(x, y, z, nq, lmax, ls, a, b, fmm, fm1, P, C, S, Yb):
    """Y_l^m of the nq unit vectors (x[q], y[q], z[q]), m = 0..l, l in ls, Condon–Shortley phase (scipy convention).

    Y_l^m = P̂_l^m(z) (x + iy)^m with P̂ the polynomial part of the orthonormalised associated Legendre function:
    P̂_00 = 1/sqrt(4π); P̂_mm = −sqrt((2m+1)/(2m)) P̂_{m−1,m−1}; P̂_{m+1,m} = sqrt(2m+3) z P̂_mm;
    P̂_lm = a_lm (z P̂_{l−1,m} − b_lm P̂_{l−2,m}).
    Row q of Yb gets [Y_l0, Re Y_l1, Im Y_l1, …, Re Y_ll, Im Y_ll] (2l+1 reals; Im Y_l0 = 0 omitted) for each l in ls.
    P (lmax+1, lmax+1, B), C, S (lmax+1, B) are scratch; (C + iS)[m] = (x + iy)^m.
    """
    for q in range(nq):
        P[0, 0, q] = fmm[0]
        C[0, q] = 1.0
        S[0, q] = 0.0
    for m in range(lmax + 1):
        if m > 0:
            f = fmm[m]
            for q in range(nq):
                P[m, m, q] = f * P[m - 1, m - 1, q]
                C[m, q] = C[m - 1, q] * x[q] - S[m - 1, q] * y[q]
                S[m, q] = C[m - 1, q] * y[q] + S[m - 1, q] * x[q]
        if m + 1 <= lmax:
            f = fm1[m]
            for q in range(nq):
                P[m + 1, m, q] = f * z[q] * P[m, m, q]
        for l in range(m + 2, lmax + 1):
            al = a[l, m]
            bl = b[l, m]
            for q in range(nq):
                P[l, m, q] = al * (z[q] * P[l - 1, m, q] - bl * P[l - 2, m, q])
    col = 0
    for li in range(ls.shape[0]):
        l = ls[li]
        for q in range(nq):
            Yb[q, col] = P[l, 0, q]
        col += 1
        for m in range(1, l + 1):
            for q in range(nq):
                Yb[q, col] = P[l, m, q] * C[m, q]
                Yb[q, col + 1] = P[l, m, q] * S[m, q]
            col += 2


@njit(cache=True)
def _accumulate_block(nq, Wb, Yb, Q, Z):
    """Q[s] += Σ_q Wb[q, s] Yb[q], Z[s] += Σ_q Wb[q, s], skipping the shells outside each pair's window."""
    ncol = Yb.shape[1]
    for q in range(nq):
        for s in range(Wb.shape[1]):
            w = Wb[q, s]
            if w != 0.0:
                Z[s] += w
                for c in range(ncol):
                    Q[s, c] += w * Yb[q, c]


@njit(cache=True)
def _angular_kernel(offsets, dist, vec, r, delta, truncation, ls, cutoff, sharp):
    n = offsets.shape[0] - 1
    n_ang = r.shape[0]
    nl = ls.shape[0]
    lmax = 0
    ncol = 0
    for li in range(nl):
        lmax = max(lmax, ls[li])
        ncol += 2 * ls[li] + 1
    a, b, fmm, fm1 = _legendre_coefficients(lmax)
    B = _BLOCK
    P = np.zeros((lmax + 1, lmax + 1, B))
    C = np.zeros((lmax + 1, B))
    S = np.zeros((lmax + 1, B))
    x = np.empty(B)
    y = np.empty(B)
    z = np.empty(B)
    Yb = np.empty((B, ncol))
    Wb = np.empty((B, n_ang))
    inv2d2 = 1.0 / (2.0 * delta * delta)
    tdel = truncation * delta
    Q = np.empty((n_ang, ncol))
    Z = np.empty(n_ang)
    out = np.zeros((n, n_ang * nl))
    for i in range(n):
        Q[:, :] = 0.0
        Z[:] = 0.0
        nq = 0
        for k in range(offsets[i], offsets[i + 1] + 1):
            if k < offsets[i + 1]:
                d = dist[k]
                if d <= cutoff:
                    active = False
                    for s in range(n_ang):
                        u = d - r[s]
                        if sharp:  # [SOFT] Eq. 3.2: unit weight inside r_min < r_ij < r_min + width
                            if u > 0.0 and u < delta[s]:
                                Wb[nq, s] = 1.0
                                active = True
                            else:
                                Wb[nq, s] = 0.0
                        elif abs(u) <= tdel[s]:
                            Wb[nq, s] = np.exp(-u * u * inv2d2[s])
                            active = True
                        else:
                            Wb[nq, s] = 0.0
                    if active:
                        inv = 1.0 / d
                        x[nq] = vec[k, 0] * inv
                        y[nq] = vec[k, 1] * inv
                        z[nq] = vec[k, 2] * inv
                        nq += 1
            if nq == B or (k == offsets[i + 1] and nq > 0):  # block full, or end of row
                _ylm_block(x, y, z, nq, lmax, ls, a, b, fmm, fm1, P, C, S, Yb)
                _accumulate_block(nq, Wb, Yb, Q, Z)
                nq = 0
        for s in range(n_ang):
            if Z[s] == 0.0:
                continue
            col = 0
            for li in range(nl):
                l = ls[li]
                acc = 0.5 * Q[s, col] * Q[s, col]  # m = 0 counted once: Σ_m |q_lm|² = q_l0² + 2 Σ_{m>0} |q_lm|²
                for c in range(col + 1, col + 2 * l + 1):
                    acc += Q[s, c] * Q[s, c]
                col += 2 * l + 1
                out[i, s * nl + li] = np.sqrt(8.0 * np.pi / (2.0 * l + 1.0) * acc) / Z[s]
    return out


@njit(cache=True)
def _generation_weights(offsets, nbr, dist, r_c):
    """Compact CSR of the pairs with r_ij < r_c and weights e^{−r_ij/r_c}; norm_i = 1/(1 + Σ_j w_ij)."""
    n = offsets.shape[0] - 1
    off = np.zeros(n + 1, np.int64)
    m = 0
    for k in range(dist.shape[0]):
        if dist[k] < r_c:
            m += 1
    jj = np.empty(m, np.int64)
    ww = np.empty(m)
    norm = np.empty(n)
    inv_rc = 1.0 / r_c
    m = 0
    for i in range(n):
        z = 1.0
        for k in range(offsets[i], offsets[i + 1]):
            if dist[k] < r_c:
                w = np.exp(-dist[k] * inv_rc)
                jj[m] = nbr[k]
                ww[m] = w
                z += w
                m += 1
        off[i + 1] = m
        norm[i] = 1.0 / z
    return off, jj, ww, norm


@njit(cache=True)
def _generation_step(off, jj, ww, norm, prev, cur):
    n, f = prev.shape
    for i in range(n):
        ci = cur[i]
        pi = prev[i]
        for c in range(f):
            ci[c] = pi[c]
        for k in range(off[i], off[i + 1]):
            w = ww[k]
            pj = prev[jj[k]]
            for c in range(f):
                ci[c] += w * pj[c]
        z = norm[i]
        for c in range(f):
            ci[c] *= z


def _generations(offsets, nbr, dist, x, r_c, n_max):
    n, f = x.shape
    out = np.empty((n, f * (n_max + 1)))
    out[:, :f] = x
    if n_max == 0:
        return out
    off, jj, ww, norm = _generation_weights(offsets, nbr, dist, float(r_c))
    prev = x
    for g in range(1, n_max + 1):
        cur = np.empty((n, f))
        _generation_step(off, jj, ww, norm, prev, cur)
        out[:, g * f:(g + 1) * f] = cur
        prev = cur
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------------------------

def _check_box(box):
    box = np.ascontiguousarray(box, dtype=np.float64)
    if box.shape != (3,):
        raise ValueError(f"box must have shape (3,), got {box.shape}")
    if not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box edges must be positive and finite, got {box}")
    return box


def _check_positions(positions):
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    return positions


def _check_types(types, n, n_species):
    t = np.asarray(types)
    if t.shape != (n,):
        raise ValueError(f"types must have shape ({n},), got {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        if not (np.issubdtype(t.dtype, np.floating) and np.all(t == np.round(t))):
            raise ValueError(f"types must be integer species indices, got dtype {t.dtype}")
    t = np.ascontiguousarray(t, dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_species):
        raise ValueError(f"types must lie in 0..{n_species - 1}, got range {t.min()}..{t.max()}")
    return t


def _check_nlist(nlist, cutoff, what):
    if not isinstance(nlist, NeighborList):
        raise ValueError(f"{what} needs a glasshpc.structure.neighbors.NeighborList, got {type(nlist).__name__}")
    if nlist.cutoff < cutoff:
        raise ValueError(f"{what}: neighbour list cutoff {nlist.cutoff:.4g} is below the descriptor cutoff "
                         f"{cutoff:.4g} (max r + truncation·δ)")
    if nlist.distances.size and nlist.distances.min() <= 0.0:
        k = int(np.argmin(nlist.distances))
        i = int(np.searchsorted(nlist.offsets, k, side="right") - 1)
        raise ValueError(f"particles {i} and {int(nlist.neighbors[k])} coincide (r_ij = 0)")


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------

def radial_descriptors(nlist, types, spec):
    """Radial descriptors G_i(r, δ, s) (SCIENCE.md §4; Eq. 5 [CAGE], Eq. 1 [AVG]).

    Parameters
    ----------
    nlist : NeighborList with cutoff >= spec.radial_cutoff()
    types : (N,) int species indices 0..spec.n_species−1
    spec : DescriptorSpec

    Returns
    -------
    (N, n_species * n_rad) float64; column s * n_rad + k holds shell k (radial_r[k], radial_delta[k]) counted over
    neighbours of species s. Dimensionless (a Gaussian-smoothed neighbour count).

    Raises ValueError for a too-short neighbour list, bad types, or coincident particles.
    """
    n = nlist.offsets.shape[0] - 1
    types = _check_types(types, n, spec.n_species)
    if spec.radial_r.size == 0:
        return np.zeros((n, 0))
    rc = spec.radial_cutoff()
    _check_nlist(nlist, rc, "radial_descriptors")
    run_start, run_dr = _shell_runs(spec.radial_r, spec.radial_delta)
    inv_h, tstart, idx = _run_table(spec.radial_r, spec.radial_delta, spec.truncation, nlist.cutoff, run_start)
    return _radial_kernel(nlist.offsets, nlist.neighbors, nlist.distances, types, spec.n_species,
                          spec.radial_r, spec.radial_delta, spec.truncation, run_start, run_dr, inv_h, tstart, idx)


def angular_descriptors(nlist, spec, n_rows=None):
    """Angular (bond-order) descriptors q_i(l, r, δ), all species together (SCIENCE.md §4; Eq. 6–7 [CAGE],
    Eq. 2–3 [AVG]).

    Parameters
    ----------
    nlist : NeighborList with cutoff >= spec.angular_cutoff()
    spec : DescriptorSpec

    Returns
    -------
    (N, n_ang * len(angular_l)) float64, column a * len(l) + li holds l = angular_l[li] on shell a. Dimensionless,
    in [0, 1]; 0 where Z_i(r, δ) = 0 (no neighbour within the truncated shell). ``n_rows``: only particles
    0..n_rows−1 are computed (the other rows are 0).

    Raises ValueError for a too-short neighbour list or coincident particles.
    """
    n = nlist.offsets.shape[0] - 1
    if spec.angular_r.size == 0:
        return np.zeros((n, 0))
    rc = spec.angular_cutoff()
    _check_nlist(nlist, rc, "angular_descriptors")
    ls = np.asarray(spec.angular_l, dtype=np.int64)
    if n_rows is not None and n_rows < n:
        out = np.zeros((n, spec.angular_r.size * ls.size))
        out[:n_rows] = _angular_kernel(nlist.offsets[:n_rows + 1], nlist.distances, nlist.vectors, spec.angular_r,
                                       spec.angular_delta, spec.truncation, ls, rc, spec.angular_kind == "sharp")
        return out
    return _angular_kernel(nlist.offsets, nlist.distances, nlist.vectors, spec.angular_r, spec.angular_delta,
                           spec.truncation, ls, rc, spec.angular_kind == "sharp")


def generation_average(x, positions, box, r_c, n_max):
    """Generation averages x^(0..n_max) (SCIENCE.md §4; Eq. 9 [CAGE], Eq. 4 [AVG]).

    x_i^(n) = Σ_{j: r_ij < r_c} e^{−r_ij/r_c} x_j^(n−1) / Σ_{j: r_ij < r_c} e^{−r_ij/r_c}, the sums including j = i.

    Parameters
    ----------
    x : (N, F) float64 base features x^(0)
    positions : (N, 3) float64 (unwrapped is fine), box : (3,) float64 orthorhombic edges
    r_c : float, 0 < r_c < min(box)/2 (σ_AA)
    n_max : int >= 0

    Returns
    -------
    (N, F * (n_max + 1)) float64: [x^(0) | x^(1) | … | x^(n_max)].

    Raises ValueError for bad shapes, non-finite positions, r_c outside (0, min(box)/2), negative n_max.
    """
    positions = _check_positions(positions)
    box = _check_box(box)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != positions.shape[0]:
        raise ValueError(f"x must have shape (N={positions.shape[0]}, F), got {x.shape}")
    if int(n_max) != n_max or n_max < 0:
        raise ValueError(f"n_max must be a non-negative integer, got {n_max}")
    n_max = int(n_max)
    check_cutoff(box, r_c)
    if n_max == 0:
        return x.copy()
    nl = NeighborList(positions, box, float(r_c))
    return _generations(nl.offsets, nl.neighbors, nl.distances, x, float(r_c), n_max)


def _replicate(positions, types, box, reach):
    """Periodic copies n_d = floor(2·reach/L_d) + 1 per edge (so reach < n_d L_d / 2), the original copy first.

    The set of copies of one particle is the full set of its periodic images modulo the larger box whatever image
    it was given in, so descriptors of the enlarged system are those of the infinite periodic system."""
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite")
    reps = np.floor(2.0 * reach / box).astype(np.int64) + 1
    grid = np.array(np.meshgrid(*[np.arange(k) for k in reps], indexing="ij")).reshape(3, -1).T
    shifts = grid * box
    big = (positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    return big, np.tile(types, shifts.shape[0]), box * reps


def compute_descriptors(positions, types, box, spec, replicate=True):
    """All descriptors of one configuration: radial + angular, then generation averages (SCIENCE.md §4).

    Small boxes: when the descriptor cutoff (or r_generation) reaches half the shortest box edge, the sums run over
    all periodic images (which then include several images of a neighbour, and a particle's own images): the box
    is replicated n_d = floor(2·reach/L_d) + 1 times per edge and the rows of the original particles are returned.
    Cost grows with Π n_d (8× for ``ka_avg`` at N = 1000, ρ = 1.2). ``replicate=False`` raises instead.

    Parameters
    ----------
    positions : (N, 3) float64, any periodic image (σ_AA)
    types : (N,) int species indices 0..spec.n_species−1
    box : (3,) float64 orthorhombic box edges, origin at 0
    spec : DescriptorSpec

    Returns
    -------
    (N, spec.n_features) float64, columns named by ``spec.feature_names()``.

    Raises ValueError for bad shapes, types out of range, non-finite positions, coincident particles, or (with
    replicate=False) a cutoff (spec.cutoff() or spec.r_generation) not below half the shortest box edge.
    """
    if not isinstance(spec, DescriptorSpec):
        raise ValueError(f"spec must be a DescriptorSpec, got {type(spec).__name__}")
    positions = _check_positions(positions)
    box = _check_box(box)
    types = _check_types(types, positions.shape[0], spec.n_species)
    rc = spec.cutoff()
    reach = max(rc, spec.r_generation if spec.generations else 0.0)
    if reach >= 0.5 * box.min():
        if not replicate:
            check_cutoff(box, reach)
        n0 = positions.shape[0]
        positions, types, box = _replicate(positions, types, box, reach)
        # without generations only the originals' rows are needed (the copies' would be the same rows)
        return _descriptors(positions, types, box, spec, n0 if spec.generations == 0 else positions.shape[0])[:n0]
    return _descriptors(positions, types, box, spec, positions.shape[0])


def _descriptors(positions, types, box, spec, n_keep):
    """compute_descriptors on checked inputs whose reach is below half the box; rows n_keep.. may be wrong."""
    n = positions.shape[0]
    # radial: pairs straight from the cell list (long cutoff, distances only); angular and generations: a full
    # neighbour list with the (short) cutoff they need
    short = max(spec.angular_cutoff(), spec.r_generation if spec.generations else 0.0)
    if short > 0.0:
        nl = NeighborList(positions, box, short)
        _check_nlist(nl, 0.0, "compute_descriptors")  # coincident particles
    elif not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite")
    base = np.empty((n, spec.n_base_features))
    if spec.radial_r.size:
        rcut = spec.radial_cutoff()
        run_start, run_dr = _shell_runs(spec.radial_r, spec.radial_delta)
        inv_h, tstart, idx = _run_table(spec.radial_r, spec.radial_delta, spec.truncation, rcut, run_start)
        base[:, :spec.n_radial] = _radial_direct(positions, box, rcut, types, spec.n_species, spec.radial_r,
                                                 spec.radial_delta, spec.truncation, run_start, run_dr, inv_h,
                                                 tstart, idx, n_keep)
    if spec.angular_r.size:
        base[:, spec.n_radial:] = angular_descriptors(nl, spec, n_keep)
    if spec.generations == 0:
        return base
    return _generations(nl.offsets, nl.neighbors, nl.distances, base, spec.r_generation, spec.generations)


def pair_histogram(positions, types, box, pairs, n_bins, dr):
    """One snapshot's pair-distance histogram and g(r) normalisation, the summands of
    :func:`radial_distribution` (per-snapshot tasks add them up in snapshot order).

    positions (N, 3), types (N,) int, box (3,) orthorhombic edges (σ_AA); bins [k·dr, (k+1)·dr),
    k < n_bins, n_bins·dr < min(box)/2. Returns ({(a, b): (n_bins,) float64 number of ordered
    (i∈A, j∈B, j≠i) pairs per bin}, {(a, b): N_A (N_B − δ_AB) / V}). Raises ValueError for bad
    shapes, non-finite positions or a range beyond half the box."""
    pos = _check_positions(positions)
    box = _check_box(box)
    typ = np.asarray(types)
    if typ.shape != (pos.shape[0],):
        raise ValueError(f"types shape {typ.shape} does not match positions {pos.shape}")
    typ = typ.astype(np.int64)
    edges = np.arange(int(n_bins) + 1) * dr
    nl = NeighborList(pos, box, edges[-1])
    i_of = np.repeat(np.arange(pos.shape[0]), np.diff(nl.offsets))
    ti = typ[i_of]
    tj = typ[nl.neighbors]
    vol = float(np.prod(box))
    counts, norm = {}, {}
    for (a, b) in pairs:
        sel = (ti == a) & (tj == b)
        counts[(a, b)] = np.histogram(nl.distances[sel], bins=edges)[0].astype(np.float64)
        na = np.count_nonzero(typ == a)
        nb = np.count_nonzero(typ == b) - (1 if a == b else 0)
        norm[(a, b)] = na * nb / vol
    return counts, norm


def gr_range(box_list, r_max=None, dr=0.01):
    """(r_max, n_bins) of :func:`radial_distribution` for these boxes: r_max defaults to
    min(5, 0.999 · min(box)/2). Raises ValueError if fewer than 2 bins fit."""
    if r_max is None:
        r_max = min(5.0, 0.999 * 0.5 * min(float(np.min(b)) for b in box_list))
    n_bins = int(np.floor(r_max / dr))
    if n_bins < 2:
        raise ValueError(f"r_max {r_max} too small for dr {dr}")
    return r_max, n_bins


def radial_distribution(positions_list, types_list, box_list, pairs=((0, 0),), r_max=None, dr=0.01):
    """Partial pair correlation functions g_AB(r) averaged over snapshots.

    g_AB(r) = <n_AB(r)> / (N_A (N_B − δ_AB)/V · 4π r² dr), n_AB(r) the number of (i∈A, j∈B, j≠i) pairs in the bin.

    Parameters
    ----------
    positions_list : sequence of (N_t, 3) arrays; types_list : sequence of (N_t,) int; box_list : sequence of (3,)
        (a single (3,) box is broadcast to all snapshots)
    pairs : sequence of (a, b) species pairs
    r_max : float, default min(5, 0.999 · min(box)/2); dr : bin width

    Returns
    -------
    r : (n_bins,) bin centres; g : dict (a, b) -> (n_bins,) float64

    Raises ValueError for empty or inconsistent inputs or r_max not below half the box.
    """
    positions_list = list(positions_list)
    types_list = list(types_list)
    if np.ndim(box_list) == 1:
        box_list = [box_list] * len(positions_list)
    box_list = [_check_box(b) for b in box_list]
    if not positions_list or len(types_list) != len(positions_list) or len(box_list) != len(positions_list):
        raise ValueError("positions_list, types_list and box_list must be non-empty and of equal length")
    r_max, n_bins = gr_range(box_list, r_max, dr)
    edges = np.arange(n_bins + 1) * dr
    counts = {p: np.zeros(n_bins) for p in pairs}
    norm = {p: 0.0 for p in pairs}
    for pos, typ, box in zip(positions_list, types_list, box_list):
        c, nm = pair_histogram(pos, typ, box, pairs, n_bins, dr)
        for p in pairs:
            counts[p] += c[p]
            norm[p] += nm[p]
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    r = 0.5 * (edges[1:] + edges[:-1])
    g = {p: counts[p] / (norm[p] * shell) if norm[p] > 0 else np.zeros(n_bins) for p in pairs}
    return r, g


def second_minimum_gAA(positions_list, types_list, box_list, species=0, r_max=None, dr=0.01, smooth=0.03,
                       prominence=0.05):
    """Position (σ_AA) of the second minimum of g_AA(r), the default r_c of the generation averages
    (SCIENCE.md §4, Eq. 9 [CAGE]).

    Algorithm: histogram g_AA with bin ``dr`` over all snapshots (:func:`radial_distribution`), smooth it with a
    Gaussian of width ``smooth`` (σ_AA), take the first peak as the global maximum, and return the second local
    minimum beyond it whose topographic prominence is at least ``prominence`` (so noise and the shallow dip between
    the split sub-peaks of a glass do not count), refined by a parabola through the three lowest bins.

    Raises ValueError if fewer than two minima are found within r_max (too little data or r_max too small).
    """
    r, g = radial_distribution(positions_list, types_list, box_list, pairs=((species, species),),
                               r_max=r_max, dr=dr)
    return second_minimum(r, g[(species, species)], dr, smooth, prominence)


def _gaussian_smooth(y, sigma):
    """y convolved with a normalised Gaussian of ``sigma`` bins truncated at 4 σ, edges extended
    with the end values (what scipy.ndimage.gaussian_filter1d(y, sigma, mode='nearest') computes,
    to rounding; numpy only: scipy.ndimage and scipy.signal cost 1.5 s to import per rank)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * x * x)
    w /= w.sum()
    padded = np.concatenate([np.full(radius, y[0]), y, np.full(radius, y[-1])])
    return np.convolve(padded, w, mode="valid")


def _prominent_peaks(y, prominence):
    """Indices of the local maxima of ``y`` (flat tops: the middle sample, ends excluded) whose
    topographic prominence is ≥ ``prominence``: the peaks scipy.signal.find_peaks(y,
    prominence=prominence) returns, in increasing order."""
    n = y.size
    peaks = []
    i = 1
    while i < n - 1:
        if y[i - 1] < y[i]:
            j = i + 1
            while j < n - 1 and y[j] == y[i]:
                j += 1
            if y[j] < y[i]:
                peaks.append((i + j - 1) // 2)
            i = j
        else:
            i += 1
    out = []
    for k in peaks:
        lo = y[k]
        i = k
        while i > 0 and y[i - 1] <= y[k]:   # to the left until a higher sample or the end
            i -= 1
            lo = min(lo, y[i])
        ro = y[k]
        i = k
        while i < n - 1 and y[i + 1] <= y[k]:
            i += 1
            ro = min(ro, y[i])
        if y[k] - max(lo, ro) >= prominence:
            out.append(k)
    return np.array(out, dtype=np.int64)


def second_minimum(r, g, dr=0.01, smooth=0.03, prominence=0.05):
    """The second minimum of g(r) given on bin centres ``r`` (width ``dr``): the algorithm of
    :func:`second_minimum_gAA`, on a g(r) already summed (e.g. from per-snapshot
    :func:`pair_histogram` tasks). Raises ValueError if fewer than two minima are found."""
    g = _gaussian_smooth(np.asarray(g, dtype=np.float64), smooth / dr)
    first = int(np.argmax(g))
    mins = _prominent_peaks(-g, prominence)
    mins = mins[mins > first]
    if mins.size < 2:
        raise ValueError(f"found {mins.size} minima of g_AA beyond its first peak within r_max = {r[-1] + dr / 2:.3g}; "
                         "use more snapshots or a larger box")
    k = int(mins[1])
    y0, y1, y2 = g[k - 1], g[k], g[k + 1]
    den = y0 - 2.0 * y1 + y2
    shift = 0.5 * (y0 - y2) / den if den > 0 else 0.0
    return float(r[k] + shift * dr)
