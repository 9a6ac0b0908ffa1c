"""Command modules of the `latent-preview` CLI (see previewers/cli/__init__.py), and what they share."""

import importlib

# import name → what pip installs it as; all of them come with the [train] extra
DISTRIBUTIONS = {"diffusers": "diffusers", "transformers": "transformers", "skimage": "scikit-image", "tqdm": "tqdm"}


class MissingDependency(Exception):
    """A command needs a package of the [train] extra that is not installed; the message says what to install."""


def require(*modules: str) -> None:
    """Raise MissingDependency naming every one of `modules` (import names) that cannot be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            missing.append(DISTRIBUTIONS.get(name, name))
    if missing:
        raise MissingDependency(f"needs {' and '.join(missing)}, which the runtime install leaves out "
                                "(pip install 'latent-preview[train]')")
