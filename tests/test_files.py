"""previewers.files.atomic_write: the whole file or the previous one, never a torn or temporary file."""

import pytest

from previewers.files import atomic_write


def test_a_finished_write_replaces_the_file_and_makes_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "out.txt"
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.endswith(".tmp")
        tmp.write_text("first")
    with atomic_write(path) as tmp:
        tmp.write_text("second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(tmp_path, error):
    path = tmp_path / "out.txt"
    path.write_text("previous")
    with pytest.raises(error):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise error
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
