"""Global numerical settings: precision, seeds, TF32 and logical CPU devices.

Nothing here runs on import; every setting is an explicit call.
"""

import contextlib

import keras
import tensorflow as tf

from mlcmk._validation import check_positive_int

PRECISIONS = ("float32", "float64")

# Whether `set_precision("float64")` turned grappler's remapper off (so that "float32" turns it
# back on, and a remapper a user turned off stays off).
_remapper_off_for_float64 = False


def disable_tf32():
    """Turns TensorFloat-32 off, so that float32 matmuls on Ampere+ GPUs keep full precision.

    TF32 rounds matmul inputs to 10 mantissa bits, which ruins finite-difference checks and
    the accuracy figures of scientific computations.
    """
    tf.config.experimental.enable_tensor_float_32_execution(False)


def set_precision(dtype):
    """Sets the Keras float type and dtype policy for new layers and weights; turns TF32 off.

    In float64 it also turns grappler's remapper off (`tf.config.optimizer`, option
    `"remapping"`) until the precision is set back to float32. Its oneDNN fusions cover
    float32, bfloat16 and half: on float64 graphs it logs "Not handling type DT_DOUBLE" for
    each candidate (4–6 lines per dense network and graph, hundreds in a training run). With
    it off a float64 Keras fit measured the same speed (0.28–0.39 s against 0.29–0.34 s for
    200 steps of a 64 x 64 network, within the noise).

    Args:
        dtype: `"float32"` or `"float64"`.
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"`dtype` must be one of {PRECISIONS}; received dtype={dtype!r}")
    keras.config.set_floatx(dtype)
    # Layers take their dtype from the global dtype policy, which Keras caches from floatx on
    # first use; set both so that new layers follow.
    keras.config.set_dtype_policy(dtype)
    disable_tf32()
    _set_remapper_for(dtype)


def _set_remapper_for(dtype):
    global _remapper_off_for_float64
    if dtype == "float64":
        if tf.config.optimizer.get_experimental_options().get("remapping", True):
            tf.config.optimizer.set_experimental_options({"remapping": False})
            _remapper_off_for_float64 = True
    elif _remapper_off_for_float64:
        tf.config.optimizer.set_experimental_options({"remapping": True})
        _remapper_off_for_float64 = False


def get_precision():
    """Returns the current Keras default float type as a string."""
    return keras.config.floatx()


@contextlib.contextmanager
def precision(dtype):
    """Context manager that sets the precision and restores the previous one on exit.

    Example:
    ```python
    with mlcmk.config.precision("float64"):
        model = mlcmk.TwoLayerNetwork(width=100)
    ```
    """
    previous_floatx = keras.config.floatx()
    previous_policy = keras.config.dtype_policy()
    set_precision(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous_floatx)
        keras.config.set_dtype_policy(previous_policy)
        _set_remapper_for(previous_floatx)


def set_seed(seed):
    """Seeds Python, NumPy, TensorFlow and Keras random generators.

    Args:
        seed: non-negative int.
    """
    keras.utils.set_random_seed(check_positive_int("seed", seed, 0))


def configure_logical_cpus(n):
    """Splits the physical CPU into `n` logical devices (`/cpu:0` ... `/cpu:{n-1}`).

    Needed to test `tf.distribute.MirroredStrategy` without several accelerators. Must run before
    TensorFlow initialises its devices (before the first op). Calling it again after
    initialisation is harmless when at least `n` logical CPUs already exist.

    Args:
        n: positive int, number of logical CPU devices.

    Raises:
        RuntimeError: if TensorFlow has already initialised with fewer than `n` logical CPUs.
    """
    n = check_positive_int("n", n)
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as err:
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) >= n:
            return
        raise RuntimeError(
            f"Cannot create {n} logical CPU devices: TensorFlow is already initialised with "
            f"{len(existing)}. Call mlcmk.config.configure_logical_cpus({n}) before any "
            "TensorFlow op runs (for tests: at import time of tests/conftest.py)."
        ) from err
