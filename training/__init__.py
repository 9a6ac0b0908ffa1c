"""Fitting previewers against a real decoder: teachers, data, fitters, evaluation (needs the `train` extra)."""
