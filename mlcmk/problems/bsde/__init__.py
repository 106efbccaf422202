"""Semilinear parabolic PDEs for the Deep BSDE method, registered under kind "bsde"."""

from mlcmk.problems.bsde.allen_cahn import AllenCahn
from mlcmk.problems.bsde.base import BSDEProblem, ReferenceValue
from mlcmk.problems.bsde.black_scholes import (
    BlackScholesBarenblatt,
    BlackScholesDefaultRisk,
    PricingDiffRate,
)
from mlcmk.problems.bsde.hjb import HJBLQ, hjb_lambda_sweep
from mlcmk.problems.bsde.quadratic_gradient import QuadraticGradient

__all__ = [
    "AllenCahn", "BSDEProblem", "BlackScholesBarenblatt", "BlackScholesDefaultRisk", "HJBLQ",
    "PricingDiffRate", "QuadraticGradient", "ReferenceValue", "hjb_lambda_sweep",
]
