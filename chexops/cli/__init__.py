"""The `chexops` command. Library errors (ChexopsError) become one clean line and exit code 2 only here."""

from __future__ import annotations

import sys

import click

from chexops.errors import ChexopsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chexops")
def cli() -> None:
    """chexops: chest X-ray transfer-learning studies, tracked and reproducible."""


def _load_commands() -> None:
    from chexops.components.manager import plugin_manager

    pm, _ = plugin_manager()
    pm.hook.register_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    try:
        _load_commands()
        cli.main(args=argv, prog_name="chexops", standalone_mode=False)
    except ChexopsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
