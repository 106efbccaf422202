"""Dense layer whose sum over inputs is scaled by a width-dependent factor."""

import keras
from keras import ops

from mlcmk._validation import check_positive_int
from mlcmk.layers._scaling import (
    canonical_scaling,
    check_input_shape,
    width_factor,
)


@keras.saving.register_keras_serializable(package="mlcmk")
class ScaledDense(keras.layers.Layer):
    r"""Dense layer with a width scaling: `y = activation(c(m) * x @ kernel + bias)`.

    `m` is the input width and `c(m)` is `1/m` (`"mean_field"`), `1/sqrt(m)` (`"ntk"`, alias
    `"sqrt"`) or `1` (`"conventional"`, a plain `Dense`). After `m` hidden neurons, `ScaledDense(1)`
    in mean-field scaling is the scaled two-layer network
    $f(x) = \frac{1}{m}\sum_{j=1}^m a_j \sigma(w_j \cdot x)$: each neuron is a particle whose
    parameters stay O(1) as `m` grows.

    Args:
        units: positive int, output width.
        activation: activation name or callable; `None` means linear.
        use_bias: bool, whether to add a bias (not scaled by `c(m)`).
        scaling: `"mean_field"` (default), `"ntk"` / `"sqrt"` or `"conventional"`.
        kernel_initializer: initializer for the kernel. `None` picks `RandomNormal(stddev=1)`
            for `"mean_field"` and `"ntk"` (O(1) particles) and `"glorot_uniform"` for
            `"conventional"`.
        bias_initializer: initializer for the bias.
        kernel_regularizer: optional regularizer for the kernel.
        bias_regularizer: optional regularizer for the bias.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(..., m)`. Output shape: `(..., units)`.

    Example:
    ```python
    hidden = keras.layers.Dense(1000, activation="relu")
    head = mlcmk.ScaledDense(1, use_bias=False)  # f(x) = mean_j a_j relu(w_j . x + b_j)
    ```

    Reference: Song Mei, Andrea Montanari, Phan-Minh Nguyen, "A mean field view of the landscape
    of two-layer neural networks", PNAS (2018); Weinan E, Chao Ma, Lei Wu, "Machine learning
    from a continuous viewpoint" (2020).
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        scaling="mean_field",
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        units = check_positive_int("units", units)
        scaling = canonical_scaling(scaling)
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.scaling = scaling
        if kernel_initializer is None:
            kernel_initializer = (
                "glorot_uniform"
                if scaling == "conventional"
                else keras.initializers.RandomNormal(stddev=1.0)
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = check_input_shape(type(self).__name__, input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        self._factor = width_factor(self.scaling, input_dim)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        if self._factor != 1.0:
            outputs = outputs * self._factor  # a Python float keeps the tensor dtype
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "scaling": self.scaling,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }
