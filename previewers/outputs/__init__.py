"""Where previews go: the background writer (PNG per step, animation, contact sheet, user function), image helpers,
and saved-latents files."""
