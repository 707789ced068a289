"""skneuralode: neural and universal ODEs as scikit-learn estimators."""

from .neural_ode import NeuralODERegressor

__all__ = ["NeuralODERegressor"]
__version__ = "0.1.0"
