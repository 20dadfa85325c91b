"""User-facing errors. The CLI maps every Evo2LiteError to one line on stderr and exit code 2."""


class Evo2LiteError(Exception):
    """Bad user input or environment: the message says what to do."""


class ConfigError(Evo2LiteError, ValueError):
    """An invalid model configuration."""


class CheckpointError(Evo2LiteError):
    """A checkpoint that cannot be read, or does not fit its config."""


class InputError(Evo2LiteError):
    """An unreadable or malformed input file (FASTA, VCF, BED, ...)."""


def usage_error_line(exc) -> str:
    """One line for a click usage error (bad or missing option value, unknown option), with where to look."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
    return f"evo2lite: error: {message}{hint}"


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for a user error: the message only, no exception class or library frames."""
    if isinstance(exc, OSError) and not isinstance(exc, Evo2LiteError):
        what = exc.strerror or str(exc)
        message = f"{what}: {exc.filename}" if exc.filename else what
    else:
        message = str(exc) or type(exc).__name__
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"evo2lite: error: {first}"


def cli_errors(command):
    """Wrap a typer command: an Evo2LiteError, a ValueError or an OS-level file error becomes one line on
    stderr and exit code 2 (a traceback only with EVO2LITE_DEBUG=1); Ctrl-C exits 130."""
    import functools
    import os
    import sys

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import typer

        try:
            return command(*args, **kwargs)
        except (Evo2LiteError, ValueError, OSError) as exc:
            if os.environ.get("EVO2LITE_DEBUG") == "1":
                raise
            print(error_line(exc), file=sys.stderr, flush=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("evo2lite: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(130) from None

    return wrapper
