"""Training loops and callbacks."""

from mlcmk.training.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss, Y0Monitor
from mlcmk.training.concurrent_learning import (
    ConcurrentLearner,
    EnsembleTrainer,
    Examiner,
    Explorer,
    Labeller,
    Trainer,
)
