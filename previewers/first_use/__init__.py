"""The fit on first use: a closed-form previewer fitted against a pipeline's own VAE in seconds to minutes, cached
by the VAE's weights (the day-one net that can join it is trained by training/day_one.py)."""
