"""The `chexops` command. Library errors (ChexopsError) become one clean line and exit code 2 only here."""

from __future__ import annotations

import errno
import logging
import sys

import click

from chexops.errors import ChexopsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chexops")
def cli() -> None:
    """chexops: chest X-ray transfer-learning studies, tracked and reproducible."""


def quiet_mlflow() -> None:
    """MLflow's INFO lines off (run URLs, system-metrics start/stop, table creation): `--quiet` output is chexops'
    own lines. MLflow reads the level once, when it is first imported, so this runs before anything imports it."""
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # printed, not logged, against a server


def _load_commands() -> None:
    from chexops.components.manager import plugin_manager

    pm, _ = plugin_manager()
    pm.hook.register_commands(cli=cli)


def _drop_mlflow_database_tracebacks(record: logging.LogRecord) -> bool:
    """MLflow logs every SQLAlchemy OperationalError with its traceback (mlflow.store.db.utils) and then raises it
    as an MlflowException, which chexops turns into one line; the logged copy would print ~60 lines before it."""
    return not (record.exc_info and record.getMessage().startswith("SQLAlchemy database error"))


def error_line(exc: ChexopsError) -> str:
    """The message of `exc` as one line: a foreign error it wraps (an MLflow or SQLAlchemy message appends the SQL
    statement and its parameters on further lines) keeps its first line, which says what failed."""
    text = str(exc)
    if "\n" in text and exc.__cause__ is not None:
        return text.splitlines()[0].rstrip()
    return text


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("mlflow.store.db.utils").addFilter(_drop_mlflow_database_tracebacks)
    if argv is None:  # the console command; a caller passing argv in-process (tests) keeps its own handling
        from chexops.interrupts import sigterm_as_interrupt

        sigterm_as_interrupt()
    try:
        _load_commands()
        cli.main(args=argv, prog_name="chexops", standalone_mode=False)
    except ChexopsError as exc:
        click.echo(f"Error: {error_line(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise  # anything else is a bug and keeps its traceback
        click.echo(f"Error: {environment_error(exc)}", err=True)
        sys.exit(2)


# OSErrors that say what the machine lacks, not what the code got wrong: a full disk or quota, a read-only
# filesystem; the user fixes them (the command then resumes or reruns), so they are one line like a ChexopsError.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def environment_error(exc: OSError) -> str:
    """One line for an OSError of _ENVIRONMENT_ERRNOS: what failed, on which file, what to do."""
    where = f" writing {exc.filename}" if exc.filename else ""
    advice = {errno.EROFS: "make it writable or work in a writable copy"}.get(
        exc.errno, "free space (or raise the quota) and run the command again")
    return f"{exc.strerror or exc}{where} (errno {exc.errno}); {advice}."


if __name__ == "__main__":
    main()
