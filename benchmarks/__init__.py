"""Benchmarks: held-out quality, speed beside the teacher and the full VAE, and the step callback's overhead."""
