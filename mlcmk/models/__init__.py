"""Public models of mlcmk."""

from mlcmk.models.control_policy_stack import ControlPolicyStack
from mlcmk.models.deep_bsde import DeepBSDE
from mlcmk.models.deep_potential import DeepPotential
from mlcmk.models.ensemble import Ensemble, TrustLevels
from mlcmk.models.free_energy import FreeEnergyModel
from mlcmk.models.moment_autoencoder import MomentAutoencoder
from mlcmk.models.moment_closure import MomentClosure
from mlcmk.models.scaled_resnet import ScaledResNet, make_scaled_resnet
from mlcmk.models.two_layer_network import TwoLayerNetwork


def list_models():
    """Returns `{name: class}` of the public models (the `keras.Model`s imported here), sorted."""
    import keras

    models = {
        value.__name__: value
        for value in globals().values()
        if isinstance(value, type)
        and issubclass(value, keras.Model)
        and value.__module__.startswith("mlcmk.models.")
    }
    return dict(sorted(models.items()))
