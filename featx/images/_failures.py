"""How every command lists the files that failed: the first few with their reasons, the rest counted."""
from __future__ import annotations

from collections.abc import Sequence

FAILURES_SHOWN = 20  # files listed by name in a summary or an error; more would bury the rest of the output


def failure_lines(failures: Sequence[tuple[str, str]], prefix: str = "  failed: ", more: str = "") -> list[str]:
    """`prefix` + "path: reason" for the first FAILURES_SHOWN (path, reason) pairs, then "  ... and N more"
    + `more` (where to see them all) when there are others."""
    lines = [f"{prefix}{path}: {reason}" for path, reason in failures[:FAILURES_SHOWN]]
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"  ... and {len(failures) - FAILURES_SHOWN} more{more}")
    return lines


def failure_line(failures: Sequence[tuple[str, str]]) -> str:
    """`failure_lines` on one line, for an error message: "path: reason; path: reason; ... and N more"."""
    return "; ".join(line.strip() for line in failure_lines(failures, prefix=""))
