"""Click options shared by several commands; choices and defaults come from `featx.names` (torch-free)."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from featx.names import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, ENGINES, MAX_SEED, POOLINGS, TTAS

model = click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Backbone name (see: featx models).")
weights = click.option("--weights", help="Weights: a state-dict FILE, 'random', or a named variant such as IMAGENET1K_V1.")
pooling = click.option("--pooling", type=click.Choice(POOLINGS), default="avg", show_default=True)
tta = click.option(
    "--tta", type=click.Choice(TTAS), default="none", show_default=True,
    help="d4: features averaged over the 8 rotations and mirror images of the square (8x the compute).",
)
engine = click.option(
    "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
    help="torch; compile (torch.compile); onnx (ONNX Runtime, CPU, ~2x faster); auto: onnx on a CPU when installed.",
)
batch_size = click.option("--batch-size", "-b", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
workers = click.option(
    "--workers", "-w", type=click.IntRange(min=0),
    help="Decode worker processes (default: a quarter of the cores; all cores but one with a GPU).",
)
device = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
label_pattern = click.option("--label-pattern",
                             help=r"Regex on file names giving the label, e.g. '(.+)_\d+$' for Oxford Pets.")
offline = click.option(
    "--offline", is_flag=True,
    help="Never download weights: only cached ones, shipped ones or --weights FILE (also: FEATX_OFFLINE=1).",
)



def _not_zero(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value == 0:
        raise click.BadParameter("0 runs nothing: a number of parallel fits, or -1 for all cores")
    return value


n_jobs = click.option("--n-jobs", "-j", type=int, callback=_not_zero, help="Parallel cross-validation fits (-1: all cores).")


def seed(help: str | None = None) -> Callable:
    """--seed of a split (0 to MAX_SEED)."""
    return click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help=help)


def cv(help: str | None = None) -> Callable:
    """--cv: cross-validation folds (at least 2)."""
    return click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True, help=help)


def test_size(default: float | None, help: str) -> Callable:
    """--test-size: the share held out, in (0, 1); `default` None: the library's, named in `help`."""
    return click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=default,
                        show_default=default is not None, help=help)


unsafe_pickle = click.option(
    "--unsafe-pickle", is_flag=True,
    help="Also load a model saved with --format joblib (a pickle: loading it runs any code it holds; only your own).",
)


def pick_store(store: str | None, option: str = "--features STORE") -> Path:
    """`featx.features.find_store`, asking which store on a terminal when the cache folder holds several."""
    from featx.features._store import find_store

    return find_store(store, option, _ask if sys.stdin.isatty() else None)


def _ask(listing: str, found: list[Path]) -> Path:
    click.echo(listing, err=True)
    return found[click.prompt("which one", type=click.IntRange(1, len(found)), default=1, err=True) - 1]


def number_range(low: float, high: float | None, low_open: bool, high_open: bool) -> click.ParamType:
    """The click type of a library's range (low, high, low excluded, high excluded): integers if `low` is one."""
    kind = click.IntRange if isinstance(low, int) else click.FloatRange
    return kind(low, high, min_open=low_open, max_open=high_open)


def apply(*options: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """One decorator applying `options` in the order listed (as they appear in --help)."""

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# how a model's images are extracted (its feature space comes from the model)
extraction_options = apply(
    unsafe_pickle,
    click.option("--weights", help="The weights file the model's store was extracted with (when named by a hash; in a fused model, the space that came from it)."),
    batch_size,
    workers,
    device,
    quiet,
    click.option("--tta", type=click.Choice(TTAS), default="none", show_default=True,
                 help="A fine-tuned network (featx finetune): d4 averages its head over the 8 symmetries."),
)
