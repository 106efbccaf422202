"""Callbacks: reference tracking, a non-finite guard, atomic resumable checkpoints."""

import json
import math
import os

import keras

from mlcmk.io import temporary_sibling


class Y0Monitor(keras.callbacks.Callback):
    """Adds `y0` and `y0_relative_error` (against `reference`) to the logs after each epoch.

    The entries reach `History`, `CSVLogger`, TensorBoard and the progress bar.

    Args:
        reference: float reference value of u(0, x0); default `model.problem.reference_value()`.
    """

    def __init__(self, reference=None):
        super().__init__()
        self.reference = None if reference is None else float(reference)

    def on_train_begin(self, logs=None):
        if self.reference is None:
            ref = self.model.problem.reference_value()
            self.reference = None if ref is None else float(ref)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        y0 = self.model.y0_value()
        logs["y0"] = y0
        if self.reference:
            logs["y0_relative_error"] = abs(y0 - self.reference) / abs(self.reference)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first non-finite loss with a message that says what to do.

    The model's `train_step` skips the update of a non-finite step, so the weights (and the last
    checkpoint, which `ResumableCheckpoint` writes only after finite epochs) stay good.
    `self.stopped_at` holds `(epoch, batch)` after a stop.
    """

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (self._epoch, batch)
            self.model.stop_training = True
            print(
                f"\nmlcmk: the training loss became non-finite ({float(loss)}) at epoch "
                f"{self._epoch + 1}, step {batch + 1}; training stopped. The weights are those "
                "of the last finite step and the last checkpoint is kept. Lower the learning "
                "rate, use float64 (mlcmk.config.set_precision('float64')) or check the "
                "problem's generator and terminal condition for overflow."
            )


class ResumableCheckpoint(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that writes atomically and never saves a non-finite state.

    Weights (with the optimizer state) and the epoch counter are written to temporary files and
    moved into place with `os.replace`, so a crash while saving leaves the previous checkpoint
    intact. A new `fit` with the same directory resumes from the last checkpoint. The checkpoint
    is kept after training (`delete_checkpoint=False` by default).
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=False):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint)
        self._last_logs_finite = True

    def on_epoch_end(self, epoch, logs=None):
        values = [v for v in (logs or {}).values() if isinstance(v, (int, float))]
        self._last_logs_finite = all(math.isfinite(v) for v in values)
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not self._last_logs_finite:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp_weights = temporary_sibling(self._weights_path)
        tmp_meta = temporary_sibling(self._training_metadata_path)
        try:
            self.model.save_weights(tmp_weights, overwrite=True)
            with open(tmp_meta, "w", encoding="utf-8") as f:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
                f.flush()
                os.fsync(f.fileno())
            # Weights first: a crash between the renames repeats an epoch, never skips one.
            os.replace(tmp_weights, self._weights_path)
            os.replace(tmp_meta, self._training_metadata_path)
        except BaseException:
            for tmp in (tmp_weights, tmp_meta):
                if os.path.exists(tmp):
                    os.remove(tmp)
            raise
