"""The YAML input: schema, defaults (this file is the one place they live) and validation.

Reduced LJ units of species A throughout (lengths σ_AA, times τ, temperatures ε_AA/k_B).

:func:`load` turns a YAML file into a frozen :class:`Config`, raising :class:`ConfigError` that names
the key path (e.g. ``iso.times.stop``) and what is allowed, before any work or file is created.
``python -m glasshpc.run --describe`` prints every key with its default and meaning.
"""
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import yaml

AUTO = "auto"

# Hard upper bounds: larger than any published study, small enough that a typo (1e9 for 1e3) is
# refused at once instead of failing with MemoryError (or a LAMMPS crash) after hours of work.
MAX_PARTICLES = 10**8        # [CAGE], [SOFT], GlassBench: N ≤ 10⁵
MAX_SNAPSHOTS = 10**6        # papers: 10²–10⁴ snapshots
MAX_REPLICAS = 10**6         # iso: 30–500 replicas; [SOFT] p_r: up to 10⁶
MAX_TIMES = 10**4            # read-out times (papers: 10–100)
MAX_SWEEPS = 10**9           # cage MC sweeps ([CAGE]: 10⁶)
MAX_CHAINS = 10**4
MAX_ITEMS = 1000             # entries of a list or mapping key (shell blocks, feature sets, ...)
MAX_RUN_STEPS = 2**31 - 1    # one LAMMPS `run N` takes N < 2³¹ (MAXSMALLINT)
MAX_SKIN = 1.0               # σ; LAMMPS' LJ default is 0.3: a larger skin only grows the lists


class ConfigError(ValueError):
    """Invalid configuration: ``key`` is the dotted key path, the message says what is allowed.

    Survives pickling (mpi4py's ``bcast``/``allgather`` pickle it when one rank refuses an input)."""

    def __init__(self, key, message):
        key = str(key)
        if len(key) > 200:       # a key path built from an unknown (user-written) key name
            key = key[:200] + "…"
        self.key, self.message = key, message
        super().__init__(f"config error at '{key}': {message}")

    def __reduce__(self):
        return (type(self), (self.key, self.message))


_BRIEF = None


def brief(value, limit=80):
    """``repr(value)`` cut to at most ``limit`` characters (…-terminated): every message that shows a
    user-given value uses it, so a huge value (a long string, a nested list) never floods the log.
    Nested containers are abbreviated first (reprlib), so the cost is bounded too."""
    global _BRIEF
    if _BRIEF is None:
        import reprlib
        _BRIEF = reprlib.Repr()
        _BRIEF.maxstring = _BRIEF.maxother = _BRIEF.maxlong = limit
        _BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict = 3, 12, 12, 8
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _f(default=dataclasses.MISSING, doc="", kind=None, choices=None, lo=None, hi=None,
       lo_open=False, hi_open=False, factory=None, **extra):
    """A schema field: default, doc, kind, allowed choices, range [lo, hi] (hi on every count:
    a typo like 1e9 is refused before any work), and ``extra`` (reserved names, max_items,
    optional)."""
    meta = dict(doc=doc, kind=kind, choices=choices, lo=lo, hi=hi, lo_open=lo_open,
                hi_open=hi_open, **extra)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)   # kw_only: optional model keys sit between required ones
class ModelConfig:
    name: str = _f(doc="glass former", choices=("kob_andersen", "harmonic_spheres",
                                                 "hard_spheres", "bead_spring"))
    n_particles: int = _f(doc="particles per snapshot", lo=2, hi=MAX_PARTICLES)
    density: float = _f(None, "number density ρ (σ⁻³); required except for hard_spheres given "
                              "packing_fraction", lo=0.0, lo_open=True)
    temperature: float = _f(doc="temperature T (ε/k_B; hard spheres: k_B T, 1 by convention)",
                            lo=0.0, lo_open=True)
    # model-specific keys (checked by _model_checks)
    packing_fraction: float = _f(None, "hard_spheres only: packing fraction η (instead of "
                                       "density)", lo=0.0, hi=0.74, lo_open=True, hi_open=True)
    growth_rate: float = _f(None, "hard_spheres only: Lubachevsky–Stillinger growth rate of the "
                                  "diameters (τ⁻¹); default 0.02", lo=0.0, lo_open=True, hi=1.0)
    chain_length: int = _f(None, "bead_spring only: monomers per linear chain; default 5 "
                                 "(pentamers, [DW])", lo=2, hi=MAX_PARTICLES)


@dataclass(frozen=True)
class MDConfig:
    timestep: float = _f(0.005, "MD timestep (τ)", lo=0.0, lo_open=True, hi=0.1)
    skin: float = _f(0.3, "neighbour-list skin (σ); 0.3 measured fastest for KA; ≤ 1, and "
                          "pair cutoff + skin below half the box", lo=0.0, lo_open=True,
                     hi=MAX_SKIN)
    tdamp: float = _f(0.5, "Nosé–Hoover damping time (τ)", lo=0.0, lo_open=True)
    melt_temperature: float = _f(2.0, "temperature of the initial NVT melt", lo=0.0, lo_open=True)
    melt_time: float = _f(10.0, "NVT melt duration (τ)", lo=0.0)
    nvt_time: float = _f(100.0, "NVT (Nosé–Hoover) duration at T (τ)", lo=0.0)
    nve_time: float = _f(200.0, "NVE equilibration after NVT (τ); papers: ≥ 10 τ_α", lo=0.0)
    suffix: str = _f("auto", "LAMMPS accelerator styles (glasshpc/md/accel.py): 'none' = plain "
                             "styles; 'opt' (OPT), 'omp' (OPENMP, 1 thread per rank), 'intel' "
                             "(INTEL, double precision), 'kk' (KOKKOS, 1 thread), 'gpu' (GPU) = "
                             "that package's variant of every style that has one (refused if "
                             "the build lacks it); 'auto' = the first of intel, opt, omp that "
                             "the build has for the model's pair/bond styles and that "
                             "reproduces the plain energies and forces to 1e-10 relative, "
                             "else none (decided once per run, recorded in /provenance and "
                             "reused by --resume). Hard spheres (EDMD) ignore it",
                     choices=("auto", "none", "opt", "omp", "intel", "kk", "gpu"))


@dataclass(frozen=True)
class SnapshotsConfig:
    count: int = _f(None, doc="independent equilibrated snapshots (required with source 'lammps'; "
                              "with 'files' the number of files, checked if given)", lo=1,
                  hi=MAX_SNAPSHOTS)
    source: str = _f("lammps", "'lammps': prepare snapshots by MD; 'files': read your own "
                     "snapshot files (one per snapshot) instead", choices=("lammps", "files"))
    path: str = _f("", "source 'files': a folder (every non-hidden file in it) or a glob pattern, "
                       "relative to the working directory; files sorted in natural order",
                   kind="path", optional=True)
    format: str = _f("auto", "source 'files': file format; 'auto' = from the extension "
                             "(.data/.lmp → lammps-data, .dump/.lammpstrj → lammps-dump, "
                             ".xyz/.extxyz → extxyz)",
                     choices=("auto", "lammps-data", "lammps-dump", "extxyz"))
    type_map: object = _f(None, "source 'files' (required): file particle type → model species "
                                "name, e.g. {1: A, 2: B} (LAMMPS) or {Ar: A, Kr: B} (extxyz)",
                          kind="type_map")


@dataclass(frozen=True)
class TimesConfig:
    start: float = _f(doc="first read-out time (τ), ≥ md.timestep", lo=0.0, lo_open=True)
    stop: float = _f(doc="last read-out time (τ)", lo=0.0, lo_open=True)
    count: int = _f(doc="number of log-spaced read-out times", lo=1, hi=MAX_TIMES)


@dataclass(frozen=True)
class UnknownTimes:
    """``iso.times: unknown`` (one read-out) or ``{unknown: T}``: imported files that hold T read-outs but no
    times (GlassBench). The read-outs keep their order; τ_α, the end of the ballistic regime and the Debye–Waller
    time are then not numbers, and /iso/times holds NaN."""
    count: int = _f(1, "read-outs per file", lo=1, hi=MAX_TIMES)


UNKNOWN = "unknown"


@dataclass(frozen=True)
class IsoConfig:
    replicas: int = _f(doc="replicas per snapshot (isoconfigurational ensemble size)", lo=1,
                       hi=MAX_REPLICAS)
    times: object = _f(doc="read-out times: {start, stop, count} log-spaced, or an explicit "
                           "increasing list (τ); rounded to whole timesteps. With imported: files "
                           "that carry no times, 'unknown' (one read-out) or {unknown: T} (T "
                           "read-outs): nothing is then computed or printed as a time",
                       kind="times")
    store_displacements: bool = _f(True, "keep /iso/displacements [S, R, T, N, 3] f4 in the output; "
                                         "false (huge runs): each replica task stores only its "
                                         "per-replica sums (|Δr|, species sums for F_s and MSD, "
                                         "|Δr|² for the Debye–Waller factor) as working data, and "
                                         "the dynamics stage adds them in replica order — same "
                                         "numbers, no displacement array")


@dataclass(frozen=True)
class DynamicsConfig:
    propensity: str = _f("abs", "⟨|Δr|⟩ ('abs', [CAGE] Eq. 4) or ⟨|Δr|²⟩ ('squared')",
                         choices=("abs", "squared"))
    q: object = _f(AUTO, "wave number of F_s(q,t) (σ⁻¹) or 'auto' = first peak of S_AA(q); "
                         "at most 100", kind="float_or_auto", lo=0.0, lo_open=True, hi=100.0)


@dataclass(frozen=True)
class ShellBlock:
    r_min: float = _f(doc="first shell centre (σ)", lo=0.0)
    r_max: float = _f(doc="last shell centre (σ)", lo=0.0)
    count: int = _f(doc="equally spaced shells from r_min to r_max", lo=1, hi=MAX_ITEMS)
    delta: float = _f(doc="Gaussian width δ (σ)", lo=0.0, lo_open=True)


def _default_radial():
    return (ShellBlock(0.8, 3.0, 23, 0.1),)


def _default_angular():
    return (ShellBlock(1.0, 2.5, 6, 0.1),)


DESCRIPTOR_PRESETS = ("hs_cmp", "ka_avg", "melt_dw", "softness_135")


@dataclass(frozen=True)
class DescriptorsConfig:
    radial: tuple = _f(doc="radial shells G(r, δ, s) per species, list of {r_min, r_max, count, "
                           "delta} ([CAGE] Eq. 5)", kind=("list", ShellBlock),
                       factory=_default_radial)
    angular: tuple = _f(doc="angular shells q_l(r, δ), list of {r_min, r_max, count, delta}",
                        kind=("list", ShellBlock), factory=_default_angular)
    l: tuple = _f(doc="angular orders l of q_l", kind=("list", int),
                  factory=lambda: tuple(range(1, 13)), max_items=21)
    generations: int = _f(2, "highest generation n of neighbour averaging ([CAGE] Eq. 9)", lo=0,
                          hi=5)
    r_generation: object = _f(AUTO, "r_c of generation averaging (σ) or 'auto' = second "
                                    "minimum of g_AA", kind="float_or_auto")
    truncation: float = _f(7.0, "Gaussians are cut at |r_ij − r| > truncation·δ", lo=3.0,
                           hi=100.0)
    preset: str = _f(None, "named descriptor set of a paper instead of radial/angular/l blocks "
                           "(structure/descriptors.py preset())", choices=DESCRIPTOR_PRESETS)


@dataclass(frozen=True)
class AlphaGrid:
    min: float = _f(1e-5, "smallest ridge α", lo=0.0, lo_open=True)
    max: float = _f(1e7, "largest ridge α", lo=0.0, lo_open=True)
    count: int = _f(49, "log-spaced α values", lo=1, hi=MAX_ITEMS)


@dataclass(frozen=True)
class CageConfig:
    enabled: bool = _f(False, "compute cage states r^CS by Voronoi-constrained MC ([CAGE] Eq. 10)")
    cage: str = _f("voronoi", "the cage: approximate Voronoi cell of the SANN neighbours, or a "
                              "sphere of `radius` around r^init", choices=("voronoi", "sphere"))
    radius: float = _f(0.5, "sphere cage radius in units of σ_ii of the particle's species",
                       lo=0.0, lo_open=True)
    equilibration_sweeps: int = _f(500000, "MC sweeps (N trial moves each) before measuring; "
                                           "the step is tuned to target_acceptance meanwhile "
                                           "(paper: 5×10⁵)", lo=0, hi=MAX_SWEEPS)
    measurement_sweeps: int = _f(1000000, "MC sweeps averaged into r^CS (paper: 10⁶)", lo=1,
                                 hi=MAX_SWEEPS)
    target_acceptance: float = _f(0.3, "acceptance the trial step is tuned to", lo=0.0, hi=1.0,
                                  lo_open=True, hi_open=True)
    moves_per_visit: int = _f(4, "trial moves of a particle per visit (its neighbours gathered "
                                 "once per visit: KA 1.6–1.9×, hard spheres 1.9–2.0× the moves/s of one "
                                 "move per visit, bench/bench_cage.py); a pass over all particles "
                                 "is this many sweeps, the sweep counts are rounded up to whole "
                                 "passes, and r^CS averages one sample per pass", lo=1, hi=64)
    chains: int = _f(1, "independent MC chains per snapshot, each with its own seed from "
                        "task_rng(seed, 'cage', snapshot, chain) (chain 0: task_rng(seed, 'cage', "
                        "snapshot), the single-chain seed); r^CS is their average: the constrained "
                        "system mixes slowly (chains drift apart over 10⁴ sweeps; split-R̂ in "
                        "/states/cage/convergence), so K short chains are not the estimator one "
                        "K-times longer chain is; on the KA demo they correlate better with the "
                        "propensity (bench/study_cage_convergence.py)", lo=1, hi=MAX_CHAINS)


@dataclass(frozen=True)
class InherentConfig:
    enabled: bool = _f(False, "compute inherent states r^IS by FIRE minimisation")
    force_tolerance: float = _f(1e-6, "converged when max_i |F_i| is below this (ε/σ)", lo=0.0,
                                lo_open=True)
    max_iterations: int = _f(200000, "FIRE iterations before the run stops with an error", lo=1,
                             hi=10**9)


# blocks a feature set may combine with '+' ([CAGE] Figs. 3 and 5)
DESCRIPTOR_BLOCKS = ("init", "is", "cs")
SCALAR_FEATURES = ("drcs", "dris", "fnet", "energy", "dw")
# Voronoi cell volume, surface area, asphericity ([DW] §2.2.1; structure/voronoi.py) → the state whose
# coordinates are tessellated; 3 columns, never generation-averaged ([DW] averages only the radial and angular
# descriptors); stored as /descriptors/<block> [S, N, 3]; needs the optional extra 'voronoi' (freud)
VORONOI_BLOCKS = {"voronoi": "init", "voronoi_is": "is", "voronoi_cs": "cs"}
FEATURE_BLOCKS = DESCRIPTOR_BLOCKS + SCALAR_FEATURES + tuple(VORONOI_BLOCKS)
# blocks computed from the replicas' trajectories (like the propensity itself), not from the
# structure at t = 0: a feature set using one is no "prediction from structure" and needs
# fits.feature_sets.<name>.allow_dynamical: true; tables label them (SCIENCE.md §5)
DYNAMICAL_BLOCKS = ("dw",)


@dataclass(frozen=True)
class FeatureSet:
    features: str = _f("init", "'+'-joined blocks: init / is / cs = descriptors on the initial / "
                               "inherent / cage-state coordinates; drcs, dris = |r^CS − r^init|, "
                               "|r^IS − r^init|; fnet = |F^net| at t = 0; energy = potential "
                               "energy at t = 0; dw = local Debye–Waller factor ⟨|Δr(1 τ)|²⟩ "
                               "([DW]; dynamical: needs allow_dynamical and a read-out within a "
                               "factor 2 of 1 τ); voronoi, voronoi_is, voronoi_cs = Voronoi cell "
                               "volume, surface, asphericity ([DW]) on the initial / inherent / "
                               "cage-state coordinates (not generation-averaged; needs pip install "
                               "'glasshpc[voronoi]') (e.g. 'init+cs+drcs')")
    generations: int = _f(2, "descriptor generations 0..n of every descriptor block", lo=0, hi=5)
    allow_dynamical: bool = _f(False, "admit dynamical blocks (dw: computed from the replicas, "
                                      "like the propensity it predicts) in this set; the tables "
                                      "then mark the set '[dyn]'")

    @property
    def blocks(self):
        """The feature blocks in the order given."""
        return tuple(self.features.split("+"))


def _default_sets():
    return {"init": FeatureSet("init", 2)}


@dataclass(frozen=True)
class SelectionConfig:
    method: str = _f("none", "feature selection on the Gram matrices: greedy 'forward' ([AVG]) or "
                             "'rfe' ([SOFT])", choices=("none", "forward", "rfe"))
    max_features: int = _f(100, "stop after this many features (forward) / report sizes up to it (rfe)",
                           lo=1, hi=10**5)


@dataclass(frozen=True)
class MLPConfig:
    layers: int = _f(0, "hidden layers of the MLP baseline ([CMP], [DW]; PyTorch, extra 'nn'); "
                        "0 = off", lo=0, hi=3)
    width: int = _f(16, "ReLU units per hidden layer", lo=1, hi=10**4)
    dropout: float = _f(0.25, "dropout probability after each hidden layer ([CMP] Table I: 0.25)",
                        lo=0.0, hi=1.0, hi_open=True)
    l2: float = _f(1e-2, "L2 penalty on the weights: Adam weight_decay ([CMP] Table I: α = 0.01)",
                   lo=0.0, hi=1e3)
    max_iter: int = _f(300, "Adam epochs", lo=1, hi=10**6)
    batch_size: int = _f(50, "training rows per Adam step ([CMP]: 50)", lo=1, hi=10**7)
    learning_rate: float = _f(1e-3, "Adam step size", lo=0.0, lo_open=True, hi=1.0)
    outputs: str = _f("all", "'all' = one network per species predicting every read-out time "
                             "([DW]); 'per_time' = one network per species and time ([CMP])",
                      choices=("all", "per_time"))
    max_rows: int = _f(100000, "training rows gathered for the MLP (deterministic subsample)", lo=1,
                       hi=10**8)
    seed: int = _f(0, "varies the initial weights, batch order and dropout (with the master seed "
                      "and the task) without changing the split", lo=0, hi=2**31 - 1)


@dataclass(frozen=True)
class GNNConfig:
    enabled: bool = _f(False, "train the graph network baseline of [CMP] (Bapst et al. 2020; "
                              "PyTorch, extra 'nn') on each feature set: node input = the set's "
                              "generation-0 descriptors and scalar blocks + one-hot species, "
                              "edges r < cutoff with input |r_ij|, one network per species")
    hidden: int = _f(16, "width of every node / edge MLP and of the latent node and edge vectors",
                     lo=1, hi=1024)
    layers: int = _f(4, "graph layers after the encoder ([CMP]: 4)", lo=1, hi=16)
    epochs: int = _f(30, "passes over the training snapshots (one snapshot = one graph = one "
                         "Adam step)", lo=1, hi=10**5)
    learning_rate: float = _f(1e-3, "Adam step size", lo=0.0, lo_open=True, hi=1.0)
    weight_decay: float = _f(0.0, "L2 penalty on the weights: Adam weight_decay ([CMP]: none)",
                             lo=0.0, hi=1e3)
    cutoff: float = _f(2.1, "edges between particles closer than cutoff · σ_L, σ_L = the largest "
                            "species size σ_ss of the model ([CMP]: 2.1 σ_L); periodic minimum "
                            "image, so cutoff · σ_L < half the box", lo=0.0, lo_open=True, hi=10.0)
    seed: int = _f(0, "varies the initial weights and the snapshot order (with the master seed "
                      "and the task) without changing the split", lo=0, hi=2**31 - 1)


@dataclass(frozen=True)
class FitsConfig:
    test_fraction: float = _f(0.25, "fraction of snapshots held out for ρ(t) (seeded random "
                                    "choice); not with test_snapshots / train_snapshots",
                              lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    test_snapshots: tuple = _f(doc="explicit held-out snapshots: indices 0..S−1 or, with "
                                   "snapshots.source: files / imported:, file names (basename "
                                   "or path as listed); the rest train. Empty = test_fraction",
                               kind="snapshot_ids", factory=tuple)
    train_snapshots: tuple = _f(doc="explicit training snapshots (as test_snapshots); the rest "
                                    "are held out. At most one of test_fraction, test_snapshots, "
                                    "train_snapshots", kind="snapshot_ids", factory=tuple)
    cv_score: str = _f("mse", "α chosen by CV per species and time: 'mse' = least mean over "
                              "folds of the validation MSE (sklearn RidgeCV/GridSearchCV); "
                              "'pearson' = largest mean over folds of the mean per-snapshot "
                              "Pearson ρ of the fold's validation snapshots (as Bapst et al. 2020, "
                              "GlassBench)", choices=("mse", "pearson"))
    cv_folds: int = _f(4, "cross-validation folds, grouped by snapshot", lo=2, hi=MAX_ITEMS)
    alphas: AlphaGrid = _f(doc="ridge α grid (extended automatically at an edge optimum)",
                           factory=AlphaGrid)
    feature_sets: dict = _f(doc="named feature sets, each {features, generations, allow_dynamical}, fitted per "
                                "species and time; features joins blocks with '+': "
                                + ", ".join(FEATURE_BLOCKS) + " (README \"What a run does\"; "
                                "voronoi* need pip install 'glasshpc[voronoi]')", kind=("dict", FeatureSet),
                            factory=_default_sets,
                            reserved={"single": "the single-variable correlations",
                                      "is_test": "the held-out flags of the snapshots"})
    selection: SelectionConfig = _f(doc="feature selection per feature set, species and time",
                                    factory=SelectionConfig)
    mlp: MLPConfig = _f(doc="non-linear baseline on the same splits (off by default)",
                        factory=MLPConfig)
    train_state_point: int = _f(None, "sweeps (state_points:): also apply the models trained at "
                                      "this state point (its index) to every state point, the "
                                      "transferability test of [SOFT]/[DW]: /sweep/transfer_pearson"
                                      "/<set> [P, n_species, T], read-out index to read-out index "
                                      "(every state point needs as many read-outs)", lo=0,
                                hi=MAX_ITEMS)
    gnn: GNNConfig = _f(doc="graph network baseline on the same splits (off by default)",
                        factory=GNNConfig)


@dataclass(frozen=True)
class ParallelConfig:
    engine_ranks: object = _f(1, "ranks sharing one LAMMPS instance (domain decomposition) in the "
                                 "snapshot stage, K ≥ 1, or 'auto' = the largest K leaving no rank "
                                 "idle there (⌊ranks/K⌋ ≥ snapshots, ≥ 400 atoms per rank), chosen "
                                 "at the first launch and kept by --resume. The snapshots depend "
                                 "on K (not on the launch size): give K for numbers independent "
                                 "of the launch; a run needs ≥ K ranks", kind="int_or_auto")


# -- state-point sweeps (``state_points:``) ---------------------------------------------------
# Each entry overrides a few keys of the run; everything else is the run's. State point k is the
# single-state run of :func:`state_point_configs` ``[k]``: the overrides applied and the seed
# :func:`state_point_seed` (seed, k), so its streams are independent of the other state points'.


@dataclass(frozen=True)
class SweepModel:
    temperature: float = _f(None, "temperature T of this state point (ε/k_B)", lo=0.0,
                            lo_open=True)
    density: float = _f(None, "number density ρ of this state point (σ⁻³)", lo=0.0, lo_open=True)
    packing_fraction: float = _f(None, "hard_spheres only: packing fraction η of this state point "
                                       "(instead of density)", lo=0.0, hi=0.74, lo_open=True,
                                 hi_open=True)


@dataclass(frozen=True)
class SweepMD:
    melt_temperature: float = _f(None, "temperature of the initial NVT melt", lo=0.0,
                                 lo_open=True)
    melt_time: float = _f(None, "NVT melt duration (τ)", lo=0.0)
    nvt_time: float = _f(None, "NVT duration at T (τ)", lo=0.0)
    nve_time: float = _f(None, "NVE equilibration after NVT (τ); colder state points need "
                               "longer (≥ 10 τ_α)", lo=0.0)


@dataclass(frozen=True)
class SweepIso:
    times: object = _f(None, "read-out times of this state point: {start, stop, count} or an "
                             "increasing list (τ)", kind="times")


@dataclass(frozen=True)
class SweepSnapshots:
    count: int = _f(None, "snapshots of this state point (softness runs only)", lo=1,
                    hi=MAX_SNAPSHOTS)


@dataclass(frozen=True)
class SweepPoint:
    model: SweepModel = _f(None, "model.temperature / density / packing_fraction of this state "
                                 "point")
    md: SweepMD = _f(None, "md preparation times of this state point")
    iso: SweepIso = _f(None, "iso.times of this state point")
    snapshots: SweepSnapshots = _f(None, "snapshots.count of this state point (softness runs "
                                         "only: the propensity summaries compare state points "
                                         "snapshot for snapshot)")


SWEEP_KEYS = {"model": ("temperature", "density", "packing_fraction"),
              "md": ("melt_temperature", "melt_time", "nvt_time", "nve_time"),
              "iso": ("times",), "snapshots": ("count",)}


def state_point_seed(seed, k):
    """Master seed (int in [0, 2⁶³)) of state point ``k`` of a sweep with master seed ``seed``:
    SeedSequence([seed, crc32('state_point'), k]). Every stream of state point k derives from it
    exactly as a single-state run's derive from its seed."""
    import zlib
    word = np.random.SeedSequence([int(seed), zlib.crc32(b"state_point"), int(k)]).generate_state(
        1, np.uint64)[0]
    return int(word >> np.uint64(1))


def state_point_overrides(point):
    """{section: {key: value}} of the keys a :class:`SweepPoint` sets (YAML-ready values)."""
    out = {}
    for section, keys in SWEEP_KEYS.items():
        sub = getattr(point, section)
        if sub is None:
            continue
        given = {k: _plain(getattr(sub, k)) for k in keys if getattr(sub, k) is not None}
        if given:
            out[section] = given
    return out


def state_point_label(point):
    """Short text of a state point's overrides, e.g. 'T = 0.5, md.nve_time = 400'."""
    o = state_point_overrides(point)
    short = {"temperature": "T", "density": "ρ", "packing_fraction": "η"}
    parts = [f"{short[k]} = {v:g}" for k, v in o.get("model", {}).items()]
    parts += [f"md.{k} = {v:g}" for k, v in o.get("md", {}).items()]
    if "iso" in o:
        parts.append("own iso.times")
    if "snapshots" in o:
        parts.append(f"{o['snapshots']['count']} snapshots")
    return ", ".join(parts) or "no overrides"


def state_point_configs(cfg):
    """[Config] of every state point of ``cfg.state_points`` (empty list when there is none): the
    run's config with the point's overrides, ``seed`` = :func:`state_point_seed` (seed, k) and no
    ``state_points``; each checked as a single-state config. Raises ConfigError naming
    ``state_points[k]…`` (hard spheres: an overridden packing fraction replaces the density and
    vice versa)."""
    out = []
    for k, point in enumerate(cfg.state_points):
        where = f"state_points[{k}]"
        m = cfg.model
        o = state_point_overrides(point)
        mo = o.get("model", {})
        if m.name == "hard_spheres" and m.packing_fraction is not None:
            m = dataclasses.replace(m, density=None)   # re-derived from η by _model_checks
        if "packing_fraction" in mo and m.name != "hard_spheres":
            raise ConfigError(f"{where}.model.packing_fraction",
                              f"only for model hard_spheres, not {m.name}; override "
                              "model.temperature or model.density")
        if "packing_fraction" in mo and "density" in mo:
            raise ConfigError(f"{where}.model.density", "give either density or packing_fraction")
        if "packing_fraction" in mo:
            m = dataclasses.replace(m, density=None)
        if "density" in mo:
            m = dataclasses.replace(m, packing_fraction=None)
        m = dataclasses.replace(m, **mo)
        c = dataclasses.replace(cfg, model=m, md=dataclasses.replace(cfg.md, **o.get("md", {})),
                                seed=state_point_seed(cfg.seed, k), state_points=(),
                                fits=dataclasses.replace(cfg.fits, train_state_point=None))
        if point.iso is not None and point.iso.times is not None:
            c = dataclasses.replace(c, iso=dataclasses.replace(c.iso, times=point.iso.times))
        if "snapshots" in o:
            c = dataclasses.replace(c, snapshots=dataclasses.replace(c.snapshots, **o["snapshots"]))
        try:
            c = _model_checks(c)
            _cross_checks(c, None)
        except ConfigError as err:
            section = err.key.split(".")[0]
            if section in SWEEP_KEYS and err.key.split(".")[-1] in SWEEP_KEYS[section]:
                raise ConfigError(f"{where}.{err.key}", err.message) from None
            raise ConfigError(err.key, f"at {where} ({state_point_label(point)}): "
                                       f"{err.message}") from None
        out.append(c)
    return out


def state_point_yaml(text, k):
    """YAML text of the single-state run equal to state point ``k`` of the sweep config ``text``
    (datasets bitwise equal to ``/state_points/<k>/``): ``state_points`` removed, the point's
    overrides applied, ``seed`` = :func:`state_point_seed`. Raises ConfigError as :func:`parse`."""
    cfg = parse(text)
    if not 0 <= k < len(cfg.state_points):
        raise ConfigError("state_points", f"no state point {k}: the config has "
                                          f"{len(cfg.state_points)}")
    data = _safe_yaml(text)
    data.pop("state_points")
    (data.get("fits") or {}).pop("train_state_point", None)   # a sweep-level key
    data["seed"] = state_point_seed(cfg.seed, k)
    for section, values in state_point_overrides(cfg.state_points[k]).items():
        sub = data.setdefault(section, {})
        if section == "model" and ("density" in values or "packing_fraction" in values):
            sub.pop("density", None)
            sub.pop("packing_fraction", None)
        sub.update(values)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@dataclass(frozen=True)
class Config:
    output: str = _f(doc="HDF5 output path (relative to the working directory)", kind="path")
    model: ModelConfig = _f(doc="the glass former and state point")
    snapshots: SnapshotsConfig = _f(doc="snapshot count")
    iso: IsoConfig = _f(None, "isoconfigurational ensemble", required_unless="softness")
    seed: int = _f(12345, "master seed; every stream derives from it and the task identity",
                   lo=0, hi=2**63 - 1)
    md: MDConfig = _f(doc="LAMMPS integration and preparation", factory=MDConfig)
    dynamics: DynamicsConfig = _f(doc="propensity and F_s", factory=DynamicsConfig)
    descriptors: DescriptorsConfig = _f(doc="structural descriptor grids",
                                        factory=DescriptorsConfig)
    inherent: InherentConfig = _f(doc="inherent states (FIRE)", factory=InherentConfig)
    cage: CageConfig = _f(doc="cage states (constrained Monte Carlo)", factory=CageConfig)
    fits: FitsConfig = _f(doc="ridge fits", factory=FitsConfig)
    parallel: ParallelConfig = _f(doc="how ranks share the work", factory=ParallelConfig)
    imported: "ImportConfig" = _f(None, "read snapshots and replica positions from published files "
                                        "instead of simulating them (glasshpc/io/imported.py)")
    state_points: tuple = _f(doc="a sweep: list of state points, each overriding "
                                 "model.temperature / density / packing_fraction and optionally "
                                 "md.melt_temperature / melt_time / nvt_time / nve_time and "
                                 "iso.times, e.g. [{model: {temperature: 0.5}, md: {nve_time: "
                                 "400}}, {model: {temperature: 0.6}}]; every stage runs for every "
                                 "state point in one task queue; output /state_points/<k>/ (the "
                                 "single-state layout) and /sweep/ (τ_α, ρ(t), ⟨Δr^CS⟩ per "
                                 "state point); state point k = the single-state run of its "
                                 "overrides with seed state_point_seed(seed, k). Empty = one "
                                 "state point, root layout", kind=("list", "SweepPoint"),
                             factory=tuple, max_items=MAX_ITEMS,
                             example="[{model: {temperature: 0.8}}, {model: {temperature: 0.6}, "
                                     "md: {nve_time: 400}}]")
    softness: "SoftnessConfig" = _f(None, "softness and energy barriers ([SOFT]; "
                                          "glasshpc/softness_parts.py): trajectories with "
                                          "frames, p_hop or CSD, training sets, p_r replicas, "
                                          "the SVC / regressors and the barrier fits, on the "
                                          "snapshots of every state point, with the features "
                                          "of descriptors: (default {preset: softness_135, "
                                          "generations: 0}); a softness run has no iso:, fits:, "
                                          "cage:, inherent:, dynamics: or imported: section")

    @property
    def sweep(self):
        """True when the run has ``state_points:`` (output under /state_points/<k>/)."""
        return bool(self.state_points)

    # -- derived quantities (pure functions of the config) -------------------------------------
    @property
    def box_length(self):
        return (self.model.n_particles / self.model.density) ** (1.0 / 3.0)

    @property
    def times_known(self):
        """False for ``iso.times: unknown`` (imported files without times)."""
        return not isinstance(self.iso.times, UnknownTimes)

    def replica_steps(self):
        """(T,) int64 strictly increasing read-out step counts (duplicates after rounding dropped);
        for ``iso.times: unknown`` the read-out numbers 1..T (no MD runs then: imported data)."""
        if not self.times_known:
            return np.arange(1, self.iso.times.count + 1, dtype=np.int64)
        return _steps(self.iso.times, self.md.timestep)

    def replica_times(self):
        """(T,) float64 read-out times in τ (= steps · timestep); NaN for ``iso.times: unknown``."""
        if not self.times_known:
            return np.full(self.iso.times.count, np.nan)
        return self.replica_steps() * self.md.timestep

    def test_snapshots(self):
        """Number of held-out snapshots for the fits."""
        f = self.fits
        if f.test_snapshots:
            return len(f.test_snapshots)
        if f.train_snapshots:
            return self.snapshots.count - len(f.train_snapshots)
        return max(1, int(round(f.test_fraction * self.snapshots.count)))

    def fit_split(self):
        """(train, test): sorted int64 arrays of snapshot indices, disjoint, union 0..S−1, from
        fits.test_snapshots / train_snapshots (file names resolved, :func:`resolve_snapshot_ids`)
        or the seeded random fits.test_fraction (:func:`glasshpc.learn.ridge.split_snapshots`).
        The same on every rank. Raises ConfigError as :func:`resolve_snapshot_ids`."""
        S = self.snapshots.count
        f = self.fits
        for key in ("test_snapshots", "train_snapshots"):
            given = getattr(f, key)
            if given:
                ids = resolve_snapshot_ids(self, given, f"fits.{key}")
                rest = np.setdiff1d(np.arange(S), ids)
                return (rest, ids) if key == "test_snapshots" else (ids, rest)
        from .learn.ridge import split_snapshots
        return split_snapshots(np.arange(S), self.test_snapshots() / S, self.seed)


def _steps(times, dt):
    if isinstance(times, TimesConfig):
        t = np.logspace(math.log10(times.start), math.log10(times.stop), times.count)
    else:
        t = np.asarray(times, dtype=np.float64)
    return np.unique(np.maximum(1, np.round(t / dt)).astype(np.int64))


# -- building and checking --------------------------------------------------------------------

def _type_name(kind):
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        kind, str(kind))


def _scalar(value, kind, key):
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(key, f"must be an integer, got {brief(value)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {brief(value)}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {brief(value)}")
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {brief(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {brief(value)}")
        return value
    raise TypeError(kind)


def _check_range(value, meta, key):
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta["lo_open"] and value == lo)):
        raise ConfigError(key, f"must be {'>' if meta['lo_open'] else '≥'} {lo}, got {brief(value)}")
    if hi is not None and (value > hi or (meta["hi_open"] and value == hi)):
        raise ConfigError(key, f"must be {'<' if meta['hi_open'] else '≤'} {hi}, got {brief(value)}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"must be one of {list(choices)}, got {brief(value)}")


def _build(cls, data, key):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(key or "<top>", f"must be a mapping with keys {[f.name for f in fields(cls)]}, "
                                          f"got {brief(data)}")
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(_join(key, str(unknown[0])), f"unknown key; allowed keys here: {names}")
    kwargs = {}
    for f in fields(cls):
        sub = _join(key, f.name)
        if f.name not in data:
            if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) \
                    or f.metadata.get("required_unless", "\0") not in (*data, "\0"):
                raise ConfigError(sub, f"required key is missing ({f.metadata.get('doc', '')})")
            continue
        kwargs[f.name] = _value(f, data[f.name], sub)
    return cls(**kwargs)


def _value(f, value, key):
    meta = f.metadata
    kind = meta.get("kind")
    if kind == "type_map":
        return _type_map(value, key)
    if kind == "times":
        if value == UNKNOWN:
            return UnknownTimes()
        if isinstance(value, dict) and UNKNOWN in value:
            if len(value) > 1:
                other = next(k for k in value if k != UNKNOWN)
                raise ConfigError(_join(key, str(other)), "give either {unknown: T} or {start, stop, "
                                                          "count}, not both")
            count = _scalar(value[UNKNOWN], int, _join(key, UNKNOWN))
            _check_range(count, fields(UnknownTimes)[0].metadata, _join(key, UNKNOWN))
            return UnknownTimes(count)
        if isinstance(value, dict):
            t = _build(TimesConfig, value, key)
            if t.count > 1 and t.stop <= t.start:
                raise ConfigError(_join(key, "stop"), f"must exceed start ({t.start}), got {t.stop}")
            return t
        if isinstance(value, list) and value:
            if len(value) > MAX_TIMES:
                raise ConfigError(key, f"at most {MAX_TIMES} read-out times, got {len(value)}")
            vals = [_scalar(v, float, f"{key}[{i}]") for i, v in enumerate(value)]
            for i in range(1, len(vals)):
                if vals[i] <= vals[i - 1]:
                    raise ConfigError(f"{key}[{i}]", f"times must be strictly increasing; "
                                                     f"{vals[i]} follows {vals[i - 1]}")
            if vals[0] <= 0:
                raise ConfigError(f"{key}[0]", f"times must be > 0, got {vals[0]}")
            return tuple(vals)
        raise ConfigError(key, "must be {start, stop, count}, a non-empty list of times, or (imported "
                               "files without times) 'unknown' / {unknown: T}")
    if kind == "float_or_auto":
        if value == AUTO:
            return AUTO
        v = _scalar(value, float, key) if not isinstance(value, str) else None
        if v is None or v <= 0:
            raise ConfigError(key, f"must be 'auto' or a positive number, got {brief(value)}")
        if meta.get("hi") is not None and v > meta["hi"]:
            raise ConfigError(key, f"must be 'auto' or ≤ {meta['hi']:g}, got {v}")
        return v
    if kind == "snapshot_ids":
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list of snapshot indices or file names, got "
                                   f"{brief(value)}")
        if len(value) > MAX_SNAPSHOTS:
            raise ConfigError(key, f"at most {MAX_SNAPSHOTS} entries, got {len(value)}")
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
                raise ConfigError(f"{key}[{i}]", f"must be a snapshot index (integer) or a file "
                                                 f"name (string), got {brief(v)}")
        return tuple(value)
    if kind in ("index_or_auto", "int_or_auto"):
        if value == AUTO:
            return AUTO
        least, what = (0, "an index ≥ 0") if kind == "index_or_auto" else (1, "a positive integer")
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(key, f"must be 'auto' or {what}, got {brief(value)}")
        return value
    if isinstance(kind, tuple) and kind[0] == "list":
        if not isinstance(value, list) or not value:
            raise ConfigError(key, "must be a non-empty list")
        cap = meta.get("max_items", MAX_ITEMS)
        if len(value) > cap:
            raise ConfigError(key, f"at most {cap} entries, got {len(value)}")
        item = _CLASSES.get(kind[1], kind[1]) if isinstance(kind[1], str) else kind[1]
        if dataclasses.is_dataclass(item):
            return tuple(_build(item, v, f"{key}[{i}]") for i, v in enumerate(value))
        out = tuple(_scalar(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        return out
    if isinstance(kind, tuple) and kind[0] == "dict":
        if not isinstance(value, dict) or not value:
            raise ConfigError(key, "must be a non-empty mapping name → settings")
        if len(value) > MAX_ITEMS:
            raise ConfigError(key, f"at most {MAX_ITEMS} entries, got {len(value)}")
        out = {}
        for name, v in value.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("+", "").isascii() \
                    or not name.replace("_", "").replace("+", "").isalnum() or len(name) > 64:
                raise ConfigError(_join(key, str(name)),
                                  "names may contain letters, digits, '_' and '+' (at most 64)")
            if name in meta.get("reserved", ()):
                raise ConfigError(_join(key, name), f"{name!r} is reserved (the output file uses "
                                                    f"/fits/{name} for {meta['reserved'][name]}); "
                                                    "choose another name")
            out[name] = _build(kind[1], v, _join(key, name))
        return out
    if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type in _CLASSES):
        cls = _CLASSES[f.type] if isinstance(f.type, str) else f.type
        return _build(cls, value, key)
    typ = f.type if not isinstance(f.type, str) else {"int": int, "float": float, "str": str,
                                                     "bool": bool}[f.type]
    v = _scalar(value, typ, key)
    _check_range(v, meta, key)
    if kind == "path":
        _check_path(v, meta, key)
    return v


def _check_path(value, meta, key):
    """A path key: not empty (unless allowed), no NUL byte, not longer than PATH_MAX."""
    if not value.strip():
        if meta.get("optional"):             # optional path keys default to '' (= not given)
            return
        raise ConfigError(key, "must be a non-empty path")
    if "\0" in value:
        raise ConfigError(key, f"must not contain a NUL byte, got {brief(value)}")
    if len(value.encode("utf-8", "surrogateescape")) > 4096:
        raise ConfigError(key, f"longer than 4096 bytes (PATH_MAX), got {brief(value)}")


def _join(a, b):
    return f"{a}.{b}" if a else b


@dataclass(frozen=True)
class ImportConfig:
    format: str = _f(doc="'glassbench' (one .npz per configuration: types, initial_positions, positions "
                         "(R, N, 3)) or 'bapst' (Bapst et al. 2020 pickles)",
                     choices=("glassbench", "bapst"))
    files: str = _f(doc="glob pattern of the files (natural order: …_2_ before …_10_; the first "
                        "snapshots.count are used)",
                    kind="path")
    first_type: int = _f(0, "type label of species A in the files (1 for LAMMPS-style labels)", lo=0,
                         hi=10**6)
    trusted: bool = _f(False, "bapst only: unpickle the files without restriction (pickles can run "
                              "code: only for files you trust); false = only numpy arrays, dicts, "
                              "lists and scalars are admitted")


_CLASSES = {c.__name__: c for c in (ModelConfig, MDConfig, SnapshotsConfig, TimesConfig, UnknownTimes,
                                    IsoConfig,
                                    DynamicsConfig, ShellBlock, DescriptorsConfig, AlphaGrid,
                                    CageConfig, InherentConfig, FeatureSet, FitsConfig,
                                    SelectionConfig, MLPConfig, ImportConfig, SweepModel,
                                    SweepMD, SweepIso, SweepSnapshots, SweepPoint)}


def _check_dynamical(cfg, name, fs):
    """A dynamical block (DYNAMICAL_BLOCKS) needs the set's allow_dynamical opt-in, and dw a
    read-out near its time (:func:`glasshpc.dynamics.debye_waller_near`)."""
    from . import dynamics
    key = f"fits.feature_sets.{name}.features"
    for b in fs.blocks:
        if b not in DYNAMICAL_BLOCKS:
            continue
        if not fs.allow_dynamical:
            raise ConfigError(key, f"block {b!r} of feature set {name!r} is dynamical (the local "
                                   "Debye–Waller factor is computed from the replicas' "
                                   "displacements, like the propensity it would predict), so the "
                                   "set is no prediction from structure; set "
                                   f"fits.feature_sets.{name}.allow_dynamical: true to fit it "
                                   "anyway, or drop the block")
        times = cfg.replica_times()
        if b == "dw" and not dynamics.debye_waller_near(times):
            t_dw = times[dynamics.debye_waller_index(times)]
            lo, hi = dynamics.DW_TIME / dynamics.DW_NEAR_FACTOR, \
                dynamics.DW_TIME * dynamics.DW_NEAR_FACTOR
            raise ConfigError(key, f"block 'dw' of feature set {name!r} needs a read-out time "
                                   f"near {dynamics.DW_TIME:g} τ (within a factor "
                                   f"{dynamics.DW_NEAR_FACTOR:g}: {lo:g}…{hi:g} τ); the closest "
                                   f"of iso.times is {t_dw:.4g} τ. Add such a time to iso.times "
                                   "or drop the block")


def _snapshot_names(cfg):
    """The snapshot files of a run in snapshot order (snapshots.source: files or imported:), or
    None when the snapshots are simulated."""
    if cfg.imported is not None:
        from .io.imported import imported_files
        return imported_files(cfg)
    if cfg.snapshots.source == "files":
        return snapshot_files(cfg.snapshots.path)
    return None


def resolve_snapshot_ids(cfg, entries, key):
    """Sorted int64 snapshot indices of ``entries`` (indices 0..S−1, or file names: the basename or
    the path as listed of a snapshot file, :func:`_snapshot_names`). Raises ConfigError naming
    ``key[i]`` for an index out of range, an unknown name, names without files, or a repeat."""
    import os
    S = cfg.snapshots.count
    names = None
    out = []
    seen = {}
    for i, v in enumerate(entries):
        if isinstance(v, str):
            if names is None:
                files = _snapshot_names(cfg)
                if files is None:
                    raise ConfigError(f"{key}[{i}]", f"file name {brief(v)} given, but the "
                                                     "snapshots are simulated (no files): give "
                                                     f"indices 0..{S - 1}")
                names = {}
                for j, path in enumerate(files[:S]):
                    names.setdefault(path, j)
                    names.setdefault(os.path.basename(path), j)
            if v not in names:
                raise ConfigError(f"{key}[{i}]", f"no snapshot file named {brief(v)}; the files "
                                                 f"are {brief([os.path.basename(p) for p in files[:S]])}")
            j = names[v]
        else:
            if not 0 <= v < S:
                raise ConfigError(f"{key}[{i}]", f"snapshot index must be in 0..{S - 1} "
                                                 f"(snapshots.count = {S}), got {v}")
            j = v
        if j in seen:
            raise ConfigError(f"{key}[{i}]", f"snapshot {j} appears twice (also {key}[{seen[j]}])")
        seen[j] = i
        out.append(j)
    return np.array(sorted(out), dtype=np.int64)


def _check_split(cfg, data):
    """At most one of fits.test_fraction (when given), test_snapshots, train_snapshots; explicit
    lists resolvable and leaving both a training and a held-out snapshot."""
    f = cfg.fits
    given = ((data or {}).get("fits") or {}) if isinstance(data, dict) else {}
    lists = [k for k in ("test_snapshots", "train_snapshots") if getattr(f, k)]
    if len(lists) == 2:
        raise ConfigError("fits.train_snapshots", "give either fits.test_snapshots or "
                                                  "fits.train_snapshots (the other snapshots are "
                                                  "the complement), not both")
    if lists and "test_fraction" in given:
        raise ConfigError("fits.test_fraction", f"give either fits.test_fraction or "
                                                f"fits.{lists[0]}, not both")
    if lists:
        key = f"fits.{lists[0]}"
        ids = resolve_snapshot_ids(cfg, getattr(f, lists[0]), key)
        if ids.size == cfg.snapshots.count:
            other = "training" if lists[0] == "test_snapshots" else "held-out"
            raise ConfigError(key, f"lists all {ids.size} snapshots: no {other} snapshot is left")


def _cross_checks(cfg, data=None):
    if cfg.softness is not None:
        return _softness_checks(cfg)
    k = cfg.parallel.engine_ranks
    if k != AUTO and k > 1 and (cfg.model.name not in ("kob_andersen", "harmonic_spheres")
                                or cfg.snapshots.source != "lammps" or cfg.imported is not None):
        raise ConfigError("parallel.engine_ranks", "engine groups (> 1) run the LAMMPS snapshot "
                                                   "stage of kob_andersen and harmonic_spheres "
                                                   f"only; use 1 or 'auto' for {cfg.model.name}"
                                                   " / snapshots from files or imported data")
    dt = cfg.md.timestep
    t = cfg.iso.times
    if not cfg.times_known and cfg.imported is None:
        raise ConfigError("iso.times", "'unknown' only with imported: (files that carry no times); a "
                                       "simulation needs its read-out times")
    first = t.start if isinstance(t, TimesConfig) else t[0] if cfg.times_known else dt
    if first < dt * (1 - 1e-9):
        raise ConfigError("iso.times", f"the first read-out time {first} is shorter than one "
                                       f"timestep (md.timestep = {dt})")
    for name in (() if cfg.descriptors.preset else ("radial", "angular")):
        for i, b in enumerate(getattr(cfg.descriptors, name)):
            if b.r_max < b.r_min:
                raise ConfigError(f"descriptors.{name}[{i}].r_max",
                                  f"must be ≥ r_min ({b.r_min}), got {b.r_max}")
            reach = b.r_max + cfg.descriptors.truncation * b.delta
            if reach >= cfg.box_length / 2:
                raise ConfigError(f"descriptors.{name}[{i}]",
                                  f"shells reach r_max + truncation·δ = {reach:.3g} σ, which must be "
                                  f"below half the box ({cfg.box_length / 2:.3g} σ for N = "
                                  f"{cfg.model.n_particles}, ρ = {cfg.model.density})")
    r_gen = cfg.descriptors.r_generation
    if r_gen != AUTO and r_gen >= cfg.box_length / 2:
        raise ConfigError("descriptors.r_generation",
                          f"must be below half the box ({cfg.box_length / 2:.3g} σ for N = "
                          f"{cfg.model.n_particles}, ρ = {cfg.model.density}): a longer radius "
                          f"reaches a particle's own periodic images; got {r_gen}")
    _md_checks(cfg.md, cfg.model.name, [cfg.box_length], "model")
    steps = cfg.replica_steps()[-1] if cfg.iso.times else 0
    if steps > MAX_RUN_STEPS:
        raise ConfigError("iso.times", f"the last read-out is {steps} timesteps after the start; "
                                       f"at most {MAX_RUN_STEPS} (one LAMMPS run); lower the stop "
                                       "time or raise md.timestep")
    for i, l in enumerate(cfg.descriptors.l):
        if not 0 <= l <= 20:
            raise ConfigError(f"descriptors.l[{i}]", f"must be in 0..20, got {l}")
    if not cfg.iso.store_displacements and cfg.imported is not None:
        raise ConfigError("iso.store_displacements", "must be true with imported: (the published "
                                                     "displacements are read, not simulated)")
    if cfg.cage.enabled and cfg.model.name == "bead_spring":
        raise ConfigError("cage.enabled", "cage states need a pair potential without bonds: "
                                          "kob_andersen, harmonic_spheres or hard_spheres")
    needs = {"is": "inherent", "dris": "inherent", "cs": "cage", "drcs": "cage",
             "voronoi_is": "inherent", "voronoi_cs": "cage"}
    for name, fs in cfg.fits.feature_sets.items():
        key = f"fits.feature_sets.{name}.features"
        blocks = fs.blocks
        for b in blocks:
            if b not in FEATURE_BLOCKS:
                raise ConfigError(key, f"unknown feature block {brief(b)}; allowed blocks, joined by "
                                       f"'+': {list(FEATURE_BLOCKS)}")
            if b == "dw" and not cfg.times_known:
                raise ConfigError(key, "block 'dw' is the Debye–Waller factor at the read-out closest "
                                       "to 1 τ, undefined with iso.times: unknown")
            if b in needs and not getattr(cfg, needs[b]).enabled:
                raise ConfigError(key, f"block {brief(b)} needs the {needs[b]} states: set "
                                       f"{needs[b]}.enabled: true")
            if b in VORONOI_BLOCKS:
                from .structure.voronoi import INSTALL_HINT, have_freud
                if not have_freud():
                    raise ConfigError(key, f"block {b!r} (Voronoi cells) needs the optional "
                                           f"extra 'voronoi' (freud-analysis), not installed: "
                                           f"{INSTALL_HINT}")
        if len(set(blocks)) != len(blocks):
            raise ConfigError(key, f"a block appears twice in {brief(fs.features)}")
        _check_dynamical(cfg, name, fs)
        if fs.generations > cfg.descriptors.generations:
            raise ConfigError(f"fits.feature_sets.{name}.generations",
                              f"must be ≤ descriptors.generations ({cfg.descriptors.generations})")
    if cfg.fits.alphas.max < cfg.fits.alphas.min:
        raise ConfigError("fits.alphas.max", f"must be ≥ fits.alphas.min ({cfg.fits.alphas.min})")
    _check_split(cfg, data)
    n_train = cfg.snapshots.count - cfg.test_snapshots()
    if n_train < cfg.fits.cv_folds:
        given = next((f"fits.{k} ({len(getattr(cfg.fits, k))} snapshots)"
                      for k in ("test_snapshots", "train_snapshots") if getattr(cfg.fits, k)),
                     f"fits.test_fraction = {cfg.fits.test_fraction}")
        raise ConfigError("fits.cv_folds",
                          f"needs at least cv_folds training snapshots, but snapshots.count = "
                          f"{cfg.snapshots.count} with {given} "
                          f"leaves {n_train}; add snapshots or lower cv_folds")
    from .models import get_model
    counts = get_model(cfg.model.name).counts(cfg.model.n_particles)
    if counts.min() < 1:
        raise ConfigError("model.n_particles",
                          f"too small: species counts would be {counts.tolist()}")
    _check_networks(cfg)


def _check_networks(cfg):
    """fits.mlp / fits.gnn need PyTorch (extra 'nn'); the GNN cutoff must fit in half the box."""
    wanted = [k for k, on in (("fits.mlp.layers", cfg.fits.mlp.layers > 0),
                              ("fits.gnn.enabled", cfg.fits.gnn.enabled)) if on]
    if not wanted:
        return
    try:
        import torch  # noqa: F401  (only when a network is asked for: the import takes ~1 s)
    except ImportError:
        raise ConfigError(wanted[0], "the network baselines need PyTorch, which is not "
                                     "installed: pip install 'glasshpc[nn]'") from None
    if cfg.fits.gnn.enabled and cfg.model.density is not None:
        from .models import get_model
        reach = cfg.fits.gnn.cutoff * float(max(get_model(cfg.model.name).sigma_self()))
        if reach >= cfg.box_length / 2:
            raise ConfigError("fits.gnn.cutoff", f"cutoff · σ_L = {reach:.4g} must be below half the "
                                                 f"box ({cfg.box_length / 2:.4g}): use more particles "
                                                 "or a shorter cutoff")


def _pair_cutoff(model_name):
    """Largest pair cutoff of a LAMMPS model (σ_AA), None for models without one (hard spheres)."""
    from .models import get_model
    m = get_model(model_name)
    if hasattr(m, "lj_cutoff"):
        return float(m.lj_cutoff)
    if hasattr(m, "cutoff"):
        return float(np.max(m.cutoff))
    return None


def _md_checks(md, model_name, boxes, where):
    """MD durations fit one LAMMPS run; the neighbour reach (pair cutoff + skin) stays below half of
    every box (LAMMPS accepts more, but then every atom sees its own periodic images: the ghost count
    and the neighbour lists grow as (r_c + skin)³ until memory runs out; skin 100 segfaulted)."""
    for name in ("melt_time", "nvt_time", "nve_time"):
        steps = getattr(md, name) / md.timestep
        if steps > MAX_RUN_STEPS:
            raise ConfigError(f"md.{name}", f"is {steps:.3g} timesteps of md.timestep = {md.timestep}; "
                                            f"at most {MAX_RUN_STEPS} (one LAMMPS run)")
    rc = _pair_cutoff(model_name)
    if rc is None:
        return
    L = min(boxes)
    if rc + md.skin >= L / 2:
        raise ConfigError("md.skin", f"pair cutoff {rc:.3g} σ + skin {md.skin} σ = {rc + md.skin:.3g} σ "
                                     f"must be below half the box ({L / 2:.3g} σ from the {where} "
                                     "N and density); lower the skin or use more particles")


_MODEL_ONLY = {"packing_fraction": ("hard_spheres",), "growth_rate": ("hard_spheres",),
               "chain_length": ("bead_spring",)}


def _model_checks(cfg):
    """Model-specific keys: refuse keys of other models, resolve hard-sphere density from the
    packing fraction. Returns the (possibly completed) Config."""
    m = cfg.model
    for key, owners in _MODEL_ONLY.items():
        if getattr(m, key) is not None and m.name not in owners:
            raise ConfigError(f"model.{key}", f"only for model {' or '.join(owners)}, "
                                              f"not {m.name}")
    if m.name == "hard_spheres":
        from .models import get_model
        hs = get_model("hard_spheres")
        if (m.density is None) == (m.packing_fraction is None):
            raise ConfigError("model.packing_fraction",
                              "hard_spheres needs exactly one of model.packing_fraction and "
                              "model.density")
        if m.packing_fraction is not None:
            m = dataclasses.replace(m, density=hs.density(m.n_particles, m.packing_fraction))
        eta = hs.packing_fraction(m.n_particles, m.density)
        if not eta < 0.64:
            raise ConfigError("model.density", f"packing fraction η = {eta:.4g} is beyond random "
                                               "close packing (must be < 0.64)")
    elif m.density is None:
        raise ConfigError("model.density", "required key is missing (number density ρ (σ⁻³))")
    if m.name == "bead_spring":
        length = m.chain_length if m.chain_length is not None else 5
        if m.n_particles % length:
            raise ConfigError("model.n_particles", f"must be a multiple of the chain length "
                                                   f"{length}, got {m.n_particles}")
    return dataclasses.replace(cfg, model=m)


MAX_YAML_BYTES = 1 << 20     # a config is a few kB; an explicit list of 10⁴ times is ~100 kB
MAX_YAML_DEPTH = 50          # the schema nests 4 deep; 50 leaves room and bounds the recursion


def _mark(mark):
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what a config never needs and an attacker would use: aliases
    (``*name``: an alias bomb expands to gigabytes), nesting deeper than MAX_YAML_DEPTH (the composer
    recurses), duplicate keys (PyYAML keeps the last one silently), and integers too long to convert.
    Errors are yaml.MarkedYAMLError with the line, so parse() reports them as '<yaml>' errors."""

    def __init__(self, stream, name):
        super().__init__(stream)
        self.name = name
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{str(event.anchor)[:40]}) are not allowed in a glasshpc config; "
                "write the value out", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, f"anchors (&{str(event.anchor)[:40]}) are not allowed in a glasshpc config",
                event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:       # unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        f"duplicate key {brief(key)}: first at line {first.line + 1}", first,
                        f"again at line {key_node.start_mark.line + 1}", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as err:       # e.g. more than 4300 digits
            raise yaml.constructor.ConstructorError(None, None, f"cannot read an integer: {err}",
                                                    node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _safe_yaml(text, name="<config>"):
    """The YAML data of ``text`` through :class:`_Loader`; ConfigError('<yaml>', …) with the line."""
    loader = None
    try:
        loader = _Loader(text, name)      # the reader refuses non-printable characters already
        return loader.get_single_data()
    except yaml.YAMLError as err:
        msg = _yaml_message(err)
        where = "" if name in msg else f"{name}: "
        raise ConfigError("<yaml>", f"{where}not valid YAML: {msg}") from None
    except RecursionError:          # cannot happen below MAX_YAML_DEPTH; kept as a last guard
        raise ConfigError("<yaml>", f"{name}: nesting too deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_message(err):
    text = str(err)
    return text if len(text) <= 600 else text[:600] + "…"


def parse(text, name="<config>"):
    """Config from YAML text; raises ConfigError naming the key, or
    ConfigError('<yaml>', …) naming the line for YAML errors, aliases, deep nesting and duplicate
    keys (see :class:`_Loader`)."""
    data = _safe_yaml(text, name)
    if isinstance(data, dict) and "softness" in data:   # the softness stages ([SOFT])
        _softness_data_checks(data)
        if "descriptors" not in data:
            data = dict(data, descriptors=dict(SOFTNESS_DESCRIPTORS))
    cfg = _build(Config, data, "")
    cfg = _model_checks(cfg)
    cfg = _resolve_snapshot_source(cfg)
    _cross_checks(cfg, data)
    _check_descriptor_preset(cfg, data)
    _sweep_checks(cfg, data)
    if cfg.softness is not None:
        _softness_sweep_checks(cfg)
    return cfg


def _sweep_checks(cfg, data):
    """``state_points:``: entries that override something, no snapshots from files or imported data
    (those fix the state point), and every state point valid as a single-state config."""
    k = cfg.fits.train_state_point
    if k is not None:
        if not cfg.state_points:
            raise ConfigError("fits.train_state_point", "only with state_points: (a sweep)")
        if k >= len(cfg.state_points):
            raise ConfigError("fits.train_state_point", f"must be a state point index 0.."
                                                        f"{len(cfg.state_points) - 1}, got {k}")
    if not cfg.state_points:
        if isinstance(data, dict) and "state_points" in data:
            raise ConfigError("state_points", "must be a non-empty list of state points (or "
                                              "leave the key out for one state point)")
        return
    if cfg.imported is not None:
        raise ConfigError("state_points", "not with imported: (the files fix the state point); "
                                          "run one config per imported data set")
    if cfg.snapshots.source != "lammps":
        raise ConfigError("state_points", "not with snapshots.source: files (the files fix the "
                                          "state point); run one config per set of files")
    for k, point in enumerate(cfg.state_points):
        if point.snapshots is not None and cfg.softness is None:
            raise ConfigError(f"state_points[{k}].snapshots", "only in a softness run: the "
                                                              "propensity summaries compare state "
                                                              "points snapshot for snapshot")
        if not state_point_overrides(point):
            raise ConfigError(f"state_points[{k}]", "overrides nothing; give model.temperature, "
                                                    "model.density or model.packing_fraction "
                                                    "(and optionally md / iso times)")
    configs = state_point_configs(cfg)
    if cfg.fits.train_state_point is not None:   # (k is the loop index above)
        counts = [c.replica_steps().size for c in configs]
        if len(set(counts)) > 1:
            raise ConfigError("fits.train_state_point", f"the models of read-out t apply to read-out "
                                                        f"t of every state point, but the state "
                                                        f"points have {counts} read-outs; give "
                                                        "every iso.times the same count")


def read_text(path):
    """The text of a YAML file: at most MAX_YAML_BYTES, no NUL byte, valid UTF-8 (ConfigError naming
    the file, line and byte otherwise)."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError("<yaml>", f"{path}: larger than {MAX_YAML_BYTES} bytes; a config is a small "
                                    "text file")
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise ConfigError("<yaml>", f"{path} line {line} (byte {nul}): NUL byte; "
                                    "a binary file, not a YAML config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError("<yaml>", f"{path} line {line} (byte {err.start}): not valid UTF-8 "
                                    f"({raw[err.start:err.start + 1]!r}); save the file as UTF-8") from None


def read_yaml(path):
    """The YAML data of a file through the same checks as a config (UTF-8, no aliases, no
    duplicate keys, bounded nesting; ConfigError naming the file and line), without the schema."""
    return _safe_yaml(read_text(path), str(path))


def load(path):
    """Read and validate a YAML file (:func:`read_text`, :func:`parse`). Returns (Config, yaml_text)."""
    text = read_text(path)
    return parse(text, str(path)), text


# Example values of the keys without a default: --describe prints them so that its output is a config
# that parse() accepts (a KA run of 1000 particles).
DESCRIBE_EXAMPLES = {"output": "out.h5", "model.name": "kob_andersen", "model.n_particles": 1000,
                     "model.density": 1.2, "model.temperature": 0.8, "snapshots.count": 20,
                     "iso.replicas": 30, "iso.times": {"start": 0.01, "stop": 100.0, "count": 20}}


def _plain(value):
    """YAML-ready value: dataclasses → dicts, tuples → lists (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _yaml_inline(value):
    text = yaml.safe_dump(_plain(value), default_flow_style=True, allow_unicode=True, width=10**6,
                          sort_keys=False).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def _doc_of(f):
    m = f.metadata
    doc = m.get("doc", "")
    if m.get("lo") is not None or m.get("hi") is not None:
        lo = "" if m.get("lo") is None else f"{'(' if m['lo_open'] else '['}{m['lo']:g}"
        hi = "" if m.get("hi") is None else f"{m['hi']:g}{')' if m['hi_open'] else ']'}"
        doc += f"; range {lo or '(−∞'}, {hi or '∞)'}"
    if m.get("choices"):
        doc += f"; one of {', '.join(map(str, m['choices']))}"
    return doc


def _describe_walk(cls, prefix, depth, commented, lines, examples):
    import textwrap
    for f in fields(cls):
        key = _join(prefix, f.name)
        t = _CLASSES.get(f.type) if isinstance(f.type, str) else f.type
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        lead = ("# " if commented else "") + "  " * depth
        doc = _doc_of(f)
        section = dataclasses.is_dataclass(t)
        if f.metadata.get("required_unless"):     # required in the file --describe prints
            missing = True
        if section and f.default is None and not missing:
            doc += " (optional section, not set by default: remove the '# ' to use it)"
        elif key in examples:
            doc += " (required: example value)" if missing else " (no default: example value)"
        elif missing:
            doc += " (required)"
        elif f.default is None:
            doc += " (not set by default)"
        for chunk in textwrap.wrap(doc, 100 - len(lead)) or [""]:
            lines.append(f"{lead}# {chunk}")
        if section:
            off = f.default is None and not missing
            lines.append(f"{'# ' if off and not commented else ''}{lead}{f.name}:")
            _describe_walk(t, key, depth + 1, commented or off, lines, examples)
            continue
        if f.metadata.get("example") is not None:   # a key whose default is its absence
            lines.append(f"{lead}# {f.name}: {f.metadata['example']}")
            continue
        if key in examples:
            value = examples[key]
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif missing or f.default is None:
            lines.append(f"{lead}# {f.name}:")
            continue
        else:
            value = f.default
        lines.append(f"{lead}{f.name}: {_yaml_inline(value)}")


def describe():
    """Every key with its default and meaning, as a YAML document (the documentation of the defaults):
    ``yaml.safe_load`` reads it and :func:`parse` accepts it — keys without a default carry the example values
    of ``DESCRIBE_EXAMPLES``; optional sections and keys not set by default are commented out (``softness:`` among them:
    with it the run has no ``iso:`` section)."""
    lines = ["# glasshpc configuration: every key, its default and meaning (python -m glasshpc.run --describe).",
             "# Reduced LJ units of species A (σ_AA, ε_AA, τ). Valid YAML: save it, edit, run.", ""]
    _describe_walk(Config, "", 0, False, lines, DESCRIBE_EXAMPLES)
    return "\n".join(lines) + "\n"


# -- snapshots from files (issue 7) -------------------------------------------------------------

def _type_map(value, key):
    """{file type (int or name) → species name}; keys normalised to str ('1', 'Ar')."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(key, f"must be a non-empty mapping file type → species name, got {brief(value)}")
    if len(value) > MAX_ITEMS:
        raise ConfigError(key, f"at most {MAX_ITEMS} file types, got {len(value)}")
    out, given = {}, {}
    for k, v in value.items():
        if isinstance(k, bool) or not isinstance(k, (int, str)) or str(k).strip() == "":
            raise ConfigError(f"{key}.{k}", "file types must be integers or names")
        if not isinstance(v, str):
            raise ConfigError(f"{key}.{k}", f"must be a species name (string), got {brief(v)}")
        if str(k) in out:      # {1: A, '1': B}: both are file type '1' (LAMMPS writes no quotes)
            raise ConfigError(f"{key}.{k}", f"the keys {brief(given[str(k)])} and {brief(k)} both "
                                            f"name file type '{k}' (mapped to {brief(out[str(k)])} "
                                            f"and {brief(v)}); give each type once")
        out[str(k)], given[str(k)] = v, k
    return out


def snapshot_files(path):
    """Sorted (natural order: snap2 before snap10) list of files for ``snapshots.path``: every
    non-hidden regular file of a folder, or the matches of a glob pattern."""
    import glob
    import os
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in os.listdir(path) if not n.startswith(".")]
    else:
        files = glob.glob(path)
    files = [f for f in files if os.path.isfile(f)]
    return sorted(files, key=natural_key)


def natural_key(name):
    """Sort key of natural order: digit runs compare as numbers (snap2 before snap10, …_2_ before …_10_);
    ties between equal numbers written differently (02, 2) fall back to the text."""
    import re
    parts = re.split(r"(\d+)", name)
    # digit runs sit at the odd positions of the split: numbers only ever meet numbers
    return [int(t) if i % 2 else t for i, t in enumerate(parts)], name


def _resolve_snapshot_source(cfg):
    """Check the snapshot-source keys; with source 'files' set snapshots.count from the files."""
    sn = cfg.snapshots
    if sn.source == "lammps":
        for name in ("path", "type_map"):
            if getattr(sn, name):
                raise ConfigError(f"snapshots.{name}", "only used with snapshots.source: files")
        if sn.count is None:
            raise ConfigError("snapshots.count", "required key is missing (independent "
                                                 "equilibrated snapshots)")
        return cfg
    if not sn.path:
        raise ConfigError("snapshots.path", "required with snapshots.source: files (a folder or "
                                            "a glob pattern)")
    if sn.type_map is None:
        raise ConfigError("snapshots.type_map", "required with snapshots.source: files, e.g. "
                                                "{1: A, 2: B}")
    from .models import get_model
    species = get_model(cfg.model.name).species
    for k, v in sn.type_map.items():
        if v not in species:
            raise ConfigError(f"snapshots.type_map.{k}", f"unknown species {brief(v)}; the model "
                                                         f"{cfg.model.name} has {list(species)}")
    files = snapshot_files(sn.path)
    if not files:
        raise ConfigError("snapshots.path", f"no files match {brief(sn.path)}")
    if sn.count is not None and sn.count != len(files):
        raise ConfigError("snapshots.count", f"is {sn.count} but {brief(sn.path)} holds {len(files)} "
                                             "files; omit count or make them agree")
    return dataclasses.replace(cfg, snapshots=dataclasses.replace(sn, count=len(files)))


def _check_descriptor_preset(cfg, data):
    """descriptors.preset excludes the explicit radial/angular/l blocks. (Shells reaching beyond half the box are
    fine: compute_descriptors then sums over all periodic images by replicating the box.)"""
    d = cfg.descriptors
    if d.preset is None:
        return
    given = [k for k in ("radial", "angular", "l") if k in ((data or {}).get("descriptors") or {})]
    if given:
        raise ConfigError(f"descriptors.{given[0]}", f"give either descriptors.preset ({brief(d.preset)}) or "
                                                     "explicit radial/angular/l blocks, not both")


# -- the softness / energy-barrier stages ([SOFT]; SCIENCE.md §2, §5, §6) --------------------------
# A config with a ``softness:`` section runs the softness stages (glasshpc/softness_parts.py) on the
# shared snapshots of every state point (``state_points:``) instead of the propensity stages.

SOFTNESS_MODELS = ("svc", "linear_svr", "ridge", "rbf_svr", "mlp")
INDICATORS = ("phop", "csd")


@dataclass(frozen=True)
class TrajectoryConfig:
    duration: float = _f(doc="trajectory length after the snapshot (τ)", lo=0.0, lo_open=True)
    frame_interval: float = _f(1.0, "time between frames (τ); [SOFT]: 1", lo=0.0, lo_open=True)
    ensemble: str = _f("nvt", "Nosé–Hoover NVT ([SOFT]) or NVE (hard spheres: nve only, EDMD)",
                       choices=("nvt", "nve"))
    measure_frames: int = _f(10, "structure frames t0 per trajectory at which P_R (rearranging "
                                 "in (t0, t0 + window]) is measured", lo=1, hi=MAX_TIMES)


@dataclass(frozen=True)
class RearrangementConfig:
    half_window: float = _f(5.0, "p_hop windows A = [t − w, t], B = [t, t + w] (τ)", lo=0.0,
                            lo_open=True)
    p_c: float = _f(0.2, "p_hop > p_c: rearranging (σ²) [SOFT]", lo=0.0, lo_open=True)
    p_l: float = _f(0.0085, "p_hop < p_l for quiet_time: non-rearranging (σ²) [SOFT]", lo=0.0,
                    lo_open=True)
    quiet_time: float = _f(120.0, "minimum duration of a non-rearranging run (τ)", lo=0.0,
                           lo_open=True)
    lag: float = _f(2.0, "structure taken at t − lag for rearranging examples (τ)", lo=0.0)
    window: float = _f(2.0, "P_R window after the structure frame (τ)", lo=0.0, lo_open=True)
    csd_threshold: float = _f(0.0966, "indicator csd: CSD > this is rearranging (σ²) [SOFT] "
                                      "App. A", lo=0.0, lo_open=True)
    csd_quiet: float = _f(0.01, "indicator csd: CSD < this for quiet_time is non-rearranging (σ²)",
                          lo=0.0, lo_open=True)
    csd_steps: int = _f(10, "indicator csd: frames of the cumulative squared displacement "
                            "([SOFT] App. A: 10 steps of 1 τ)", lo=1, hi=MAX_TIMES)


@dataclass(frozen=True)
class TrainingConfig:
    state_point: object = _f(AUTO, "index of the state point of the softness training set "
                                   "(state_points: order; 0 without state_points:); 'auto' = the "
                                   "coldest (ties: the densest)", kind="index_or_auto")
    rearranging: int = _f(3800, "rearranging examples (balanced with non-rearranging) [SOFT]",
                          lo=1, hi=10**8)
    fluidity_min_temperature: float = _f(1.0, "fluidity classifiers at the other state points "
                                              "with T ≥ this", lo=0.0)
    fluidity_fraction: float = _f(3.3e-4, "extreme tail fraction of the indicator per side [SOFT]",
                                  lo=0.0, hi=0.5, lo_open=True, hi_open=True)
    fluidity_examples: int = _f(5200, "examples per class of a fluidity set [SOFT]", lo=1, hi=10**8)


@dataclass(frozen=True)
class RearrangementProbabilityConfig:
    replicas: int = _f(0, "short isoconfigurational replicas per snapshot (0 = no p_r); "
                          "[SOFT]: 10⁴–10⁶", lo=0, hi=MAX_REPLICAS)
    replicas_per_task: int = _f(10, "replicas run by one task", lo=1, hi=MAX_REPLICAS)
    duration: float = _f(30.0, "replica length (τ)", lo=0.0, lo_open=True)
    by: float = _f(25.0, "rearranged (indicator above threshold) at some t ≤ by (τ)", lo=0.0,
                   lo_open=True)
    state_points: tuple = _f(doc="indices of the state points with p_r (empty = all)",
                             kind=("list", int), factory=tuple)
    test_snapshots: int = _f(1, "training-state snapshots held out for the regressors' Pearson ρ",
                             lo=0, hi=MAX_SNAPSHOTS)


@dataclass(frozen=True)
class BinsConfig:
    min: float = _f(-3.0, "lowest bin edge of x", )
    max: float = _f(3.0, "highest bin edge of x")
    count: int = _f(12, "equal-width bins", lo=1, hi=MAX_ITEMS)


@dataclass(frozen=True)
class BarriersConfig:
    form: str = _f("arrhenius", "ln P_R = Σ − ΔE/T or the Kramers form", choices=("arrhenius",
                                                                                  "kramers"))
    max_temperature: float = _f(0.9, "fit only state points with T ≤ this (supercooled)", lo=0.0,
                                lo_open=True)
    bins: BinsConfig = _f(doc="bins of the Z-score x (and of S)", factory=BinsConfig)
    min_count: int = _f(20, "bins with fewer particles at a T are left out of the fits", lo=1,
                        hi=MAX_PARTICLES)


@dataclass(frozen=True)
class SoftnessConfig:
    trajectory: TrajectoryConfig = _f(doc="trajectories for the indicator and P_R")
    indicator: str = _f("phop", "rearrangement indicator: p_hop ([SOFT] §2.2.2) or the "
                                "cumulative squared displacement CSD ([SOFT] App. A); thresholds "
                                "in softness.rearrangement", choices=INDICATORS)
    rearrangement: RearrangementConfig = _f(doc="indicator windows and thresholds",
                                            factory=RearrangementConfig)
    species: str = _f("A", "species the models are trained and applied on")
    training: TrainingConfig = _f(doc="softness / fluidity training sets", factory=TrainingConfig)
    p_r: RearrangementProbabilityConfig = _f(doc="isoconfigurational p_r",
                                             factory=RearrangementProbabilityConfig)
    C: float = _f(1e-2, "soft-margin penalty of the softness SVC [SOFT]", lo=0.0, lo_open=True)
    models: tuple = _f(doc="models: " + ", ".join(SOFTNESS_MODELS), kind=("list", str),
                       factory=lambda: SOFTNESS_MODELS)
    rfe_counts: tuple = _f(doc="feature counts of the RFE curve (empty = none)",
                           kind=("list", int), factory=tuple)
    barriers: BarriersConfig = _f(doc="energy-barrier fits", factory=BarriersConfig)


_CLASSES.update({c.__name__: c for c in (TrajectoryConfig, RearrangementConfig, TrainingConfig,
                                         RearrangementProbabilityConfig, BinsConfig,
                                         BarriersConfig, SoftnessConfig)})

# sections of a propensity run that a softness run does not use (refused when given)
_NOT_WITH_SOFTNESS = {"iso": "the p_r replicas of a softness run are softness.p_r",
                      "fits": "the softness models are softness.models",
                      "imported": "a softness run simulates its trajectories",
                      "cage": "cage states are not softness features",
                      "inherent": "inherent states are not softness features",
                      "dynamics": "a softness run computes no propensity"}
# the softness features when no descriptors: section is given ([SOFT] §3.2.3: M = 135)
SOFTNESS_DESCRIPTORS = {"preset": "softness_135", "generations": 0}


def softness_temperatures(cfgs):
    """(P,) float64 temperatures of the state-point configs ``cfgs``."""
    return np.array([c.model.temperature for c in cfgs], dtype=np.float64)


def softness_training_state(cfgs, choice):
    """Index of the training state point: ``choice`` (an int) or, for 'auto', the coldest (ties:
    the densest, e.g. hard spheres)."""
    if choice != AUTO:
        return int(choice)
    return int(min(range(len(cfgs)), key=lambda k: (cfgs[k].model.temperature,
                                                    -cfgs[k].model.density)))


def _softness_data_checks(data):
    """Keys of the former softness schema (before the one pipeline) and sections a softness run
    does not use, refused naming the key and what replaces it."""
    s = data.get("softness")
    if not isinstance(s, dict):
        return
    if isinstance(s.get("indicator"), dict):
        raise ConfigError("softness.indicator", f"is one of {', '.join(INDICATORS)}; its "
                                                "parameters (half_window, p_c, p_l, quiet_time, "
                                                "lag, window) are keys of softness.rearrangement")
    if "state_points" in s:
        raise ConfigError("softness.state_points", "state points are the top-level state_points: "
                                                   "list, e.g. [{model: {temperature: 0.6}, "
                                                   "snapshots: {count: 2}}]")
    if "features" in s:
        raise ConfigError("softness.features", "the softness features are the descriptors: "
                                               "section (default {preset: softness_135, "
                                               "generations: 0}, the sharp-shell Q_l of [SOFT])")
    for key, why in _NOT_WITH_SOFTNESS.items():
        if key in data:
            raise ConfigError(key, f"not in a softness run ({why})")


def _softness_checks(cfg):
    """Checks of one state point's config with a ``softness:`` section (every key that could
    fail hours into the run)."""
    from .models import get_model
    s = cfg.softness
    model = get_model(cfg.model.name)
    k = cfg.parallel.engine_ranks
    if k != 1:
        raise ConfigError("parallel.engine_ranks", "must be 1 in a softness run (one engine per "
                                                   "rank runs the trajectories)")
    if s.species not in model.species:
        raise ConfigError("softness.species", f"must be one of the species of {cfg.model.name}: "
                                              f"{list(model.species)}, got {brief(s.species)}")
    if cfg.model.name == "hard_spheres" and s.trajectory.ensemble != "nve":
        raise ConfigError("softness.trajectory.ensemble", "hard_spheres (event-driven MD) runs "
                                                          "nve only")
    d = cfg.descriptors
    if d.generations > 0 and d.r_generation == AUTO:
        raise ConfigError("descriptors.r_generation", "give r_c of the generation averages in σ "
                                                      "in a softness run (or generations: 0)")
    for name in (() if d.preset else ("radial", "angular")):
        for i, b in enumerate(getattr(d, name)):
            if b.r_max < b.r_min:
                raise ConfigError(f"descriptors.{name}[{i}].r_max",
                                  f"must be ≥ r_min ({b.r_min}), got {b.r_max}")
    for i, l in enumerate(d.l):
        if not 0 <= l <= 20:
            raise ConfigError(f"descriptors.l[{i}]", f"must be in 0..20, got {l}")
    _md_checks(cfg.md, cfg.model.name, [cfg.box_length], "model")
    counts = model.counts(cfg.model.n_particles)
    if counts.min() < 1:
        raise ConfigError("model.n_particles",
                          f"too small: species counts would be {counts.tolist()}")
    for i, m in enumerate(s.models):
        if m not in SOFTNESS_MODELS:
            raise ConfigError(f"softness.models[{i}]", f"must be one of "
                                                       f"{', '.join(SOFTNESS_MODELS)}; got {brief(m)}")
    if "svc" not in s.models:
        raise ConfigError("softness.models", "must contain 'svc' (b_best and σ_tr use it)")
    ind, tr = s.rearrangement, s.trajectory
    for key, val in (("softness.trajectory.duration", tr.duration),
                     ("softness.rearrangement.half_window", ind.half_window),
                     ("softness.rearrangement.quiet_time", ind.quiet_time),
                     ("softness.rearrangement.lag", ind.lag),
                     ("softness.rearrangement.window", ind.window),
                     ("softness.p_r.duration", s.p_r.duration), ("softness.p_r.by", s.p_r.by)):
        q = val / tr.frame_interval
        if abs(q - round(q)) > 1e-6:
            raise ConfigError(key, f"must be a whole number of frame intervals "
                                   f"({tr.frame_interval} τ), got {val}")
    fi = tr.frame_interval / cfg.md.timestep
    if abs(fi - round(fi)) > 1e-6:
        raise ConfigError("softness.trajectory.frame_interval",
                          f"must be a whole number of timesteps ({cfg.md.timestep})")
    # the indicator is defined on frames [lead, F − 1 − tail] (softness_parts.indicator_range)
    if s.indicator == "phop":
        lead = tail = ind.half_window
        what = "2·half_window + window"
    else:
        lead, tail = ind.csd_steps * tr.frame_interval, 0.0
        what = "csd_steps·frame_interval + window"
    if tr.duration < lead + tail + ind.window + tr.frame_interval:
        raise ConfigError("softness.trajectory.duration",
                          f"must exceed {what} = {lead + tail + ind.window} τ")
    if s.p_r.replicas and not lead <= s.p_r.by <= s.p_r.duration - tail:
        raise ConfigError("softness.p_r.by", f"the indicator at t ≤ by needs {lead} ≤ by ≤ "
                                             f"{s.p_r.duration - tail} (τ)")
    if s.p_r.replicas and s.p_r.replicas % s.p_r.replicas_per_task:
        raise ConfigError("softness.p_r.replicas_per_task",
                          f"must divide p_r.replicas ({s.p_r.replicas})")
    if s.barriers.bins.max <= s.barriers.bins.min:
        raise ConfigError("softness.barriers.bins.max", "must exceed bins.min")
    for i, c in enumerate(s.rfe_counts):
        if not 1 <= c <= 10**5:
            raise ConfigError(f"softness.rfe_counts[{i}]", f"must be in 1..100000, got {c}")


def _softness_sweep_checks(cfg):
    """Checks across the state points of a softness run (indices, distinct state points)."""
    s = cfg.softness
    cfgs = state_point_configs(cfg) if cfg.state_points else [cfg]
    P = len(cfgs)
    pts = [(c.model.temperature, c.model.density) for c in cfgs]
    if len(set(map(tuple, np.round(pts, 12).tolist()))) != P:
        raise ConfigError("state_points", "the state points of a softness run must differ in "
                                          "temperature or density")
    t = s.training.state_point
    if t != AUTO and not 0 <= t < P:
        raise ConfigError("softness.training.state_point", f"must be 'auto' or a state point "
                                                           f"index 0..{P - 1}, got {t}")
    for i, k in enumerate(s.p_r.state_points):
        if not 0 <= k < P:
            raise ConfigError(f"softness.p_r.state_points[{i}]",
                              f"must be a state point index 0..{P - 1}, got {k}")
