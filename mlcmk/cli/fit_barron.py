"""`mlcmk fit_barron`: fit a TwoLayerNetwork to the Barron teacher and print the test error."""

from absl import flags

DESCRIPTION = "Train a scaled two-layer network on the barron_teacher problem; print test error."

_CONFIG = flags.DEFINE_string("config", None, "JSON file of flag values; command line wins.")
_WIDTH = flags.DEFINE_integer("width", 1000, "Hidden width m.", lower_bound=1)
_SCALING = flags.DEFINE_enum(
    "scaling", "mean_field", ["mean_field", "ntk", "sqrt", "conventional"], "Width scaling."
)
_DIM = flags.DEFINE_integer("dim", 10, "Input dimension d.", lower_bound=1)
_SAMPLES = flags.DEFINE_integer("samples", 1000, "Training samples.", lower_bound=1)
_TEST_SAMPLES = flags.DEFINE_integer("test_samples", 1000, "Test samples.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", 50, "Training epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Batch size.", lower_bound=1)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer.")
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate",
    1e-3,
    "Learning rate. For sgd with mean_field scaling it is the time step of the mean-field "
    "dynamics and is multiplied by the width (each particle then moves at O(1) speed).",
)
_PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "float64"], "Float type.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the samples and of the initialisation.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 lines.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def main(argv):
    del argv
    from mlcmk.cli.common import apply_config_to_flags, load_json_config, write_json

    if _CONFIG.value:
        apply_config_to_flags(flags.FLAGS, load_json_config(_CONFIG.value))

    import keras
    import numpy as np

    import mlcmk
    from mlcmk.problems import build_problem

    mlcmk.config.set_precision(_PRECISION.value)
    mlcmk.config.set_seed(_SEED.value)
    dtype = _PRECISION.value
    problem = build_problem({"name": "barron_teacher", "dim": _DIM.value})
    x, y = problem.sample(_SAMPLES.value, seed=_SEED.value, dtype=dtype)
    x_test, y_test = problem.sample(_TEST_SAMPLES.value, seed=_SEED.value + 1, dtype=dtype)

    model = mlcmk.TwoLayerNetwork(width=_WIDTH.value, scaling=_SCALING.value)
    model.build((None, _DIM.value))
    if _OPTIMIZER.value == "sgd":
        learning_rate = _LEARNING_RATE.value
        if model.scaling == "mean_field":
            learning_rate *= _WIDTH.value
        optimizer = keras.optimizers.SGD(learning_rate)
    else:
        optimizer = keras.optimizers.Adam(_LEARNING_RATE.value)
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(
        x, y, epochs=_EPOCHS.value, batch_size=_BATCH_SIZE.value, verbose=_VERBOSE.value
    )
    prediction = np.asarray(model.predict(x_test, batch_size=1000, verbose=0), dtype=np.float64)
    y_test = y_test.astype(np.float64)
    test_mse = float(np.mean((prediction - y_test) ** 2))
    relative_l2 = float(np.sqrt(test_mse / np.mean(y_test**2)))
    print(f"test_mse={test_mse:.6g} relative_l2_error={relative_l2:.6g}")
    if _OUTPUT.value:
        write_json(
            _OUTPUT.value,
            {
                "flags": {
                    name: flags.FLAGS[name].value
                    for name in (
                        "width",
                        "scaling",
                        "dim",
                        "samples",
                        "test_samples",
                        "epochs",
                        "batch_size",
                        "optimizer",
                        "learning_rate",
                        "precision",
                        "seed",
                    )
                },
                "train_loss": [float(v) for v in history.history["loss"]],
                "test_mse": test_mse,
                "relative_l2_error": relative_l2,
            },
        )
