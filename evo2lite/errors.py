"""User-facing errors. The CLI maps every Evo2LiteError to one line on stderr and exit code 2."""


class Evo2LiteError(Exception):
    """Bad user input or environment: the message says what to do."""


class ConfigError(Evo2LiteError, ValueError):
    """An invalid model configuration."""


class CheckpointError(Evo2LiteError):
    """A checkpoint that cannot be read, or does not fit its config."""


class InputError(Evo2LiteError):
    """An unreadable or malformed input file (FASTA, VCF, BED, ...)."""


def cli_errors(command):
    """Wrap a typer command: an Evo2LiteError or an OS-level file error becomes one line on stderr and
    exit code 2 (a traceback only with EVO2LITE_DEBUG=1); Ctrl-C exits 130."""
    import functools
    import os
    import sys

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import typer

        try:
            return command(*args, **kwargs)
        except (Evo2LiteError, OSError) as exc:
            if os.environ.get("EVO2LITE_DEBUG") == "1":
                raise
            message = str(exc) if isinstance(exc, Evo2LiteError) else f"{exc.strerror or exc}: {exc.filename}"
            print(f"evo2lite: error: {message}".splitlines()[0], file=sys.stderr, flush=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("evo2lite: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(130) from None

    return wrapper
