"""Problems: one file each, owning all of its physics (see ``base.py`` for the views)."""
