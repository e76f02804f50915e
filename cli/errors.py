"""Turn featx's user-facing errors into clean CLI messages (exit status 1, no traceback)."""
from __future__ import annotations

import functools

import click


def user_errors(command):
    """Decorator: FeatxError -> click.ClickException."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from featx.errors import FeatxError

        try:
            return command(*args, **kwargs)
        except FeatxError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
