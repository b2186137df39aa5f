"""Reading a finished output: the results of one state point, whatever the layout.

A run without ``state_points:`` keeps its results at the file's root; a sweep keeps each state
point's under ``/state_points/<k>/`` (the same layout inside, with the root attrs ``species`` and
``units`` repeated on the group). :func:`open_results` hands the tools (tools/*.py) and notebook
users the h5py group that holds the single-state layout in both cases.
"""
import contextlib

import h5py


class ResultsError(ValueError):
    """The file has no such state point, or a sweep file was opened without naming one."""


def state_point_count(h5):
    """Number of state points of an open output (0: a run without ``state_points:``)."""
    return len(h5["state_points"]) if "state_points" in h5 and "sweep" in h5 else 0


@contextlib.contextmanager
def open_results(path, state_point=None, cli=False):
    """Context manager: the h5py object (read-only) holding the single-state layout of ``path`` —
    the file itself for a run without ``state_points:``, the group ``/state_points/<k>`` of a sweep
    for ``state_point`` = k. Raises ResultsError (naming the state points there are) for a sweep
    without ``state_point``, an index out of range, or an index given for a file without a sweep;
    with ``cli`` SystemExit with that message instead (the tools' one-line refusal)."""
    f = h5py.File(path, "r")
    try:
        try:
            n = _check(f, path, state_point)
        except ResultsError as err:
            if cli:
                raise SystemExit(str(err)) from None
            raise
        yield f if n == 0 else f[f"state_points/{state_point}"]
    finally:
        f.close()


def _label(g):
    """'T = 0.6' or, for hard spheres, 'η = 0.56' of a /state_points/<k> group."""
    eta = float(g.attrs.get("packing_fraction", float("nan")))
    return f"η = {eta:.4g}" if eta == eta else f"T = {float(g.attrs['temperature']):.4g}"


def check_results(path, state_point=None):
    """Raise ResultsError as :func:`open_results` would (the file is opened and closed)."""
    with h5py.File(path, "r") as f:
        _check(f, path, state_point)


def _check(f, path, state_point):
    """State point count of ``f`` after the checks of :func:`open_results`."""
    n = state_point_count(f)
    if n == 0:
        if state_point is not None:
            raise ResultsError(f"{path} holds one state point (no state_points:); leave out "
                               "--state-point")
        return 0
    if state_point is None:
        raise ResultsError(f"{path} is a sweep over {n} state points ("
                           + "; ".join(f"{k}: {_label(f[f'state_points/{k}'])}" for k in range(n))
                           + "): choose one with "
                           f"--state-point 0..{n - 1}, or draw the sweep with "
                           "tools/plot_state_points.py")
    if not 0 <= state_point < n:
        raise ResultsError(f"{path} has state points 0..{n - 1}, not {state_point}")
    return n
