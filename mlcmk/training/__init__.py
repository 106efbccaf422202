"""Training loops and callbacks."""

from mlcmk.training.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss, Y0Monitor
