"""The `featx` command: one click group whose subcommands are imported only when run."""
from __future__ import annotations

from importlib import import_module

import click

# name -> (module in featx.cli, one-line help shown by `featx --help` without importing the module)
COMMANDS = {
    "demo": ("demo", "ELPV solar cells, offline: features, an SVM, its accuracy next to the paper's, an HTML report."),
    "extract": ("extract", "Extract features of images into an HDF5 store (only images not yet there)."),
    "models": ("models", "List the backbones, their feature sizes, and whether weights are here or will download."),
    "info": ("info", "Show what a feature store holds: rows, classes, failures, feature space."),
    "fit": ("fit", "Train a classifier on a feature store (cross-validated), save it with its report."),
    "finetune": ("finetune", "Fine-tune a backbone with a new head on labelled images (safetensors file)."),
    "evaluate": ("evaluate", "Report how a saved model or fine-tuned network does on a labelled image folder."),
    "predict": ("predict", "Predict classes of images with a saved model or fine-tuned network, as CSV."),
    "audit": ("audit", "Find duplicates, train/test leaks, outliers and likely label errors in a store; write clean.csv."),
    "export": ("export", "Export a store's embeddings as parquet or npy, for pandas, polars, DuckDB or LanceDB."),
    "similar": ("similar", "Find the stored images most like query images (cosine), as CSV and an HTML page."),
    "map": ("map", "Write an interactive map of a store's embeddings: one HTML page, a point per image."),
    "viz": ("viz", "Look inside the network: feature maps, ideal class images, adversarial examples."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return getattr(import_module(f"featx.cli.{COMMANDS[name][0]}"), name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featx")
def main() -> None:
    """featx: pretrained CNN features, cached in HDF5, for scikit-learn classifiers.

    Typical use: featx extract data/, then featx fit --clf svm, then featx predict MODEL images/.
    """
