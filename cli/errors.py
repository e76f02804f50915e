"""Turn featx's user-facing errors into clean CLI messages, without a traceback: exit status 2 for a usage
error (an unknown name or value, a path that does not exist), 130 for an interrupted extraction or
fine-tuning (with the command that resumes it), else 1 (a failed store write, e.g. a full disk, with the command
that resumes it)."""
from __future__ import annotations

import functools
import shlex
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import click


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: FeatxError -> click.UsageError (exit 2) or click.ClickException (exit 1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from featx.errors import FeatxError, Interrupted, MissingPathError, ParameterError, StoreWriteError

        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except Interrupted as exc:
            again = [*sys.argv[1:], *(flag for flag in exc.resume_flags if flag not in sys.argv)]
            click.echo(f"{exc}\nresume with: {shlex.join(['featx', *again])}", err=True)
            sys.exit(130)
        except StoreWriteError as exc:  # the rows committed are kept: the same command resumes
            click.echo(f"Error: {exc}\nresume with: {shlex.join(['featx', *sys.argv[1:]])}", err=True)
            sys.exit(1)
        except (ParameterError, MissingPathError) as exc:
            raise click.UsageError(str(exc)) from None
        except FeatxError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """featx's own warnings as one line on stderr ("warning: ..."); others as Python shows them."""
    from featx.errors import FeatxWarning

    if issubclass(category, FeatxWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def exit_if_nothing_usable(n_files: int, failures: Sequence[tuple[str, str]]) -> None:
    """Exit with status 1 when every one of `n_files` input files failed (extract, predict), counting the
    reasons: '18 unreadable: No such file or directory; 2 not an image'."""
    if n_files and len(failures) == n_files:
        counts = "; ".join(f"{n} {reason}" for reason, n in Counter(reason for _, reason in failures).most_common())
        click.echo(f"Error: none of the {n_files} files could be used ({counts})", err=True)
        sys.exit(1)
