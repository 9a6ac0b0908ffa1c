"""`latent-preview` command line: one subcommand per command module.

A command module exposes HELP, add_arguments(parser) and run(args) -> int, and imports only the
standard library at module level, so `--help` and the runtime-only commands work without the
training dependencies.
"""

import argparse
import importlib
import sys

from previewers.cli.dependencies import MissingDependency

COMMANDS = {
    "list": "previewers.cli.list",
    "decode": "previewers.cli.decode",
    "demo": "previewers.cli.demo",
    "generate": "previewers.cli.generate",
    "cache": "previewers.cli.cache",
    "fit": "training.commands.fit",
    "eval": "training.commands.eval",
    "export": "training.commands.export",
    "encode": "training.commands.encode",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latent-preview",
        description="Fast RGB previews of diffusion latents: fit previewers against a VAE decoder, evaluate them, "
        "and preview pipeline steps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name not in (module_name, module_name.rpartition(".")[0]):
                raise
            continue  # a command whose module is not installed (e.g. training/ left out) is not offered
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, MissingDependency, ConnectionError) as e:  # ConnectionError: a data-parallel run lost a process
        print(f"latent-preview {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latent-preview {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
