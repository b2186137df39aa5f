"""Reproducible sums (glasshpc.learn.exact): independent of order and grouping, accurate to about one ulp."""
import math

import numpy as np
import pytest

from glasshpc.learn.exact import ExactSum, allreduce_exact, exact_sum


def _terms(seed, n=200, shape=(7,)):
    rng = np.random.default_rng(seed)
    # wide dynamic range and cancellation: plain float sums differ with the order
    mag = 10.0 ** rng.uniform(-8, 3, size=(n,) + shape)
    return rng.choice([-1.0, 1.0], size=mag.shape) * mag


def test_order_and_grouping_do_not_matter():
    t = _terms(0)
    bound = np.abs(t).max(axis=0)
    plain = []
    totals = []
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(len(t))
        groups = np.array_split(order, seed + 1)          # as if on seed+1 ranks
        parts = []
        for g in groups:
            acc = ExactSum(bound, len(t))
            for i in g:
                acc.add(t[i])
            parts.append(acc.parts())
        totals.append(ExactSum.value(np.sum(parts, axis=0)))
        plain.append(t[order].sum(axis=0))
    assert all(np.array_equal(x, totals[0]) for x in totals)
    assert not all(np.array_equal(x, plain[0]) for x in plain)   # the problem being solved
    # about one ulp of the exact (fsum) total
    ref = np.array([math.fsum(t[:, j]) for j in range(t.shape[1])])
    assert np.all(np.abs(totals[0] - ref) <= 2 * np.spacing(np.abs(ref)))


def test_exact_sum_serial_and_guards():
    t = _terms(1, n=50, shape=(2, 3))
    a = exact_sum(None, list(t), (2, 3))
    b = exact_sum(None, list(t[::-1]), (2, 3))
    assert np.array_equal(a, b)
    assert np.array_equal(exact_sum(None, [t[0]], (2, 3)), t[0])       # one term is returned as is
    assert np.array_equal(exact_sum(None, [], (2, 3)), np.zeros((2, 3)))
    assert allreduce_exact(None, []) == []
    with pytest.raises(ValueError, match="non-finite"):
        exact_sum(None, [np.array([1.0, np.nan])], (2,))
    acc = ExactSum(np.ones(2), 3)
    with pytest.raises(ValueError, match="bound"):
        acc.add(np.array([0.5, 2.0]))
