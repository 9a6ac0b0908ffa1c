"""NaN/inf latents are reported once per run, naming the step and how much is non-finite; the callback never raises."""

import warnings

import torch

from previewers import PreviewCallback
from previewers.models.families import affine


def nonfinite_messages(caught) -> list[str]:
    return [str(w.message) for w in caught if "NaN or inf" in str(w.message)]


def test_callback_warns_once_per_run_naming_the_step():
    cb = PreviewCallback(affine(4), keep=True)
    good, bad = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    bad[0, 0, 0, :2] = float("nan")  # 2 of 64 values
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _run in range(2):
            for step, latents in enumerate([good, good, bad, bad]):
                kwargs = {"latents": latents}
                assert cb(None, step, 1.0, kwargs) is kwargs
    cb.close()
    messages = nonfinite_messages(caught)
    assert len(messages) == 2  # one per run
    assert all("at step 2" in m and "3.1% of the latent values" in m for m in messages)
    assert sorted(cb.images) == [0, 1, 2, 3]  # previews still come, black where the values are not finite


def test_finite_latents_never_warn():
    cb = PreviewCallback(affine(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            cb(None, step, 1.0, {"latents": torch.randn(1, 4, 4, 4) * 1e30})
    cb.close()
    assert not nonfinite_messages(caught)
