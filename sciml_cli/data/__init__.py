"""HDF5 datasets written by the reference solvers."""
