r"""Maps from unconstrained network outputs onto feasible control sets.

A policy network emits a raw vector $r \in \mathbb{R}^k$; a constraint maps it onto the feasible
set, so that every control the policy emits is feasible by construction, for every state, also
far outside the training distribution. Penalties are only needed for constraints none of these
maps covers (non-linear, non-convex sets); `ControlProblem.constraint_penalty` is the hook.

- `Unconstrained`: the identity.
- `Box`: componentwise bounds $l \le a \le u$ (either side may be infinite): a scaled sigmoid or
  tanh for two finite bounds, a softplus for one.
- `Simplex`: $a \ge 0$, $\sum a = s$ (softmax) or $\sum a \le s$ (softmax with a slack entry).
- `LinearConstraints`: $A_{ub} a \le b_{ub}$, $A_{eq} a = b_{eq}$. Equalities are solved exactly
  by an affine parameterisation $a = a_p + N z$ ($N$ a basis of the null space of $A_{eq}$); the
  inequalities in z are met by Dykstra's alternating projections onto the half-spaces followed
  by a radial retraction toward an interior point (the Chebyshev centre, found by a linear
  program), which makes the result feasible whatever the number of Dykstra sweeps. An empty
  feasible set raises a ValueError when the constraint is built.

The helpers `scaled_sigmoid` and `cap_sum` build state-dependent maps (bounds that depend on the
state, a capped total) inside a problem's `control_map`.

Constraints are plain Python objects with `get_config`; `get_constraint(spec)` builds one from a
dict `{"type": "box", ...}`.
"""

import math

import numpy as np
from keras import ops

from mlcmk._validation import check_positive_int


def scaled_sigmoid(raw, low, high):
    """`low + (high - low) * sigmoid(raw)`: a smooth map onto [low, high] (tensors broadcast)."""
    return low + (high - low) * ops.sigmoid(raw)


def cap_sum(a, cap, axis=-1):
    """Scales non-negative `a` down along `axis` so that its sum is at most `cap` (>= 0).

    `a * min(1, cap / sum(a))`: the identity while the cap does not bind.
    """
    total = ops.sum(a, axis=axis, keepdims=True)
    cap = ops.expand_dims(cap, axis) if len(ops.shape(cap)) < len(ops.shape(a)) else cap
    over = total > cap
    # Both branches of `where` are differentiated: the unused one must stay finite.
    safe_total = ops.where(over, total, ops.ones_like(total))
    return a * ops.where(over, cap / safe_total, ops.ones_like(total))


def _vector(name, value, dim, fill):
    if value is None:
        return np.full(dim, fill, dtype="float64")
    if isinstance(value, (list, tuple)):  # None entries: that side open
        value = [fill if v is None else v for v in value]
    arr = np.asarray(value, dtype="float64")
    if arr.ndim == 0:
        arr = np.full(dim, float(arr))
    if arr.shape != (dim,) or np.any(np.isnan(arr)):
        raise ValueError(f"`{name}` must be a number or a sequence of {dim} numbers; received "
                         f"{name}={value!r}")
    return arr


def _json_vector(arr):
    out = [None if not math.isfinite(v) else float(v) for v in arr]
    if len(set(out)) == 1:
        return out[0]
    return out


class ControlConstraint:
    """Base class: `apply(raw)` maps raw outputs of width `raw_dim` onto feasible controls.

    Args:
        dim: positive int, the control dimension.
    """

    type_name = None

    def __init__(self, dim):
        self.dim = check_positive_int("dim", dim)

    @property
    def raw_dim(self):
        """Width of the raw network output this constraint consumes."""
        return self.dim

    def __call__(self, raw):
        return self.apply(raw)

    def apply(self, raw):
        """Maps raw network outputs (..., raw_dim) to feasible controls (..., dim)."""
        raise NotImplementedError(f"{type(self).__name__} must define apply(raw)")

    def violation(self, a):
        """Largest constraint violation of controls `a` (NumPy, shape (..., dim)); 0 if feasible."""
        raise NotImplementedError(f"{type(self).__name__} must define violation(a)")

    def get_config(self):
        return {"dim": self.dim}

    def serialize(self):
        return {"type": self.type_name, **self.get_config()}


class Unconstrained(ControlConstraint):
    """The identity: every control is feasible."""

    type_name = "unconstrained"

    def apply(self, raw):
        return raw

    def violation(self, a):
        return 0.0


class Box(ControlConstraint):
    """Componentwise bounds `low <= a <= high`; `None` or an infinite value leaves a side open.

    Args:
        dim: control dimension.
        low, high: numbers or sequences of `dim` numbers (None: unbounded).
        smooth_map: `"sigmoid"` (`low + (high - low) sigmoid(r)`) or `"tanh"` (centre plus
            half-width times tanh(r)); one-sided bounds use a softplus.

    Raises:
        ValueError: if some `low_i > high_i` (the set is empty).
    """

    type_name = "box"

    def __init__(self, dim, low=None, high=None, smooth_map="sigmoid"):
        super().__init__(dim)
        self.low = _vector("low", low, self.dim, -np.inf)
        self.high = _vector("high", high, self.dim, np.inf)
        bad = np.nonzero(self.low > self.high)[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"Infeasible box constraint: low[{i}]={self.low[i]} > "
                             f"high[{i}]={self.high[i]}; expected low <= high")
        if smooth_map not in ("sigmoid", "tanh"):
            raise ValueError(f"`smooth_map` must be 'sigmoid' or 'tanh'; received "
                             f"smooth_map={smooth_map!r}")
        self.smooth_map = smooth_map

    def apply(self, raw):
        dtype = raw.dtype
        lo_f, hi_f = np.isfinite(self.low), np.isfinite(self.high)
        low = ops.cast(np.where(lo_f, self.low, 0.0), dtype)
        high = ops.cast(np.where(hi_f, self.high, 0.0), dtype)
        if self.smooth_map == "sigmoid":
            both = low + (high - low) * ops.sigmoid(raw)
        else:
            both = 0.5 * (low + high) + 0.5 * (high - low) * ops.tanh(raw)
        only_low = low + ops.softplus(raw)
        only_high = high - ops.softplus(-raw)
        out = raw
        out = ops.where(ops.cast(lo_f & ~hi_f, "bool"), only_low, out)
        out = ops.where(ops.cast(~lo_f & hi_f, "bool"), only_high, out)
        return ops.where(ops.cast(lo_f & hi_f, "bool"), both, out)

    def violation(self, a):
        a = np.asarray(a, dtype="float64")
        return float(max(np.max(self.low - a, initial=0.0), np.max(a - self.high, initial=0.0)))

    def get_config(self):
        return {**super().get_config(), "low": _json_vector(self.low),
                "high": _json_vector(self.high), "smooth_map": self.smooth_map}


class Simplex(ControlConstraint):
    """`a >= 0` with `sum(a) == total` (softmax), or `sum(a) <= total` with `inequality=True`.

    With `inequality=True` the raw output has one more entry, a slack that takes the rest.

    Raises:
        ValueError: if `total < 0` (empty set), or `total == 0` with `inequality=False` is fine
            (the single point 0) and so accepted.
    """

    type_name = "simplex"

    def __init__(self, dim, total=1.0, inequality=False):
        super().__init__(dim)
        total = float(total)
        if not math.isfinite(total) or total < 0:
            raise ValueError(f"Infeasible simplex constraint: `total` must be a finite number "
                             f">= 0; received total={total!r}")
        self.total = total
        self.inequality = bool(inequality)

    @property
    def raw_dim(self):
        return self.dim + 1 if self.inequality else self.dim

    def apply(self, raw):
        weights = ops.softmax(raw, axis=-1) * ops.cast(self.total, raw.dtype)
        return weights[..., : self.dim]

    def violation(self, a):
        a = np.asarray(a, dtype="float64")
        total = a.sum(-1)
        excess = np.abs(total - self.total) if not self.inequality else total - self.total
        return float(max(np.max(-a, initial=0.0), np.max(excess, initial=0.0)))

    def get_config(self):
        return {**super().get_config(), "total": self.total, "inequality": self.inequality}


class LinearConstraints(ControlConstraint):
    r"""Linear inequalities and equalities: $A_{ub} a \le b_{ub}$, $A_{eq} a = b_{eq}$.

    The raw output z lives in the null space of $A_{eq}$ (width `dim - rank(A_eq)`); the control
    is $a = a_p + N y$, $y$ = z moved into the polytope $\{y: A' y \le b'\}$ by `iterations`
    sweeps of Dykstra's alternating projections started at $c + z$ ($c$ the Chebyshev centre)
    and a final radial retraction toward $c$, which guarantees feasibility. Inside the polytope
    the map is the identity $y = c + z$.

    Args:
        dim: control dimension.
        a_ub, b_ub: inequality matrix (m, dim) and right-hand side (m,), or None.
        a_eq, b_eq: equality matrix (p, dim) and right-hand side (p,), or None.
        iterations: Dykstra sweeps (0: radial retraction only, a piecewise smooth map).

    Raises:
        ValueError: if the shapes do not match `dim`, the equalities are inconsistent, or the
            set has no interior point (infeasible, or feasible only on a lower-dimensional face
            that equalities do not describe).
    """

    type_name = "linear"

    def __init__(self, dim, a_ub=None, b_ub=None, a_eq=None, b_eq=None, iterations=10):
        super().__init__(dim)
        from scipy.optimize import linprog

        def matrix(name, value, rhs_name, rhs):
            if value is None:
                if rhs is not None:
                    raise ValueError(f"`{rhs_name}` given without `{name}`")
                return np.zeros((0, self.dim)), np.zeros(0)
            m = np.asarray(value, dtype="float64")
            if m.ndim == 1:
                m = m[None]
            r = np.atleast_1d(np.asarray(rhs, dtype="float64")) if rhs is not None else None
            if m.ndim != 2 or m.shape[1] != self.dim:
                raise ValueError(f"`{name}` must have shape (m, dim={self.dim}); received shape "
                                 f"{np.shape(value)}")
            if r is None or r.shape != (m.shape[0],):
                raise ValueError(f"`{rhs_name}` must have shape ({m.shape[0]},); received "
                                 f"{rhs_name}={rhs!r}")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(r))):
                raise ValueError(f"`{name}` and `{rhs_name}` must be finite")
            return m, r

        self.a_ub, self.b_ub = matrix("a_ub", a_ub, "b_ub", b_ub)
        self.a_eq, self.b_eq = matrix("a_eq", a_eq, "b_eq", b_eq)
        self.iterations = check_positive_int("iterations", iterations, 0)

        # Equalities: a = a_p + N y.
        if self.a_eq.shape[0]:
            a_p, *_ = np.linalg.lstsq(self.a_eq, self.b_eq, rcond=None)
            residual = np.abs(self.a_eq @ a_p - self.b_eq).max()
            if residual > 1e-9 * (1 + np.abs(self.b_eq).max()):
                raise ValueError(f"Infeasible linear constraints: the equalities a_eq a = b_eq "
                                 f"have no solution (least-squares residual {residual:.3g})")
            _, sv, vt = np.linalg.svd(self.a_eq)
            rank = int(np.sum(sv > 1e-10 * max(sv.max(), 1e-300)))
            null = vt[rank:].T
        else:
            a_p, null = np.zeros(self.dim), np.eye(self.dim)
        if null.shape[1] == 0:
            raise ValueError("The equalities fix the control completely (no free direction); "
                             "a policy has nothing to learn")
        self._a_p, self._null = a_p, null
        a_red = self.a_ub @ null
        b_red = self.b_ub - self.a_ub @ a_p
        norms = np.linalg.norm(a_red, axis=1)
        zero_rows = norms < 1e-12
        if np.any(b_red[zero_rows] < -1e-9):
            raise ValueError("Infeasible linear constraints: an inequality contradicts the "
                             "equalities")
        a_red, b_red, norms = a_red[~zero_rows], b_red[~zero_rows], norms[~zero_rows]
        k = null.shape[1]
        if a_red.shape[0]:
            # Chebyshev centre: max r s.t. a_i . c + r |a_i| <= b_i, 0 <= r <= 1.
            res = linprog(np.r_[np.zeros(k), -1.0], A_ub=np.c_[a_red, norms], b_ub=b_red,
                          bounds=[(None, None)] * k + [(0.0, 1.0)], method="highs")
            if res.status == 2 or (res.status == 0 and res.x[-1] <= 1e-9):
                raise ValueError("Infeasible linear constraints: no control satisfies "
                                 "a_ub a <= b_ub (with a_eq a = b_eq), or the set has an empty "
                                 "interior; expected a set with interior points")
            if res.status != 0:
                raise ValueError(f"Could not find an interior point of the constraint set: "
                                 f"{res.message}")
            centre = res.x[:k]
        else:
            centre = np.zeros(k)
        self._a_red, self._b_red, self._norms, self._centre = a_red, b_red, norms, centre

    @property
    def raw_dim(self):
        return self._null.shape[1]

    @property
    def centre(self):
        """An interior control (the Chebyshev centre), NumPy."""
        return self._a_p + self._null @ self._centre

    def apply(self, raw):
        dtype = raw.dtype
        a_red = ops.cast(self._a_red, dtype)
        b_red = ops.cast(self._b_red, dtype)
        centre = ops.cast(self._centre, dtype)
        y = centre + raw
        m = self._a_red.shape[0]
        if m:
            if self.iterations:
                # Dykstra: cyclic projections onto the half-spaces with correction terms.
                sq = ops.cast(self._norms**2, dtype)
                corr = [ops.zeros_like(y) for _ in range(m)]
                for _ in range(self.iterations):
                    for i in range(m):
                        v = y + corr[i]
                        excess = ops.relu(ops.sum(v * a_red[i], axis=-1, keepdims=True)
                                          - b_red[i])
                        y_new = v - excess / sq[i] * a_red[i]
                        corr[i] = v - y_new
                        y = y_new
            # Radial retraction toward the centre: exact feasibility for any y.
            slack = b_red - ops.matmul(centre[None], ops.transpose(a_red))  # (1, m) > 0
            reach = ops.matmul(y - centre, ops.transpose(a_red))  # (B, m)
            positive = reach > 0
            # Both branches of `where` are differentiated: the unused one must stay finite.
            safe_reach = ops.where(positive, reach, ops.ones_like(reach))
            ratio = ops.where(positive, slack / safe_reach, ops.ones_like(reach))
            theta = ops.minimum(ops.cast(1.0, dtype), ops.min(ratio, axis=-1, keepdims=True))
            y = centre + theta * (y - centre)
        return ops.cast(self._a_p, dtype) + ops.matmul(y, ops.cast(self._null.T, dtype))

    def violation(self, a):
        a = np.asarray(a, dtype="float64")
        v = 0.0
        if self.a_ub.shape[0]:
            v = max(v, float(np.max(a @ self.a_ub.T - self.b_ub, initial=0.0)))
        if self.a_eq.shape[0]:
            v = max(v, float(np.max(np.abs(a @ self.a_eq.T - self.b_eq), initial=0.0)))
        return v

    def get_config(self):
        def lst(x):
            return x.tolist() if x.size else None

        return {**super().get_config(), "a_ub": lst(self.a_ub), "b_ub": lst(self.b_ub),
                "a_eq": lst(self.a_eq), "b_eq": lst(self.b_eq), "iterations": self.iterations}


CONSTRAINTS = {cls.type_name: cls for cls in (Unconstrained, Box, Simplex, LinearConstraints)}


def get_constraint(spec, dim=None):
    """Builds a constraint from a dict `{"type": ..., **config}`, a constraint, or None.

    Args:
        spec: None (unconstrained), a `ControlConstraint`, or a dict with a "type" key among
            "unconstrained", "box", "simplex", "linear".
        dim: control dimension, used when the dict has no "dim".
    """
    if spec is None:
        return Unconstrained(dim)
    if isinstance(spec, ControlConstraint):
        if dim is not None and spec.dim != dim:
            raise ValueError(f"The constraint acts on controls of dimension {spec.dim}, but the "
                             f"control dimension is {dim}")
        return spec
    if not isinstance(spec, dict) or spec.get("type") not in CONSTRAINTS:
        raise ValueError(f"A constraint spec must be None, a ControlConstraint or a dict with "
                         f"'type' in {sorted(CONSTRAINTS)}; received {spec!r}")
    config = {k: v for k, v in spec.items() if k != "type"}
    config.setdefault("dim", dim)
    if dim is not None and config["dim"] != dim:
        raise ValueError(f"Constraint dim={config['dim']} does not match the control dimension "
                         f"{dim}")
    return CONSTRAINTS[spec["type"]](**config)
