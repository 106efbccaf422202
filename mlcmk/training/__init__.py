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
from mlcmk.training.curvature import gauss_newton_max_eigenvalue
from mlcmk.training.extended_msa import ExtendedMSA, ResidualControlNetwork
from mlcmk.training.free_energy_learning import (
    MCMCExplorer,
    ReinforcedDynamicsExplorer,
    build_free_energy_learner,
)
from mlcmk.training.particle_flow import ParticleRecorder, ParticleWassersteinFlow
from mlcmk.training.path_norm import (
    PathNormRegularized,
    RandomFeatureModel,
    path_norm,
    rademacher_complexity,
    regularized_loss,
)
from mlcmk.training.potential_learning import build_potential_learner
from mlcmk.training.potential_trainer import train_potential
