# Sourced by fit_weights.sh and fit_upsampler.sh: the photos flux1's nets validate on (--val-images), left out of
# their training. Six kodak-sized photos; why, in fit_weights.sh.
flux1_val_images='skimage_astronaut*,skimage_chelsea*,skimage_coffee*,skimage_rocket*,sklearn_*'
