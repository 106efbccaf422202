"""Training loops and callbacks."""

from mlcmk.training.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss, Y0Monitor
from mlcmk.training.potential_trainer import train_potential
