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
