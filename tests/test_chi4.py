"""Four-point susceptibilities χ₄(t) of F_s and of the propensity ([DW] Eq. 8, SCIENCE.md §2) as the
dynamics stage stores them, against a brute-force evaluation on the stored displacements of the
tiny run (double sums Σ_ij over particle pairs, written from the definition, not from dynamics.py)."""
import h5py
import numpy as np
import pytest

from glasshpc import dynamics


def _read(path):
    with h5py.File(path, "r") as f:
        d = {k: f[k][()] for k in ("iso/displacements", "iso/times", "snapshots/types",
                                   "propensity", "dynamics/chi4_fs", "dynamics/chi4_propensity",
                                   "dynamics/fs_replicas")}
        d.update({k: f["dynamics"].attrs[k] for k in ("q", "tau_alpha", "chi4_threshold",
                                                      "chi4_threshold_time")})
        d["definitions"] = [f[f"dynamics/{k}"].attrs["definition"]
                            for k in ("chi4_fs", "chi4_propensity")]
    return d


def test_chi4_fs_equals_the_double_sum_over_trajectories(tiny_run):
    d = _read(tiny_run)
    disp = d["iso/displacements"].astype(np.float64)          # (S, R, T, N, 3)
    S, R, T, N, _ = disp.shape
    types, q = d["snapshots/types"], d["q"]
    r = np.sqrt((disp ** 2).sum(-1))                           # (S, R, T, N)
    f = np.where(r > 0, np.sin(q * r) / np.where(r > 0, q * r, 1.0), 1.0)
    for sp in range(2):
        n_s = (types[0] == sp).sum()
        assert np.all((types == sp).sum(axis=1) == n_s)
        for k in range(T):
            # (1/N_s) [Σ_ij ⟨f_i f_j⟩ − (Σ_i ⟨f_i⟩)²], ⟨·⟩ over all S·R trajectories
            pair = np.mean([np.outer(f[s, rr, k][types[s] == sp], f[s, rr, k][types[s] == sp]).sum()
                            for s in range(S) for rr in range(R)])
            single = np.mean([f[s, rr, k][types[s] == sp].sum() for s in range(S)
                              for rr in range(R)])
            brute = (pair - single ** 2) / n_s
            # ⟨X²⟩ − ⟨X⟩² with X ≈ N_s loses ~7 digits at the earliest times: compare to that
            assert d["dynamics/chi4_fs"][sp, k] == pytest.approx(brute, rel=1e-6, abs=1e-9)
        # the one-trajectory F̂_s stored per replica average to F_s
        per_rep = np.array([[f[s, rr, :][:, types[s] == sp].mean(axis=1) for rr in range(R)]
                            for s in range(S)])
        np.testing.assert_allclose(d["dynamics/fs_replicas"][:, :, sp], per_rep, rtol=1e-12)
    # dynamical heterogeneity grows from the ballistic regime on: χ₄ at the end ≫ at the start
    assert np.all(d["dynamics/chi4_fs"][:, -1] > 100 * d["dynamics/chi4_fs"][:, 0])
    assert "Eq. 8" in d["definitions"][0] and "Eq. 8" in d["definitions"][1]


def test_chi4_propensity_equals_eq8_of_dw(tiny_run):
    d = _read(tiny_run)
    disp = d["iso/displacements"].astype(np.float64)
    S, R, T, N, _ = disp.shape
    times, types = d["iso/times"], d["snapshots/types"]
    prop = np.sqrt((disp ** 2).sum(-1)).mean(axis=1)          # (S, T, N) ⟨|Δr_i(t)|⟩_iso
    np.testing.assert_allclose(prop, d["propensity"], rtol=1e-12)
    for sp in range(2):
        # a = mean displacement modulus at τ_α (clipped to the read-outs; the last one when F_s
        # does not reach 1/e)
        tau = d["tau_alpha"][sp]
        t_a = min(max(tau, times[0]), times[-1]) if np.isfinite(tau) else times[-1]
        assert d["chi4_threshold_time"][sp] == t_a
        mean = [prop[:, k][types == sp].mean() for k in range(T)]
        a = np.interp(np.log(t_a), np.log(times), mean)
        assert d["chi4_threshold"][sp] == pytest.approx(a, rel=1e-12)
        n_s = (types[0] == sp).sum()
        for k in range(T):
            qa = [(prop[s, k][types[s] == sp] > a).astype(float) for s in range(S)]
            pair = np.mean([np.outer(x, x).sum() for x in qa])      # Σ_ij ⟨q_i q_j⟩
            single = np.mean([x.sum() for x in qa])                  # Σ_i ⟨q_i⟩
            assert d["dynamics/chi4_propensity"][sp, k] == pytest.approx(
                (pair - single ** 2) / n_s, rel=1e-12, abs=1e-14)
    # nobody beyond a in the ballistic regime: χ₄ = 0 there; some heterogeneity at the end
    assert np.all(d["dynamics/chi4_propensity"][:, 0] == 0)
    assert np.all(d["dynamics/chi4_propensity"][:, -1] > 0)


def test_chi4_functions_refuse_bad_input_and_handle_one_snapshot():
    rng = np.random.default_rng(0)
    prop = rng.random((1, 3, 10))
    types = np.zeros((1, 10), int)
    assert np.isnan(dynamics.chi4_propensity(prop, types, 0.5, 1)).all()   # S < 2: undefined
    with pytest.raises(ValueError, match="must match"):
        dynamics.chi4_propensity(prop, types[:, :5], 0.5, 1)
    with pytest.raises(ValueError, match="shape"):
        dynamics.chi4_fs(rng.random((2, 3, 4)), types, 1)
    # independent particles: χ₄ of F_s = the one-particle variance of f (no pair correlations)
    f = rng.random((400, 50, 200))          # (trajectories, 1 species, …) as (S=400, R=50) below
    fs_rep = f.mean(axis=2).reshape(400, 50, 1, 1)
    chi = dynamics.chi4_fs(fs_rep, np.zeros((400, 200), int), 1)
    assert chi[0, 0] == pytest.approx(1 / 12, rel=0.02)      # Var(U(0,1)) = 1/12
