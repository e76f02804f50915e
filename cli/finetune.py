"""`featx finetune`."""
from __future__ import annotations

from pathlib import Path

import click

from . import options
from .errors import user_errors


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", default="efficientnet_lite0", show_default=True, help="Backbone name (see: featx models).")
@click.option("--weights", help="Starting weights: default the pretrained ones; a state-dict FILE or a named variant.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The fine-tuned network (.safetensors).")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True, help="All-layer epochs.")
@click.option("--freeze-epochs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Head-only warm-up epochs before them (body frozen, BatchNorm statistics kept).")
@click.option("--image-size", type=click.IntRange(min=8), metavar="S",
              help="Train at S x S (shorter side resized to S, centre crop); default: the weights' own crop.")
@click.option("--augment", type=click.Choice(["d4", "flip", "none"]), default="d4", show_default=True,
              help="d4: the 8 rotations and mirror images (cells, tiles, microscopy); flip: horizontal (photos).")
@click.option("--jitter", type=click.FloatRange(min=0), default=0.1, show_default=True, help="Random zoom in by up to this fraction.")
@click.option("--batch-size", "-b", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True, help="Head learning rate.")
@click.option("--body-lr", type=click.FloatRange(min=0, min_open=True), default=5e-4, show_default=True,
              help="Learning rate of the body's last stages; earlier stages down to a tenth of it.")
@click.option("--schedule", type=click.Choice(["onecycle", "cosine"]), default="onecycle", show_default=True)
@click.option("--freeze-until", metavar="LAYER",
              help="Keep this layer (e.g. blocks.1) and all before it as pretrained: faster steps, generic early features.")
@click.option("--ordinal", metavar="CLASSES",
              help="The classes are ordered grades, e.g. good,fair,poor: soft targets make near misses cost less.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--class-weight", type=click.Choice(["balanced"]), help="Weight the loss inversely to class frequencies.")
@click.option("--val-size", type=click.FloatRange(0, 1, max_open=True), default=0.15, show_default=True,
              help="Stratified share of DATA that picks the best epoch and stops early (0: keep the last epoch).")
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt, the checkpoint written after every epoch.")
@click.option("--label-pattern", help=r"Regex on file names giving the label, e.g. '(.+)_\d+$' for Oxford Pets.")
@options.workers
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
@user_errors
def finetune(data, model, weights, out, resume, label_pattern, workers, device, quiet, **config):
    """Fine-tune MODEL on the labelled images in DATA (class folders, CSV files of path,label) and save it to OUT.

    First the new head alone, then all layers with lower learning rates for earlier stages; the best epoch on
    a validation split is kept. Then: featx extract --weights OUT, or featx predict/evaluate OUT.
    """
    from featx.errors import FinetuneInterrupted
    from featx.finetuning._train import checkpoint_path
    from featx.finetuning._train import finetune as run
    from featx.outputs import check_output

    check_output(out, "--out")  # and its checkpoint beside it, written after every epoch
    try:
        result = run(list(data), model, out, weights=weights, resume=resume, label_pattern=label_pattern,
                     workers=workers, device=device, progress=not quiet, **config)
    except KeyboardInterrupt:  # each finished epoch's checkpoint is written atomically: --resume goes on from it
        raise FinetuneInterrupted(checkpoint_path(Path(out))) from None
    best = result.history[result.best_epoch - 1]
    shown = f", validation accuracy {best['val_accuracy']:.4f}" if "val_accuracy" in best else ""
    click.echo(f"{len(result.history)} epochs, kept epoch {result.best_epoch}{shown}; "
               f"{len(result.failures)} files skipped\nfine-tuned network: {result.path}")
