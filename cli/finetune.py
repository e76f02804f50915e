"""`featx finetune`: one option per `FinetuneConfig` field, built from the field (name, default, help, choices,
range), so the CLI restates nothing of the library's configuration."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import click

from featx.finetuning._config import FinetuneConfig, Setting

from . import options
from .errors import user_errors


def _click_type(setting: Setting) -> click.ParamType | type:
    if setting.choices is not None:
        return click.Choice(setting.choices)
    if setting.kind is str or setting.low is None and setting.high is None:
        return setting.kind
    kind = click.IntRange if setting.kind is int else click.FloatRange
    return kind(setting.low, setting.high, min_open=setting.low_open, max_open=setting.high_open)


def config_options(command: Callable) -> Callable:
    """The options of every `FinetuneConfig` field, in field order."""
    for f in reversed(fields(FinetuneConfig)):
        setting: Setting = f.metadata["setting"]
        names = ["--" + f.name.replace("_", "-"), *([setting.short] if setting.short else []), f.name]
        command = click.option(*names, type=_click_type(setting), default=f.default, show_default=f.default is not None,
                               metavar=setting.metavar, help=setting.help)(command)
    return command


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path())
@options.model
@click.option("--weights", help="Starting weights: default the pretrained ones; a state-dict FILE or a named variant.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The fine-tuned network (.safetensors).")
@config_options
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt, the checkpoint written after every epoch.")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True, metavar="K",
              help="Also K networks, each trained without one of K folds (OUT's name + .foldk-of-K): featx compare "
                   "then cross-validates OUT's features on every image, each fold's from the network that never saw it.")
@options.label_pattern
@options.workers
@options.device
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
@user_errors
def finetune(data, model, weights, out, resume, folds, label_pattern, workers, device, quiet, **config):
    """Fine-tune MODEL on the labelled images in DATA (class folders, CSV files of path,label) and save it to OUT.

    First the new head alone, then all layers with lower learning rates for earlier stages; the best epoch on
    a validation split is kept. Then: featx extract --weights OUT, or featx predict/evaluate OUT.
    """
    from featx.backbones._weights import fold_path
    from featx.errors import FinetuneInterrupted
    from featx.finetuning._loop import checkpoint_path
    from featx.finetuning._train import finetune as run
    from featx.outputs import check_output

    for network in [Path(out), *(fold_path(out, k, folds) for k in range(1, folds + 1))]:  # each with its checkpoint
        check_output(network, "--out", reads=data)
        check_output(checkpoint_path(network), "--out (a checkpoint beside it)", reads=data)
    try:
        result = run(list(data), model, out, weights=weights, resume=resume, label_pattern=label_pattern,
                     workers=workers, device=device, progress=not quiet, folds=folds, **config)
    except KeyboardInterrupt:  # each finished epoch's checkpoint is written atomically: --resume goes on from it
        raise FinetuneInterrupted(checkpoint_path(Path(out))) from None
    best = result.history[result.best_epoch - 1]
    shown = f", validation accuracy {best['val_accuracy']:.4f}" if "val_accuracy" in best else ""
    click.echo(f"{len(result.history)} epochs, kept epoch {result.best_epoch}{shown}; "
               f"{len(result.failures)} files skipped\nfine-tuned network: {result.path}")
