r"""Ensembles of models: mean prediction, spread, model deviation and trust levels.

The spread of K independently initialised and trained models is the a posteriori error
indicator of concurrent learning (DP-GEN, reinforced dynamics): where the members agree the
prediction is trusted, where they disagree the configuration is worth labelling.
"""

import os

import keras
import numpy as np

from mlcmk._validation import check_number, check_positive_int
from mlcmk.io import atomic_directory

ACCURATE, CANDIDATE, FAILED = 0, 1, 2
CLASS_NAMES = ("accurate", "candidate", "failed")


def max_vector_deviation(member_outputs):
    r"""Model deviation from stacked member outputs, written for per-atom vectors.

    With outputs $F_k$ of the K members, the deviation of one configuration is
    $\max_i \sqrt{\langle |F_{k,i} - \langle F_{\cdot,i}\rangle|^2 \rangle_k}$: the largest
    root-mean-square spread (over members) of the vectors $F_i$ (over atoms i). It is the DP-GEN
    force deviation for outputs of shape `(K, n, atoms, 3)`; for mean forces on collective
    variables, `(K, n, d)`, the configuration is one "atom" with a d-vector; for scalar outputs,
    `(K, n)` or `(K, n, 1)`, it is the standard deviation over members.

    Args:
        member_outputs: array of shape `(K, n)`, `(K, n, d)` or `(K, n, atoms, d)`.

    Returns:
        Array of shape `(n,)`.
    """
    outputs = np.asarray(member_outputs, dtype=np.float64)
    if outputs.ndim < 2 or outputs.ndim > 4:
        raise ValueError(
            "`member_outputs` must have shape (K, n), (K, n, d) or (K, n, atoms, d); "
            f"received shape {outputs.shape}"
        )
    if outputs.ndim == 2:
        outputs = outputs[..., None]
    if outputs.ndim == 3:
        outputs = outputs[:, :, None, :]
    return np.sqrt(np.sum(_member_variance(outputs), axis=-1)).max(axis=-1)


def _member_variance(outputs):
    # Centred on the first member, so that identical members give exactly zero.
    shifted = outputs - outputs[0]
    return np.maximum(np.mean(shifted**2, axis=0) - np.mean(shifted, axis=0) ** 2, 0.0)


class TrustLevels:
    """Trust levels `lo <= hi` sorting configurations by model deviation.

    deviation < lo: accurate (trusted, not labelled); lo <= deviation < hi: candidate (labelled);
    deviation >= hi: failed (the models are too far off for the configuration to be physical,
    e.g. an exploration that blew up; not labelled).

    Args:
        lo: float >= 0.
        hi: float >= lo (may be `inf`).
    """

    def __init__(self, lo, hi=float("inf")):
        self.lo = check_number("lo", lo, 0, allow_inf=True)
        self.hi = check_number("hi", hi, 0, allow_inf=True)
        if self.lo > self.hi:
            raise ValueError(f"Trust levels need lo <= hi; received lo={lo!r}, hi={hi!r}")

    def classify(self, deviation):
        """Returns int codes ACCURATE (0), CANDIDATE (1), FAILED (2) of shape `deviation.shape`.

        A non-finite deviation is FAILED.
        """
        deviation = np.asarray(deviation, dtype=np.float64)
        codes = np.full(deviation.shape, CANDIDATE, dtype=np.int64)
        codes[deviation < self.lo] = ACCURATE
        codes[~(deviation < self.hi)] = FAILED
        return codes

    def get_config(self):
        return {"lo": self.lo, "hi": self.hi}

    def __repr__(self):
        return f"TrustLevels(lo={self.lo!r}, hi={self.hi!r})"


def as_trust_levels(trust_levels):
    """`trust_levels` as `TrustLevels`: itself, or built from a `(lo, hi)` pair.

    ValueError naming `trust_levels` for anything else; the levels' own checks otherwise.
    """
    if isinstance(trust_levels, TrustLevels):
        return trust_levels
    if not isinstance(trust_levels, (tuple, list)) or len(trust_levels) != 2:
        raise ValueError(f"`trust_levels` must be TrustLevels or a (lo, hi) pair; received "
                         f"trust_levels={trust_levels!r}")
    return TrustLevels(*trust_levels)


def _call_output(member, x):
    return member(x, training=False)


class Ensemble:
    """K models of one architecture with different seeds: mean, spread, model deviation.

    Any Keras model works (an mlcmk model, a `Sequential`, later `DeepPotential`). The members
    are built by `factory(seed)`; Keras' global seed is also set to `seed` before each call, so
    that a factory that ignores its argument still gives differently initialised members.

    Args:
        members: list of Keras models (use `Ensemble.from_factory` to build them).
        output_fn: callable `(member, x) -> array` giving the quantity whose spread is the model
            deviation (default: `member(x)`); for a free-energy model the mean forces
            (`lambda m, s: m.mean_force(s)`), for a potential the forces.
        deviation_fn: callable mapping stacked member outputs `(K, n, ...)` to `(n,)`
            deviations; default `max_vector_deviation`.

    Example:
    ```python
    ensemble = Ensemble.from_factory(lambda seed: FreeEnergyModel(seed=seed), num_members=4)
    mean, std = ensemble.predict(s)
    deviation = ensemble.model_deviation(s)
    classes = TrustLevels(lo=1.0, hi=5.0).classify(deviation)
    ```
    """

    def __init__(self, members, output_fn=None, deviation_fn=None):
        members = list(members)
        if not members:
            raise ValueError("`members` must be a non-empty list of Keras models; received []")
        for i, member in enumerate(members):
            if not isinstance(member, keras.Model):
                raise TypeError(f"`members[{i}]` must be a keras.Model; received "
                                f"{type(member).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"`output_fn` must be callable; received {output_fn!r}")
        if deviation_fn is not None and not callable(deviation_fn):
            raise TypeError(f"`deviation_fn` must be callable; received {deviation_fn!r}")
        self.members = members
        self.output_fn = output_fn or _call_output
        self.deviation_fn = deviation_fn or max_vector_deviation

    @classmethod
    def from_factory(cls, factory, num_members=4, seeds=None, **kwargs):
        """Builds `num_members` members with `factory(seed)`, seeds `0..K-1` unless given."""
        if not callable(factory):
            raise TypeError(f"`factory` must be callable; received {factory!r}")
        if seeds is None:
            num_members = check_positive_int("num_members", num_members)
            seeds = list(range(num_members))
        seeds = [int(s) for s in seeds]
        members = []
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            members.append(factory(seed))
        ensemble = cls(members, **kwargs)
        ensemble.seeds = seeds
        return ensemble

    @property
    def num_members(self):
        return len(self.members)

    def member_outputs(self, x):
        """Stacked outputs `(K, n, ...)` of `output_fn` for every member, as NumPy."""
        return np.stack([np.asarray(keras.ops.convert_to_numpy(self.output_fn(m, x)))
                         for m in self.members])

    def predict(self, x):
        """Returns `(mean, std)` over members of `output_fn`, each of shape `(n, ...)`."""
        outputs = self.member_outputs(x)
        mean = outputs[0] + np.mean(outputs - outputs[0], axis=0)
        return mean, np.sqrt(_member_variance(outputs))

    def model_deviation(self, x):
        """Returns the model deviation `(n,)` of each configuration in `x`."""
        return self.deviation_fn(self.member_outputs(x))

    def classify(self, x, lo, hi=float("inf")):
        """Sorts `x` by model deviation; returns `(codes, deviation)` (see `TrustLevels`)."""
        deviation = self.model_deviation(x)
        return TrustLevels(lo, hi).classify(deviation), deviation

    # -------------------------------------------------------------- persistence
    def save_weights(self, directory):
        """Writes `member_<k>.weights.h5` for every member into `directory`."""
        os.makedirs(directory, exist_ok=True)
        for k, member in enumerate(self.members):
            member.save_weights(os.path.join(directory, f"member_{k}.weights.h5"))

    def load_weights(self, directory):
        """Reads the weights written by `save_weights`."""
        for k, member in enumerate(self.members):
            path = os.path.join(directory, f"member_{k}.weights.h5")
            if not os.path.exists(path):
                raise FileNotFoundError(f"No weights of member {k} in {directory!r}")
            member.load_weights(path)

    def save(self, directory):
        """Saves every member as `member_<k>.keras` (architecture, weights, optimizer), replacing
        `directory` atomically (`mlcmk.io.atomic_directory`)."""
        with atomic_directory(directory) as tmp:
            for k, member in enumerate(self.members):
                member.save(os.path.join(tmp, f"member_{k}.keras"))

    @classmethod
    def load(cls, directory, **kwargs):
        """Loads an ensemble written by `save`."""
        names = sorted((f for f in os.listdir(directory) if f.endswith(".keras")),
                       key=lambda f: int(f.split("_")[1].split(".")[0]))
        if not names:
            raise FileNotFoundError(f"No member_<k>.keras files in {directory!r}")
        return cls([keras.saving.load_model(os.path.join(directory, f)) for f in names],
                   **kwargs)
