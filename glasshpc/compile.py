"""``python -m glasshpc.compile [--cache-dir DIR]``: compile every numba kernel into the cache.

Run it once before a job (the templates in ``jobs/`` do): the ranks of the run then load the
kernels (≈ 1 s per process) instead of each compiling them (≈ 70 s per process on an empty cache).
The cache is ``--cache-dir``, else ``GLASSHPC_CACHE_DIR``, else ``NUMBA_CACHE_DIR``, else the
install's ``__pycache__`` folders (glasshpc/jitcache.py; README "Running on a cluster").

Every kernel is compiled by calling the public function the pipeline calls, once, on a tiny real
input of the dtypes the stages pass (float64 positions, int32 types from the store, float64 box),
so the signatures in the cache are exactly the ones a run asks for (numba compiles one machine
code per argument-type signature; a different dtype would compile again during the run).
Exit code 0 when every cached kernel of the package has a signature in the cache, 1 otherwise.
"""
import argparse
import os
import sys
import time

from .jitcache import KERNEL_MODULES


def _lattice(n_side, density, rng, jitter=0.02):
    """(n_side³, 3) jittered simple-cubic positions at number density ``density``, (3,) box."""
    import numpy as np
    n = n_side ** 3
    box = np.full(3, (n / density) ** (1.0 / 3.0))
    a = box[0] / n_side
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (g + 0.5) * a + rng.uniform(-jitter, jitter, (n, 3)) * a
    return np.ascontiguousarray(pos, dtype=np.float64), box


def _structure(rng):
    """Cell lists, SANN, descriptors (radial, angular Gaussian and sharp, generations), g(r), S(q)."""
    import numpy as np
    from .structure.descriptors import (DescriptorSpec, compute_descriptors, generation_average,
                                        radial_descriptors, radial_distribution)
    from .structure.neighbors import NeighborList
    from .structure.sann import sann_neighbors
    pos, box = _lattice(6, 1.2, rng, jitter=0.1)
    types = (np.arange(len(pos)) % 5 == 0).astype(np.int32)        # store dtype
    NeighborList(pos, box, 1.5)
    sann_neighbors(pos, box)
    for kind in ("gaussian", "sharp"):
        spec = DescriptorSpec(radial_r=[0.9, 1.2], radial_delta=[0.1, 0.1], angular_r=[1.0],
                              angular_delta=[0.3], angular_l=(2, 6), n_species=2, generations=1,
                              r_generation=1.4, angular_kind=kind)
        compute_descriptors(pos, types, box, spec)
    radial_descriptors(NeighborList(pos, box, spec.radial_cutoff()), types, spec)  # public API
    generation_average(np.ones((len(pos), 2)), pos, box, 1.4, 1)
    radial_distribution([pos], [types], [box])     # the kernels of second_minimum_gAA
    from .dynamics import q_grid, structure_factor
    structure_factor(pos[types == 0], box, q_grid())   # S(q) of the snapshot stage (NUFFT)
    # Voronoi surfaces: the numba part only (freud, which gives the cells, is an optional extra);
    # one tetrahedral cell, the argument types voronoi_features passes
    from .structure.voronoi import FACE_TOLERANCE, _surface_areas
    tet = np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    _surface_areas(np.array([0, 4], np.int64), tet, np.array([0, 1], np.int64),
                   np.array([[-2.0, -2, -2]]) / 3.0, FACE_TOLERANCE)   # the face opposite (1,1,1)


def _cage(rng):
    """Cage-state MC (Voronoi and sphere cages) and total energies for every model's potential."""
    import numpy as np
    from .models import cage_potential
    from .states.cage import cage_neighbors, cage_state, in_cage, total_energy
    for name, density in (("kob_andersen", 1.2), ("harmonic_spheres", 0.6),
                          ("hard_spheres", 0.5)):
        pot = cage_potential(name)
        pos, box = _lattice(6, density, rng)
        types = (np.arange(len(pos)) % 4 == 0).astype(np.int32)
        total_energy(pos, types, box, pot)
        for cage in ("voronoi", "sphere"):
            cage_state(pos, types, box, pot, 0.5, 1, 1, 7, cage=cage)
    off, nb, _ = cage_neighbors(pos, box)
    in_cage(pos[0], 0, pos, box, off, nb, np.ones(len(pos)))


def _hard_spheres(rng):
    """EDMD (growth, NVE replicas), effective potential, FIRE, the input overlap check."""
    import numpy as np
    from .io.snapshots import check_overlaps
    from .md.edmd import EdmdEngine
    from .models import get_model
    model = get_model("hard_spheres")
    engine = EdmdEngine(model, 0.005)
    n = 128
    pos, types, box = engine.prepare_snapshot(n, model.density(n, 0.45), 1.0, rng, nve_time=0.2)
    # 65 τ then 1 τ: the second read-out starts past the 64 τ clock re-base (_rebase)
    engine.run_replica(pos, types, box, 1.0, rng, np.array([13000, 13200]))
    engine.static_properties(pos, types, box)
    engine.inherent_state(pos, types, box, 1e-3, 100000)
    check_overlaps(pos, types, box, model)


def _chains_and_hops(rng):
    """Bead-spring chain growth; p_hop, CSD and quiet-run search of the softness sweep."""
    import numpy as np
    from . import rearrangements as rr
    from .md.bead_spring import build_chains
    build_chains(40, 10, np.full(3, 4.0), 0.97, rng)
    frames = np.cumsum(rng.normal(0.0, 0.05, (30, 8, 3)), axis=0).astype(np.float32)
    p = rr.p_hop(frames, 1.0, 2.0)
    rr.csd(frames, 3)
    rr.rearranging_candidates(p, lag=1.0)
    rr.quiet_candidates(p, quiet_time=5.0)


GROUPS = (("structure", "neighbours, SANN, descriptors", _structure),
          ("cage", "cage-state MC (LJ, harmonic, hard)", _cage),
          ("hard_spheres", "hard-sphere EDMD, FIRE, overlap check", _hard_spheres),
          ("chains", "bead-spring chains, p_hop, CSD", _chains_and_hops))


def load(names):
    """Load the kernel groups ``names`` (first items of :data:`GROUPS`) into this process: from the
    cache when it holds them (≈ 0.3–1.5 s per group), else compiled. A run calls it at start-up so
    that this fixed cost per process is paid once, before the stages, and not inside the first
    task of a stage (where it would count against that stage's parallel efficiency).
    Returns the wall time (s). Raises KeyError for an unknown group name."""
    import numpy as np
    known = {name: group for name, _, group in GROUPS}
    todo = [known[n] for n in names]
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for group in todo:
        group(rng)
    return time.perf_counter() - t0


def dispatchers():
    """{qualified name: numba dispatcher} of every cached kernel in KERNEL_MODULES (imported)."""
    import importlib
    from numba.core.dispatcher import Dispatcher
    out = {}
    for modname in KERNEL_MODULES:
        mod = importlib.import_module(modname)
        for name, obj in vars(mod).items():
            if isinstance(obj, Dispatcher) and obj.__module__ == modname \
                    and getattr(obj, "_cache", None) is not None \
                    and type(obj._cache).__name__ != "NullCache":
                out[f"{modname}.{name}"] = obj
    return out


def counts(kernels):
    """(signatures loaded from the cache, signatures compiled) over ``kernels``."""
    hits = sum(sum(d.stats.cache_hits.values()) for d in kernels.values())
    misses = sum(sum(d.stats.cache_misses.values()) for d in kernels.values())
    return hits, misses


def cached_signatures(dispatcher):
    """Number of signatures in the cache index of ``dispatcher`` that are valid for its current
    source (numba's index file; 0 if absent or written for another version of the source)."""
    try:
        return len(dispatcher._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001  (numba internals: treat as absent)
        return 0


def uncached(kernels):
    """Names of kernels without a signature in the cache (inline='always' helpers excluded: numba
    inlines them into their callers and never compiles them on their own). A kernel only called
    by other kernels gets no signature when its callers are loaded from the cache, so the cache
    index is what counts."""
    return sorted(name for name, d in kernels.items()
                  if d.targetoptions.get("inline") != "always" and not cached_signatures(d))


def compile_all(log=print):
    """Call every kernel group once; returns dict(loaded, compiled, seconds, missing, cache)."""
    import numpy as np
    from . import jitcache
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    kernels = dispatchers()
    for _, title, group in GROUPS:
        t = time.perf_counter()
        before = counts(kernels)
        group(rng)
        hits, misses = (a - b for a, b in zip(counts(kernels), before))
        log(f"  {title}: {misses} signatures compiled, {hits} loaded "
            f"({time.perf_counter() - t:.1f} s)")
    loaded, compiled = counts(kernels)
    paths = sorted({d.stats.cache_path for d in kernels.values() if d.signatures})
    return dict(loaded=loaded, compiled=compiled, seconds=time.perf_counter() - t0,
                missing=uncached(kernels), cache=jitcache.status, paths=paths)


def main(argv=None):
    """Command line; returns the exit code (0 every kernel cached, 1 a kernel not exercised)."""
    ap = argparse.ArgumentParser(prog="python -m glasshpc.compile",
                                 description=__doc__.split("\n")[0].split(": ", 1)[1])
    ap.add_argument("--cache-dir", help="cache folder (default: GLASSHPC_CACHE_DIR, else "
                                        "NUMBA_CACHE_DIR, else the install's __pycache__)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    args = ap.parse_args(argv)
    from . import jitcache
    if args.cache_dir is not None:
        if any(m in sys.modules for m in KERNEL_MODULES):   # their cache place is fixed already
            ap.error("--cache-dir must be given before any glasshpc kernel module is imported")
        jitcache.configure(args.cache_dir)
    res = compile_all(log=(lambda *a: None) if args.quiet else print)
    where = res["cache"]["path"] or "the install's __pycache__ folders"
    print(f"glasshpc.compile: {res['compiled']} kernel signatures compiled, {res['loaded']} "
          f"loaded from the cache {where} in {res['seconds']:.1f} s", flush=True)
    if res["missing"]:
        print("glasshpc.compile: no signature in the cache (would compile during a run): "
              + ", ".join(res["missing"]), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
