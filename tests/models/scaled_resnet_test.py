import numpy as np

from mlcmk import ScaledResNet, make_scaled_resnet
from mlcmk.models import list_models
from mlcmk.testing import TestCase


class ScaledResNetTest(TestCase):
    def test_forward_matches_layers(self):
        x = np.random.default_rng(0).standard_normal((5, 3))
        model = make_scaled_resnet(3, width=4, hidden_units=6, output_dim=2, dtype="float64")
        self.assertIsInstance(model, ScaledResNet)
        model.build(x.shape)
        self.assertEqual(len(model.blocks), 3)
        z = x @ np.asarray(model.lift.kernel) + np.asarray(model.lift.bias)
        for block in model.blocks:
            inner, bias, outer = (np.asarray(v) for v in block.get_weights())
            z = z + np.maximum(z @ inner + bias, 0.0) @ outer / (3 * 6)
        expected = z @ np.asarray(model.readout.kernel) + np.asarray(model.readout.bias)
        np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-12)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"num_blocks=0"):
            ScaledResNet(0, 4, 4)
        with self.assertRaisesRegex(ValueError, r"hidden_units=-4"):
            ScaledResNet(2, 4, -4)

    def test_list_models(self):
        models = list_models()
        self.assertIs(models["ScaledResNet"], ScaledResNet)
        self.assertIn("TwoLayerNetwork", models)
        self.assertEqual(list(models), sorted(models))

    def test_save_export(self):
        x = np.random.default_rng(0).standard_normal((8, 3)).astype("float32")
        model = ScaledResNet(2, 4, 5, scaling="ntk")
        model.build(x.shape)
        reloaded = self.run_model_saving_test(model, x)
        self.assertEqual(reloaded.get_config(), model.get_config())
        self.run_export_test(model, x)
