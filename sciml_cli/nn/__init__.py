"""Networks any method can build: the MLP (activations, initialisation, Fourier features,
derivatives with respect to its inputs in one forward pass), the residual network of the Deep
Ritz method, the Fourier layers of the FNO, the small CNN of learned iterative reconstruction and the
periodic residual CNN and the stencil MLP of solver-in-the-loop corrections.

A network maps tensors to tensors and knows nothing of problems; a method (``models/``) owns
the objective, the data and the evaluation and builds the network it needs from here.
"""

from ..numerics.autodiff import parse_derivative
from .cnn import ConvNet, PeriodicResNet, StencilMLP
from .fourier import FourierLayer, FourierNet, SpectralConv, TruncatedDFT, pointwise
from .mlp import ACTIVATIONS, MLP, Derivatives, ResNet

__all__ = ["ACTIVATIONS", "ConvNet", "MLP", "Derivatives", "FourierLayer", "FourierNet", "PeriodicResNet", "SpectralConv",
           "StencilMLP", "TruncatedDFT", "parse_derivative", "ResNet", "pointwise"]
