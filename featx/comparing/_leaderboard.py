"""A comparison's result: each candidate's row, the leaderboard ranked best first, the names people see, the
note when CV does not separate the first two, and the leaderboard's files (CSV, JSON, an HTML page)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from featx.names import SCORINGS

LEADERBOARD = "leaderboard"  # .csv, .json, .html in the --out folder


@dataclass(frozen=True)
class Row:
    """A candidate's line of the leaderboard: CV score on the training part (mean, std over the folds; the
    comparison's scoring), feature dimension, extraction rate (None: nothing was extracted in this run), fit
    seconds, its scores on the test part once the winner is chosen (refitted on the training part; None when
    the run stopped before); or why it failed. A fusion's `members`: the candidates whose spaces (concatenated)
    or probabilities (averaged) it fuses."""

    candidate: str
    cv_mean: float = float("nan")
    cv_std: float = float("nan")
    dim: int = 0
    images_per_s: float | None = None
    fit_seconds: float = 0.0
    error: str = ""
    test_balanced_accuracy: float | None = None
    test_accuracy: float | None = None
    members: tuple[str, ...] = ()

    def cells(self) -> tuple[str, ...]:
        """As people read it: CV mean ± std, dim, images/s ("cached": nothing extracted), fit seconds, the test
        scores ("-": not scored); or "failed: why" and blanks."""
        if self.error:
            return (f"failed: {self.error}", "", "", "", "", "")
        rate = f"{self.images_per_s:.1f}" if self.images_per_s else "cached"
        scores = f"{self.cv_mean:.3f} ± {self.cv_std:.3f}"
        return (scores, str(self.dim), rate, f"{self.fit_seconds:.1f}",
                *("-" if v is None else f"{v:.3f}" for v in (self.test_balanced_accuracy, self.test_accuracy)))


def label(row: Row, rows: Sequence[Row]) -> str:
    """`row`'s name for people: a fusion's members given by their ranks in `rows`, "concat(#3,#4,#5) / svm", as
    its full name repeats each member's (over 1,000 characters for the 10 spaces of docs/benchmarks.md)."""
    ranks = {r.candidate: i for i, r in enumerate(rows, 1)}
    if not row.members or not all(m in ranks for m in row.members):
        return row.candidate
    kind, end = row.candidate.split("(", 1)[0], row.candidate.rindex(")")
    return f"{kind}({','.join(f'#{ranks[m]}' for m in row.members)}){row.candidate[end + 1:]}"


@dataclass(frozen=True)
class Comparison:
    """The leaderboard (best first, failed candidates last) and the winner's single score on the test part."""

    rows: tuple[Row, ...]
    classes: tuple[str, ...]
    n_train: int
    n_test: int
    n_extracted: int  # images computed in this run, all candidates together (0 on a rerun)
    test_balanced_accuracy: float | None = None
    test_accuracy: float | None = None
    model: Path | None = None
    files: tuple[Path, ...] = ()
    scoring: str = SCORINGS[0]
    n_scored: int | None = None  # training images the CV scores are computed on (fewer than n_train: see `unseen`)
    notes: tuple[str, ...] = ()  # how fine-tuned networks were cross-validated (cross-fitted, held out, optimistic)

    @property
    def winner(self) -> Row:
        return self.rows[0]

    @property
    def runner_up(self) -> Row | None:
        """The second best candidate that did not fail, if any."""
        ranked = [row for row in self.rows if not row.error]
        return ranked[1] if len(ranked) > 1 else None

    def label(self, row: Row) -> str:
        """`row`'s name for people (a fusion's members by rank: `label`)."""
        return label(row, self.rows)

    def table(self) -> str:
        """The leaderboard as aligned text; the test columns, scored after the choice, are not used to choose."""
        names = [self.label(r) for r in self.rows]
        width = max([len(name) for name in names] + [9])
        cv = "CV " + {"balanced_accuracy": "bal. acc."}.get(self.scoring, self.scoring)
        lines = [f"{'#':>2}  {'candidate':<{width}}  {cv:>15}  {'dim':>6}  {'images/s':>8}  {'fit s':>6}  "
                 f"{'test bal.':>9}  {'test acc.':>9}"]
        for i, (r, name) in enumerate(zip(self.rows, names), 1):
            scores, dim, rate, fit, balanced, accuracy = r.cells()
            if r.error:  # the why, whole, in place of the columns
                lines.append(f"{i:>2}  {name:<{width}}  {scores}")
                continue
            lines.append(f"{i:>2}  {name:<{width}}  {scores:>15}  {dim:>6}  {rate:>8}  {fit:>6}  {balanced:>9}  {accuracy:>9}")
        if self.test_accuracy is not None:
            lines.append(f"winner on the test part ({self.n_test} images, scored once): balanced accuracy "
                         f"{self.test_balanced_accuracy:.3f}, accuracy {self.test_accuracy:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain values for JSON: a failed row's CV scores (NaN) are None."""
        rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(r).items()} for r in self.rows]
        return {**{k: v for k, v in asdict(self).items() if k not in ("rows", "model", "files")},
                "model": str(self.model) if self.model else None, "rows": rows}


def tie_note(rows: Sequence[Row], n_scored: int) -> str:
    """A note when CV does not separate the winner from the runner-up: their CV means differ by less than half
    an image of the `n_scored` (scoring accuracy: both got as many images right, and differ only in how the errors
    fell into the folds; on ELPV the average and the concatenation of all 8 spaces got the same number of
    training images right on 3 seeds of 3, and their test scores differed by up to 1.7 points: docs/benchmarks.md);
    "" otherwise. The choice stays the higher mean, the first listed when equal (scikit-learn's rule)."""
    ranked = [row for row in rows if not row.error]
    if len(ranked) < 2 or not n_scored or abs(ranked[0].cv_mean - ranked[1].cv_mean) * n_scored >= 0.5:
        return ""
    return (f"CV does not separate the winner from {label(ranked[1], rows)} (CV means within half an image "
            f"of the {n_scored} scored: {ranked[0].cv_mean:.4f} and {ranked[1].cv_mean:.4f}); the winner is listed first. "
            "Either may do better on new images")


def write_leaderboard(comparison: Comparison, out: Path) -> list[Path]:
    """OUT/leaderboard.csv, .json and .html (a bar chart of the CV scores with their spread)."""
    import csv

    from featx.outputs import atomic_write
    from featx.reports._figures import png, scores_figure
    from featx.reports._html import figures, page, paragraph, section, table, write

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{LEADERBOARD}.{ext}" for ext in ("csv", "json", "html")]
    fields = list(Row.__dataclass_fields__)
    with atomic_write(paths[0], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", *fields])
        writer.writerows([i, *(" + ".join(v) if isinstance(v, tuple) else v for v in asdict(r).values())]  # members
                         for i, r in enumerate(comparison.rows, 1))
    with atomic_write(paths[1], "w") as f:
        f.write(json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n")  # strict JSON: browsers parse it
    names = [comparison.label(r) for r in comparison.rows]
    rows = [(i, name, *r.cells()) for i, (r, name) in enumerate(zip(comparison.rows, names), 1)]
    cv_label = f"CV {comparison.scoring.replace('_', ' ')}"
    header = ["#", "candidate", cv_label, "dim", "images/s", "fit s", "test balanced accuracy", "test accuracy"]
    sections = [section("Leaderboard", table(header, rows)),
                section("Test scores", paragraph("The winner is chosen by CV alone; the test scores, computed "
                                                 "afterwards, are for the record and choose nothing."))]
    if comparison.notes:
        sections.append(section("Cross-validation", *(paragraph(note) for note in comparison.notes)))
    ok = [(f"#{i} {name}", r) for i, (r, name) in enumerate(zip(comparison.rows, names), 1) if not r.error]  # as the table
    if ok:
        figure = scores_figure([name for name, _ in ok], [r.cv_mean for _, r in ok], [r.cv_std for _, r in ok], cv_label)
        sections.append(section("CV scores", figures({"cv": png(figure)})))
    if comparison.test_accuracy is not None:
        sections.append(section("Winner", paragraph(comparison.table().splitlines()[-1])))
    subtitle = (f"{comparison.n_train} training images (CV scored on {comparison.n_scored}), {comparison.n_test} test images, "
                f"{len(comparison.classes)} classes")
    write(paths[2], page("featx compare", sections, subtitle))
    return paths
