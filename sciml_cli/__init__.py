"""sciml: a command-line experiment runner for scientific machine learning."""

__version__ = "0.1.0"
