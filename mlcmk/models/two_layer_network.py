"""Two-layer network with a width-scaled output layer."""

import keras

from mlcmk._validation import check_positive_int
from mlcmk.layers._scaling import canonical_scaling
from mlcmk.layers.scaled_dense import ScaledDense


@keras.saving.register_keras_serializable(package="mlcmk")
class TwoLayerNetwork(keras.Model):
    r"""Two-layer network $f(x) = c(m)\sum_{j=1}^m a_j \sigma(w_j \cdot x + b_j)$.

    The hidden features $\sigma(w_j \cdot x + b_j)$ are a plain `Dense` layer with inner weights
    drawn from `N(0, I/d)` and zero biases; the output is a `ScaledDense` without bias. With
    `scaling="mean_field"`, `c(m) = 1/m` and the outer weights start at `N(0, 1)`; with
    `"conventional"`, `c(m) = 1` and they start at `N(0, 1/m)` (the usual fan-in scaling);
    `"ntk"` uses `c(m) = 1/sqrt(m)` and `N(0, 1)`.

    Args:
        width: positive int `m`, number of hidden neurons.
        output_dim: positive int, number of outputs.
        activation: hidden activation name or callable.
        scaling: `"mean_field"`, `"ntk"` / `"sqrt"` or `"conventional"`.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Input shape: `(batch, d)`. Output shape: `(batch, output_dim)`.

    Example:
    ```python
    model = mlcmk.TwoLayerNetwork(width=1000)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=10)
    ```
    """

    def __init__(self, width, output_dim=1, activation="relu", scaling="mean_field", **kwargs):
        width = check_positive_int("width", width)
        output_dim = check_positive_int("output_dim", output_dim)
        scaling = canonical_scaling(scaling)
        super().__init__(**kwargs)

        # === Layers ===
        self.hidden = keras.layers.Dense(
            width,
            activation=activation,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"
            ),
            dtype=self.dtype_policy,
            name="hidden",
        )
        if scaling == "conventional":
            outer_initializer = keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"
            )
        else:
            outer_initializer = keras.initializers.RandomNormal(stddev=1.0)
        self.readout = ScaledDense(
            output_dim,
            use_bias=False,
            scaling=scaling,
            kernel_initializer=outer_initializer,
            dtype=self.dtype_policy,
            name="readout",
        )

        # === Config ===
        self.width = width
        self.output_dim = output_dim
        self.activation = keras.activations.serialize(keras.activations.get(activation))
        self.scaling = scaling

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.readout.build(self.hidden.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs):
        return self.readout(self.hidden(inputs))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "output_dim": self.output_dim,
            "activation": self.activation,
            "scaling": self.scaling,
        }
