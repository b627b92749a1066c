"""Numerical kernels shared by several problems, each tested against exact results."""
