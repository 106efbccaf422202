"""Public layers of mlcmk, one per file."""

from mlcmk.layers.bsde_step import BSDEStep
from mlcmk.layers.scaled_dense import ScaledDense
from mlcmk.layers.scaled_residual_block import ScaledResidualBlock
from mlcmk.layers.symmetric_embedding import SymmetricEmbedding
