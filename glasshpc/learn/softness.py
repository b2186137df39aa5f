"""Softness and regression models of rearrangements ([SOFT] ch. 2–3; SCIENCE.md §5).

Reduced LJ units of species A. Features F (M per particle, e.g. the 135 radial + angular descriptors
of [SOFT]) are standardised to zero mean and unit variance over the training set ([SOFT] §2.2.2);
the mean and scale are stored with every model so it can be applied to other temperatures.

* :class:`SoftnessSVC` — linear soft-margin SVC (C = 10⁻², [SOFT] §2.2.3) on a balanced set of
  rearranging / non-rearranging examples. Softness S = ŵ·F̃ − b is the signed distance of the
  standardised feature vector F̃ to the hyperplane (unit normal ŵ; [SOFT] Eq. α_i = w·F_i − b).
* :func:`fit_regressor` — linear SVR, ridge, RBF-kernel SVR and MLP on logit p_r ([SOFT] §3.3.1,
  Eq. 3.4).
* :func:`rfe_curve` — recursive feature elimination, held-out Pearson vs feature count ([SOFT] §3.4).
* :func:`normal_dot_products` — ŵ_a·ŵ_b between hyperplane normals ([SOFT] Table 3.1).

MPI: fits that need all data gather only the (small) training set (:func:`gather_rows`, ordered by
task key so the result is independent of the rank count); independent fits are spread over ranks
(:func:`fit_models`), each model fitted once on one rank and broadcast.
"""
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

REGRESSORS = ("linear_svr", "ridge", "rbf_svr", "mlp")
MODELS = ("svc",) + REGRESSORS


class Standardizer:
    """Per-feature standardisation fitted on a training set. mean_, scale_ : (M,) float64;
    constant features get scale 1 (they carry no information, and must not divide by zero)."""

    def fit(self, X):
        X = _check_X(X)
        self.mean_ = X.mean(axis=0)
        s = X.std(axis=0)
        self.scale_ = np.where(s > 0, s, 1.0)
        return self

    def transform(self, X):
        X = _check_X(X, self.mean_.size)
        return (X - self.mean_) / self.scale_


def _check_X(X, m=None):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n_samples, M), got {X.shape}")
    if m is not None and X.shape[1] != m:
        raise ValueError(f"features have {X.shape[1]} columns, the model was fitted on {m}")
    if not np.all(np.isfinite(X)):
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"non-finite feature at sample {i}, column {j}")
    return X


def _unit(v):
    v = np.asarray(v, dtype=np.float64).ravel()
    n = np.linalg.norm(v)
    if n == 0:
        raise ValueError("zero normal vector")
    return v / n


class SoftnessSVC(ClassifierMixin, BaseEstimator):
    """Linear soft-margin support-vector classifier giving softness ([SOFT] §2.2.3).

    A scikit-learn classifier (``get_params``/``set_params``, ``fit`` → self, ``predict`` = S > 0,
    ``decision_function`` = S, ``score`` = accuracy; usable in a ``Pipeline``). Labels are booleans
    (True = rearranging); ``classes_`` = [False, True].

    Parameters: C (float, soft-margin penalty; [SOFT] 10⁻²; > 0, checked by ``fit``).
    Attributes after :meth:`fit` (X (n, M) float, y (n,) bool, True = rearranging):
    mean_, scale_ (M,) standardisation; coef_ (M,) unit normal ŵ in standardised units;
    intercept_ b (S = ŵ·F̃ − b); margin_width_ 2/|w| (standardised units); n_support_ int;
    train_accuracy_ float.
    """

    def __init__(self, C=1e-2):
        self.C = C

    def fit(self, X, y):
        """Fit on X (n, M) float, y (n,) bool; returns self. ValueError for C ≤ 0, non-finite X, one class."""
        from sklearn.svm import SVC
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        y = np.asarray(y, dtype=bool).ravel()
        X = _check_X(X)
        if y.size != X.shape[0]:
            raise ValueError(f"{X.shape[0]} samples but {y.size} labels")
        if y.all() or not y.any():
            raise ValueError("the training set needs both rearranging and non-rearranging examples")
        self.scaler_ = Standardizer().fit(X)
        Xs = self.scaler_.transform(X)
        # libsvm's exact hinge-loss soft margin (LinearSVC would use the squared hinge by default
        # and penalise the intercept)
        svc = SVC(kernel="linear", C=float(self.C)).fit(Xs, y)
        w = svc.coef_.ravel()
        norm = np.linalg.norm(w)
        self.coef_ = w / norm
        self.intercept_ = float(-svc.intercept_[0] / norm)
        self.margin_width_ = 2.0 / norm
        self.n_support_ = int(svc.n_support_.sum())
        self.mean_, self.scale_ = self.scaler_.mean_, self.scaler_.scale_
        self.classes_ = np.array([False, True])
        self.n_features_in_ = X.shape[1]
        self.train_accuracy_ = float(np.mean((self.softness(X) > 0) == y))
        return self

    def decision_function(self, X):
        """Softness S (n,) float64 (:meth:`softness`)."""
        return self.softness(X)

    def predict(self, X):
        """(n,) bool: rearranging (S > 0)."""
        return self.softness(X) > 0

    def raw_output(self, X):
        """ŵ·F̃ (no bias), (n,) float64 — the quantity Z-scores are built from."""
        return self.scaler_.transform(X) @ self.coef_

    def softness(self, X):
        """S = ŵ·F̃ − b, (n,) float64 (σ-free: distance in standardised feature space)."""
        return self.raw_output(X) - self.intercept_

    @property
    def normal_raw_(self):
        """Unit normal of the hyperplane in the original (unstandardised) feature units, (M,)."""
        return _unit(self.coef_ / self.scale_)


@dataclass
class Regressor:
    """A fitted regression model of logit p_r. name : one of REGRESSORS; model : the sklearn
    estimator (on standardised features); scaler : Standardizer; coef_ : (M,) unit normal of a
    linear model (None for rbf_svr, mlp); intercept_ : float (linear models, in logit units);
    params : dict of hyper-parameters chosen."""
    name: str
    model: object
    scaler: Standardizer
    coef_: object = None
    intercept_: float = float("nan")
    params: dict = field(default_factory=dict)

    def predict(self, X):
        """Predicted logit p_r, (n,) float64."""
        return np.asarray(self.model.predict(self.scaler.transform(X)), dtype=np.float64)

    def raw_output(self, X):
        """Output without the bias: w·F̃ for linear models, the prediction otherwise, (n,)."""
        if self.coef_ is None:
            return self.predict(X)
        return self.predict(X) - self.intercept_


def fit_regressor(name, X, y, seed=0, C=1.0, alphas=None, hidden=(16, 16)):
    """Fit one regressor of y = logit p_r on features X ([SOFT] §3.3.1, Eq. 3.4).

    name : 'linear_svr' (LinearSVR, ε-insensitive loss with ε = 0, penalty C), 'ridge' (RidgeCV over
    ``alphas``, default 10⁻⁵…10⁴, SCIENCE.md §5), 'rbf_svr' (SVR with an RBF kernel, γ = 1/M),
    'mlp' (MLPRegressor, ReLU ``hidden`` layers, L2 10⁻³, early stopping).
    seed : int seeding the stochastic solvers (derive from the task identity).
    Returns :class:`Regressor`. Raises ValueError for an unknown name or bad input."""
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.svm import SVR, LinearSVR
    if name not in REGRESSORS:
        raise ValueError(f"unknown regressor {name!r}; known: {REGRESSORS}")
    X = _check_X(X)
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size != X.shape[0] or not np.all(np.isfinite(y)):
        raise ValueError(f"targets must be {X.shape[0]} finite values")
    scaler = Standardizer().fit(X)
    Xs = scaler.transform(X)
    params = {}
    if name == "linear_svr":
        model = LinearSVR(C=C, epsilon=0.0, loss="epsilon_insensitive", dual=True,
                          max_iter=100000, tol=1e-5, random_state=int(seed)).fit(Xs, y)
        params["C"] = C
    elif name == "ridge":
        a = np.logspace(-5, 4, 19) if alphas is None else np.asarray(alphas)
        model = RidgeCV(alphas=a).fit(Xs, y)
        params["alpha"] = float(model.alpha_)
    elif name == "rbf_svr":
        model = SVR(kernel="rbf", C=C, gamma=1.0 / X.shape[1], epsilon=0.1).fit(Xs, y)
        params.update(C=C, gamma=1.0 / X.shape[1])
    else:
        model = MLPRegressor(hidden_layer_sizes=tuple(hidden), activation="relu", alpha=1e-3,
                             early_stopping=True, max_iter=2000, random_state=int(seed)).fit(Xs, y)
        params.update(hidden=list(hidden), n_iter=int(model.n_iter_))
    reg = Regressor(name, model, scaler, params=params)
    if name in ("linear_svr", "ridge"):
        w = np.asarray(model.coef_, dtype=np.float64).ravel()
        # keep the model's scale in predict; coef_ reports only the direction
        reg.coef_ = _unit(w)
        reg.intercept_ = float(np.ravel(model.intercept_)[0])
    return reg


def fit_models(comm, names, fit_one):
    """Fit independent models spread over the ranks of ``comm``: model k is fitted by rank
    k mod size with ``fit_one(name)`` and broadcast. Returns {name: model} on every rank; the result
    does not depend on the rank count because each fit sees the same data and seed."""
    out = {}
    size = comm.Get_size() if comm is not None else 1
    rank = comm.Get_rank() if comm is not None else 0
    for k, name in enumerate(names):
        owner = k % size
        model = fit_one(name) if rank == owner else None
        out[name] = comm.bcast(model, root=owner) if comm is not None else model
    return out


def gather_rows(comm, keys, *arrays):
    """Gather small per-task row blocks onto every rank, ordered by task key.

    keys : list of sortable task keys (tuples of ints), one per local block; arrays : for each
    quantity a list of per-block arrays (same length as keys). Returns the concatenation of each
    quantity over all blocks of all ranks, in key order (independent of which rank held a block)."""
    local = [(k, tuple(a[i] for a in arrays)) for i, k in enumerate(keys)]
    blocks = [b for part in (comm.allgather(local) if comm is not None else [local]) for b in part]
    blocks.sort(key=lambda b: b[0])
    if not blocks:
        raise ValueError("no rows anywhere to gather")
    return tuple(np.concatenate([b[1][j] for b in blocks]) for j in range(len(arrays)))


def pearson(a, b):
    """Pearson correlation of two 1-D arrays ([SOFT] §3.3.1 ρ_corr)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    d = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / d) if d > 0 else float("nan")


def rfe_curve(X_train, y_train, X_test, y_test, counts, estimator="ridge", step=1):
    """Recursive feature elimination ([SOFT] §3.4): rank the features by repeatedly dropping the
    smallest |w| of a linear model (``estimator`` 'ridge' (α = 1) or 'linear_svr'), then refit on the
    top ``counts`` features and report the held-out Pearson correlation.

    Returns (ranking (M,) int, 1 = kept longest; pearson (len(counts),) float64)."""
    from sklearn.feature_selection import RFE
    from sklearn.linear_model import Ridge
    from sklearn.svm import LinearSVR
    sc = Standardizer().fit(X_train)
    Xtr, Xte = sc.transform(X_train), sc.transform(X_test)
    est = (Ridge(alpha=1.0) if estimator == "ridge" else
           LinearSVR(C=1.0, epsilon=0.0, dual=True, max_iter=100000, random_state=0))
    M = Xtr.shape[1]
    counts = [int(c) for c in counts]
    if any(not 1 <= c <= M for c in counts):
        raise ValueError(f"feature counts must lie in 1..{M}, got {counts}")
    rfe = RFE(est, n_features_to_select=1, step=step).fit(Xtr, y_train)
    order = np.argsort(rfe.ranking_, kind="stable")
    rho = []
    for c in counts:
        cols = order[:c]
        m = Ridge(alpha=1.0).fit(Xtr[:, cols], y_train)
        rho.append(pearson(m.predict(Xte[:, cols]), y_test))
    return rfe.ranking_.astype(np.int64), np.array(rho)


def normal_dot_products(normals):
    """ŵ_a·ŵ_b between the unit normals of linear models ([SOFT] Table 3.1).

    normals : dict name → (M,) vector (normalised here). Returns (names list, (K, K) float64)."""
    names = list(normals)
    W = np.stack([_unit(normals[n]) for n in names]) if names else np.zeros((0, 0))
    return names, W @ W.T


def best_bias(output, labels):
    """Threshold b_best on a model output that best separates rearranging (True) from
    non-rearranging (False) training examples (highest accuracy; ties → the middle of the optimal
    interval) — the b_best of the Z-score x = (w·F − b_best)/σ_tr ([SOFT] §2.3, §3.3.2)."""
    o = np.asarray(output, dtype=np.float64).ravel()
    lab = np.asarray(labels, dtype=bool).ravel()
    if o.size != lab.size or o.size == 0:
        raise ValueError("output and labels must be equally long and non-empty")
    order = np.argsort(o, kind="stable")
    so, sl = o[order], lab[order]
    # threshold between so[j-1] and so[j]: predict True for indices ≥ j
    neg_below = np.concatenate([[0], np.cumsum(~sl)])
    pos_above = np.concatenate([np.cumsum(sl[::-1])[::-1], [0]])
    acc = neg_below + pos_above
    cuts = np.concatenate([[so[0] - 1.0], 0.5 * (so[1:] + so[:-1]), [so[-1] + 1.0]])
    best = np.flatnonzero(acc == acc.max())
    return float(0.5 * (cuts[best[0]] + cuts[best[-1]]))
