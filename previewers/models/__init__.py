"""The previewer models: the six families, the shipped latent spaces, TAESD-family decoders, weight files with
their typed cards, and the registry of shipped files."""
