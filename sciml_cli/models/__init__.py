"""Models: one file per family. Each names the problem view it needs (``Model.view``)."""
