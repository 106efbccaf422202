"""Residual network made of width-scaled residual blocks."""

import keras

from mlcmk._validation import check_positive_int
from mlcmk.layers._scaling import canonical_scaling
from mlcmk.layers.scaled_residual_block import ScaledResidualBlock


@keras.saving.register_keras_serializable(package="mlcmk")
class ScaledResNet(keras.Model):
    r"""Scaled residual network: linear lift to `width`, `num_blocks` residual blocks, readout.

    `z_0 = x @ U`, `z_{l+1} = z_l + 1/(L M) sum_j a_j sigma(w_j . z_l + b_j)` (mean-field),
    `f(x) = z_L @ V + c`. With `L` blocks this is forward Euler with step `1/L` for the flow-based
    model of E, Ma and Wu.

    Args:
        num_blocks: positive int `L`.
        width: positive int `D`, width of the residual stream.
        hidden_units: positive int `M`, neurons per block.
        output_dim: positive int, number of outputs.
        activation: activation of the blocks.
        scaling: `"mean_field"`, `"ntk"` / `"sqrt"` or `"conventional"`.
        **kwargs: base `keras.Model` arguments.

    Input shape: `(batch, d)`. Output shape: `(batch, output_dim)`.
    """

    def __init__(
        self,
        num_blocks,
        width,
        hidden_units,
        output_dim=1,
        activation="relu",
        scaling="mean_field",
        **kwargs,
    ):
        num_blocks = check_positive_int("num_blocks", num_blocks)
        width = check_positive_int("width", width)
        hidden_units = check_positive_int("hidden_units", hidden_units)
        output_dim = check_positive_int("output_dim", output_dim)
        scaling = canonical_scaling(scaling)
        super().__init__(**kwargs)

        # === Layers ===
        self.lift = keras.layers.Dense(width, dtype=self.dtype_policy, name="lift")
        self.blocks = [
            ScaledResidualBlock(
                hidden_units,
                num_blocks,
                activation=activation,
                scaling=scaling,
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            for i in range(num_blocks)
        ]
        self.readout = keras.layers.Dense(output_dim, dtype=self.dtype_policy, name="readout")

        # === Config ===
        self.num_blocks = num_blocks
        self.width = width
        self.hidden_units = hidden_units
        self.output_dim = output_dim
        self.activation = keras.activations.serialize(keras.activations.get(activation))
        self.scaling = scaling

    def build(self, input_shape):
        self.lift.build(input_shape)
        stream_shape = self.lift.compute_output_shape(input_shape)
        for block in self.blocks:
            block.build(stream_shape)
        self.readout.build(stream_shape)
        self.built = True

    def call(self, inputs):
        z = self.lift(inputs)
        for block in self.blocks:
            z = block(z)
        return self.readout(z)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_blocks": self.num_blocks,
            "width": self.width,
            "hidden_units": self.hidden_units,
            "output_dim": self.output_dim,
            "activation": self.activation,
            "scaling": self.scaling,
        }


def make_scaled_resnet(
    num_blocks, width, hidden_units, output_dim=1, activation="relu", scaling="mean_field", **kwargs
):
    """Returns a `ScaledResNet`; see its docstring for the arguments."""
    return ScaledResNet(
        num_blocks,
        width,
        hidden_units,
        output_dim=output_dim,
        activation=activation,
        scaling=scaling,
        **kwargs,
    )
