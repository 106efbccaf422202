"""mlcmk: Keras 3 layers, models and training loops for computational mathematics.

mlcmk runs on Keras 3 with the TensorFlow backend only: it relies on `tf.distribute`,
SavedModel export and TensorFlow Probability.
"""

import os as _os

__version__ = "0.1.0"

# Checked before importing Keras: Keras reads the backend once, on first import, so a wrong
# value cannot be repaired afterwards and importing a heavy backend would be wasted time.
_backend = _os.environ.get("KERAS_BACKEND")
if _backend is not None and _backend != "tensorflow":
    raise ImportError(
        f"mlcmk requires Keras with the TensorFlow backend, but KERAS_BACKEND={_backend!r}. "
        "Unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow before starting Python."
    )

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "mlcmk requires Keras with the TensorFlow backend, but Keras runs on "
        f"{_keras.backend.backend()!r} (set in ~/.keras/keras.json or by a previous import). "
        "Set KERAS_BACKEND=tensorflow before importing keras, or edit the 'backend' entry "
        "of ~/.keras/keras.json."
    )

from mlcmk import (  # noqa: E402
    config,
    problems,
    training,  # noqa: E402
)
from mlcmk.layers import (  # noqa: E402
    BSDEStep,
    ScaledDense,
    ScaledResidualBlock,
    SymmetricEmbedding,
)
from mlcmk.models import (  # noqa: E402
    ControlPolicyStack,
    DeepBSDE,
    DeepPotential,
    Ensemble,
    FreeEnergyModel,
    ScaledResNet,
    TwoLayerNetwork,
    make_scaled_resnet,
)
