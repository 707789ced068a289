"""skneuralode: neural and universal ODEs as scikit-learn estimators."""

from ._identifiability import IdentifiabilityWarning
from ._inputs import ConstantInputs
from ._persistence import load
from ._scoring import make_forecast_scorer
from ._settings import Collocation, MultipleShooting, Polish, Solver
from .neural_ode import NeuralODERegressor
from .universal_ode import UniversalODERegressor

__all__ = [
    "Collocation",
    "ConstantInputs",
    "IdentifiabilityWarning",
    "MultipleShooting",
    "NeuralODERegressor",
    "Polish",
    "Solver",
    "UniversalODERegressor",
    "load",
    "make_forecast_scorer",
]
__version__ = "0.1.0"
