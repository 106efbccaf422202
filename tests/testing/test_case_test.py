import keras
import numpy as np

from mlcmk.testing import TestCase, two_cpu_strategy


class ForgetfulLayer(keras.layers.Layer):
    """Drops `units` from its config: run_layer_test must catch it."""

    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, inputs):
        return inputs @ self.kernel

    def get_config(self):
        return super().get_config()


class HarnessTest(TestCase):
    def test_run_layer_test_catches_a_broken_config(self):
        with self.assertRaisesRegex(AssertionError, "built a different layer"):
            self._run_layer_test_once(
                ForgetfulLayer, {"units": 3}, (2, 4), (2, 3), False, "float32"
            )

    def test_two_cpu_strategy(self):
        self.assertEqual(two_cpu_strategy().num_replicas_in_sync, 2)

    def test_run_export_test_handles_dict_inputs(self):
        a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
        outputs = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b]))
        model = keras.Model({"a": a, "b": b}, outputs)
        inputs = {"a": np.ones((4, 2), "float32"), "b": np.zeros((4, 3), "float32")}
        outputs = self.run_export_test(model, inputs)
        self.assertEqual(outputs[0].shape, (4, 1))
