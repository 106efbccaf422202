"""Residual block of a scaled ResNet: one forward-Euler step of a flow-based model."""

import keras
from keras import ops

from mlcmk._validation import check_positive_int
from mlcmk.layers._scaling import (
    canonical_scaling,
    check_input_shape,
    width_factor,
)


@keras.saving.register_keras_serializable(package="mlcmk")
class ScaledResidualBlock(keras.layers.Layer):
    r"""Residual block `z <- z + c * sigma(z @ W + b) @ A` of a scaled residual network.

    In mean-field scaling `c = 1/(L*M)` with `L = num_blocks` and `M = hidden_units`:
    $z \leftarrow z + \frac{1}{LM}\sum_{j=1}^{M} a_j \sigma(w_j \cdot z + b_j)$,
    one forward-Euler step of size `1/L` of the flow
    $\dot z = \mathbb{E}_{(a,w,b)\sim\rho_t}[a\,\sigma(w\cdot z + b)]$, with the expectation over
    the `M` neurons (particles). `"ntk"` uses `c = 1/(L*sqrt(M))`; `"conventional"` uses `c = 1`
    (a plain residual block, no step size).

    Args:
        hidden_units: positive int `M`, number of neurons in the block.
        num_blocks: positive int `L`, number of blocks of the network (sets the step size).
        activation: activation name or callable `sigma`.
        scaling: `"mean_field"` (default), `"ntk"` / `"sqrt"` or `"conventional"`.
        inner_initializer: initializer for `W` (shape `(D, M)`); `None` means `N(0, 1/D)`.
        bias_initializer: initializer for `b`.
        outer_initializer: initializer for `A` (shape `(M, D)`); `None` means
            `RandomNormal(stddev=1)` for `"mean_field"` and `"ntk"`, `"glorot_uniform"` for
            `"conventional"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(..., D)`. Output shape: `(..., D)`.

    Reference: Weinan E, Chao Ma, Lei Wu, "Machine learning from a continuous viewpoint" (2020),
    the flow-based representation.
    """

    def __init__(
        self,
        hidden_units,
        num_blocks,
        activation="relu",
        scaling="mean_field",
        inner_initializer=None,
        bias_initializer="zeros",
        outer_initializer=None,
        **kwargs,
    ):
        hidden_units = check_positive_int("hidden_units", hidden_units)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        scaling = canonical_scaling(scaling)
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.num_blocks = num_blocks
        self.activation = keras.activations.get(activation)
        self.scaling = scaling
        if inner_initializer is None:
            inner_initializer = keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"
            )
        if outer_initializer is None:
            outer_initializer = (
                "glorot_uniform"
                if scaling == "conventional"
                else keras.initializers.RandomNormal(stddev=1.0)
            )
        self.inner_initializer = keras.initializers.get(inner_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.outer_initializer = keras.initializers.get(outer_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        dim = check_input_shape(type(self).__name__, input_shape)
        self.inner_kernel = self.add_weight(
            name="inner_kernel", shape=(dim, self.hidden_units), initializer=self.inner_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.hidden_units,), initializer=self.bias_initializer
        )
        self.outer_kernel = self.add_weight(
            name="outer_kernel", shape=(self.hidden_units, dim), initializer=self.outer_initializer
        )
        if self.scaling == "conventional":
            self._factor = 1.0
        else:
            self._factor = width_factor(self.scaling, self.hidden_units) / self.num_blocks
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: dim})

    def call(self, inputs):
        hidden = self.activation(ops.matmul(inputs, self.inner_kernel) + self.bias)
        update = ops.matmul(hidden, self.outer_kernel)
        if self._factor != 1.0:
            update = update * self._factor  # a Python float keeps the tensor dtype
        return inputs + update

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "num_blocks": self.num_blocks,
            "activation": keras.activations.serialize(self.activation),
            "scaling": self.scaling,
            "inner_initializer": keras.initializers.serialize(self.inner_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "outer_initializer": keras.initializers.serialize(self.outer_initializer),
        }
