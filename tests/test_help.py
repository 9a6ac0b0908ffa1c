"""Every subcommand's --help runs, and every option in it has help text."""

import argparse

import pytest

from previewers.cli import COMMANDS, build_parser, main


def subparsers() -> dict:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_command_is_offered():
    assert set(subparsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_runs_and_documents_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: latent-preview {command}" in capsys.readouterr().out
    parser = subparsers()[command]
    undocumented = [a.option_strings or [a.dest] for a in parser._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not undocumented, f"{command}: options without help: {undocumented}"


def test_help_needs_none_of_the_train_extra():
    """The runtime install has no diffusers, transformers or scikit-image: every command's --help still works."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for name in ('diffusers', 'transformers', 'skimage'):\n"
            "    sys.modules[name] = None  # as if not installed: importing it raises ImportError\n"
            "from previewers.cli import COMMANDS, main\n"
            "for command in COMMANDS:\n"
            "    try:\n"
            "        main([command, '--help'])\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, command\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
