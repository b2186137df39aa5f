"""p_hop, CSD, training-set selection and p_r against brute-force definitions; trajectories with
real LAMMPS (tiny Kob–Andersen system). Reduced LJ units."""
import numpy as np
import pytest

from glasshpc import rearrangements as rr


def _brute_p_hop(x, w):
    """Literal [SOFT] definition with Python loops: A = frames t−w..t, B = t..t+w."""
    F, N, _ = x.shape
    out = np.full((F, N), np.nan)
    for i in range(N):
        for t in range(w, F - w):
            A = [x[k, i] for k in range(t - w, t + 1)]
            B = [x[k, i] for k in range(t, t + w + 1)]
            mA = sum(A) / len(A)
            mB = sum(B) / len(B)
            a = sum(float(np.dot(r - mB, r - mB)) for r in A) / len(A)
            b = sum(float(np.dot(r - mA, r - mA)) for r in B) / len(B)
            out[t, i] = (a * b) ** 0.5
    return out


def _brute_csd(x, m=10):
    F, N, _ = x.shape
    out = np.full((F, N), np.nan)
    for i in range(N):
        for t in range(m, F):
            out[t, i] = sum(float(np.sum((x[k, i] - x[k - 1, i]) ** 2))
                            for k in range(t - m + 1, t + 1)) / m
    return out


@pytest.fixture
def jump_trajectory():
    """40 frames (1 τ apart) of 4 particles vibrating by 0.03 σ; particle 2 hops by 1.6 σ along x,
    half way at frame 20 (0.8 σ) and all the way from frame 21 on — symmetric about frame 20."""
    rng = np.random.default_rng(3)
    F, N = 40, 4
    x = rng.uniform(0, 5, (1, N, 3)) + 0.03 * rng.standard_normal((F, N, 3))
    x[20:, 2, 0] += 0.8
    x[21:, 2, 0] += 0.8
    return x


def test_p_hop_and_csd_equal_brute_force(jump_trajectory):
    x = jump_trajectory
    np.testing.assert_allclose(rr.p_hop(x), _brute_p_hop(x, 5), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(rr.csd(x), _brute_csd(x), rtol=1e-12, equal_nan=True)
    # window of 2 frames when frames are 2.5 τ apart and the half window is 5 τ
    np.testing.assert_allclose(rr.p_hop(x, frame_interval=2.5), _brute_p_hop(x, 2), rtol=1e-12,
                               equal_nan=True)
    p = rr.p_hop(x)
    assert np.isnan(p[:5]).all() and np.isnan(p[-5:]).all() and np.isfinite(p[5:-5]).all()


def test_jump_detected_at_the_right_frame(jump_trajectory):
    x = jump_trajectory
    p = rr.p_hop(x)
    assert int(np.nanargmax(p[:, 2])) == 20
    # only the hopping particle crosses p_c = 0.2 σ², in a window around the hop
    hits = rr.rearranging(p, rr.P_C)
    assert hits[:, [0, 1, 3]].sum() == 0
    frames = np.flatnonzero(hits[:, 2])
    assert frames.min() >= 15 and frames.max() <= 25 and 20 in frames
    c = rr.csd(x)
    # the CSD crosses 0.0966 for the frames whose 10-step sum holds both half steps (21..29:
    # 2·0.64/10 = 0.128), not with one half step (0.064)
    cf = np.flatnonzero(rr.rearranging(c, rr.CSD_C)[:, 2])
    assert cf.tolist() == list(range(21, 30))
    assert not rr.rearranging(c, rr.CSD_C)[:, [0, 1, 3]].any()
    assert rr.rearranged_within(p, 5, 34).tolist() == [False, False, True, False]
    assert rr.rearranged_within(p, 5, 12).tolist() == [False] * 4


def test_training_candidates(jump_trajectory):
    x = jump_trajectory
    p = rr.p_hop(x)
    fr, pa = rr.rearranging_candidates(p, rr.P_C, lag=2.0)
    t_hit = np.flatnonzero(p[:, 2] > rr.P_C)
    assert set(pa) == {2} and np.array_equal(fr, t_hit - 2)        # structure at t − 2 τ
    # quiet runs: p < p_l over ≥ 20 τ; the vibrating particles are quiet over all 30 defined frames
    qf, qp = rr.quiet_candidates(p, p_l=0.05, quiet_time=20.0)
    assert sorted(qp.tolist()) == [0, 1, 3]
    assert np.all(qf == (5 + 34) // 2)                              # middle of frames 5..34
    assert rr.quiet_candidates(p, p_l=0.05, quiet_time=30.0)[0].size == 0
    # brute-force quiet runs for the hopping particle: two runs around the hop
    quiet = np.flatnonzero(p[:, 2] < 0.05)
    runs = np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)
    expect = sorted((r[0] + r[-1]) // 2 for r in runs if r[-1] - r[0] >= 5)
    qf2, qp2 = rr.quiet_candidates(p, p_l=0.05, quiet_time=5.0)
    assert sorted(qf2[qp2 == 2].tolist()) == expect and len(expect) == 2
    rng = np.random.default_rng(0)
    pos, neg = rr.balanced_sample((fr, pa), (qf, qp), 100, rng)
    assert len(pos[0]) == len(neg[0]) == min(len(fr), len(qf))
    lo_f, lo_p, hi_f, hi_p, (pl, pu) = rr.tail_candidates(p, 0.01)
    assert set(hi_p) == {2} and pu < p[20, 2]


def test_rearrangement_probability_and_logit():
    flags = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]], bool)
    np.testing.assert_allclose(rr.rearrangement_probability(flags), [1.0, 0.25, 0.0])
    lg = rr.logit_rearrangement_probability(flags.sum(0), 4)
    assert np.all(np.isfinite(lg)) and lg[0] > lg[1] > lg[2]
    np.testing.assert_allclose(lg[1], np.log(1.5 / 5 / (1 - 1.5 / 5)))
    with pytest.raises(ValueError):
        rr.rearranged_within(rr.p_hop(np.zeros((12, 2, 3))), 0, 4)  # NaN inside the window


def test_bad_input_named():
    with pytest.raises(ValueError, match="shape"):
        rr.p_hop(np.zeros((10, 3)))
    x = np.zeros((12, 2, 3))
    x[4, 1, 0] = np.nan
    with pytest.raises(ValueError, match="frame 4, particle 1"):
        rr.p_hop(x)
    with pytest.raises(ValueError, match="half_window"):
        rr.p_hop(np.zeros((12, 2, 3)), frame_interval=2.0)


# -- trajectories with LAMMPS ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ka_small():
    from glasshpc.md.lammps import LammpsEngine
    from glasshpc.models import get_model
    eng = LammpsEngine(get_model("kob_andersen"), 0.005)
    pos, types, box = eng.prepare_snapshot(300, 1.2, 0.8, np.random.default_rng(11), 2.0, 2.0,
                                           5.0, 5.0, 0.5)
    yield eng, pos, types, box
    eng.close()


def _min_image(d, box):
    return d - box * np.round(d / box)


def test_trajectory_frames_nve_drift_and_determinism(ka_small):
    from glasshpc.md.trajectory import run_trajectory
    eng, pos, types, box = ka_small
    frames, e = run_trajectory(eng, pos, types, box, 0.8, np.random.default_rng(5), 20.0, 1.0,
                               ensemble="nve", energies=True)
    assert frames.shape == (21, 300, 3)
    # frame 0 is the start configuration, the last frame wraps onto the engine's positions
    np.testing.assert_allclose(_min_image(frames[0] - pos, box), 0, atol=1e-12)
    np.testing.assert_allclose(_min_image(frames[-1] - eng.positions(), box), 0, atol=1e-9)
    # unwrapped: no step between frames comes near a box length (a wrapped one would be ~L)
    steps = np.diff(frames, axis=0)
    assert np.abs(steps).max() < box[0] / 3
    # NVE: total energy per particle conserved over 4000 steps
    assert np.ptp(e) < 2e-3 * abs(e.mean())
    # the same generator seed gives a bitwise identical trajectory
    again = run_trajectory(eng, pos, types, box, 0.8, np.random.default_rng(5), 20.0, 1.0,
                           ensemble="nve")
    assert np.array_equal(frames, again)
    other = run_trajectory(eng, pos, types, box, 0.8, np.random.default_rng(6), 20.0, 1.0,
                           ensemble="nve")
    assert not np.array_equal(frames, other)


def test_trajectory_nvt_first_differences_match_positions(ka_small):
    from glasshpc.md.trajectory import run_trajectory
    eng, pos, types, box = ka_small
    frames = run_trajectory(eng, pos, types, box, 0.8, np.random.default_rng(1), 2.0, 0.5,
                            ensemble="nvt")
    # segment the same run by hand and read wrapped positions at every frame
    from glasshpc.md.velocities import maxwell_boltzmann
    eng.load(pos, types, box)
    eng.set_velocities(maxwell_boltzmann(len(types), 0.8, np.random.default_rng(1)))
    eng.command("reset_timestep 0", "fix traj all nvt temp 0.8 0.8 0.5", "run 0 pre yes post no")
    wrapped = [eng.positions()]
    for _ in range(4):
        eng.command("run 100 pre no post no")
        wrapped.append(eng.positions())
    eng.command("unfix traj")
    wrapped = np.array(wrapped)
    np.testing.assert_allclose(np.diff(frames, axis=0),
                               _min_image(np.diff(wrapped, axis=0), box), atol=1e-9)
    assert frames.shape == (5, 300, 3)
    with pytest.raises(ValueError, match="frame_interval"):
        run_trajectory(eng, pos, types, box, 0.8, np.random.default_rng(1), 2.0, 0.0033)
