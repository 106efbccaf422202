"""Public layers of mlcmk, one per file."""

from mlcmk.layers.scaled_dense import ScaledDense
from mlcmk.layers.scaled_residual_block import ScaledResidualBlock
