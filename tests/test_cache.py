"""`latent-preview cache --list/--clear` on the cache root ($LATENT_PREVIEW_CACHE)."""

from previewers.cli import main


def test_cache_lists_and_clears_every_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    assert main(["cache", "--list"]) == 0
    assert "no cache" in capsys.readouterr().out
    (tmp_path / "cache" / "pairs" / "abc").mkdir(parents=True)
    (tmp_path / "cache" / "pairs" / "abc" / "shard-00000.safetensors").write_bytes(b"x" * 2500)
    (tmp_path / "cache" / "fitted").mkdir()
    (tmp_path / "cache" / "fitted" / "sd1.safetensors").write_bytes(b"x" * 10)
    assert main(["cache", "--list"]) == 0
    out = capsys.readouterr().out
    assert "pairs  2.5 KB  1 file" in out and "fitted  10 B  1 file" in out and "total 2.5 KB" in out
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert out.count("removed ") == 2 and "freed 2.5 KB" in out
    assert list((tmp_path / "cache").iterdir()) == []


def test_pairs_live_under_the_cache_root(tmp_path, monkeypatch):
    import pytest

    data = pytest.importorskip("training.pair_cache")
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "pairs"
