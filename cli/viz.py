"""`featx viz`: feature maps, class visualisation (dream) and adversarial examples (attack)."""
from __future__ import annotations

from pathlib import Path

import click

from featx.outputs import check_output

from . import options
from .errors import user_errors

image_argument = click.argument("image", type=click.Path(exists=True, dir_okay=False))


def _out_option(default: str):
    return click.option("--out", "-o", default=default, show_default=True, type=click.Path(dir_okay=False), help="PNG to write.")


@click.group()
def viz():
    """Look inside the classifier: feature maps, class visualisations, adversarial examples."""


@viz.command()
@image_argument
@options.model
@options.weights
@click.option("--layer", help="Module name (an unknown one lists those with feature maps); default: a mid-level layer at 1/8 resolution.")
@click.option("--channels", type=click.IntRange(min=1), default=15, show_default=True, help="How many channels to show.")
@_out_option("features.png")
@user_errors
def features(image, model, weights, layer, channels, out):
    """A PNG grid of IMAGE (resized and cropped to the model's input) and the heat maps of the layer's
    channels with the highest mean activation."""
    from featx.viz._classes import PixelClassifier
    from featx.viz._feature_maps import (
        activations,
        default_layer,
        feature_grid,
        strongest_channels,
    )
    from featx.viz._images import load_pixels, save_png

    check_output(out, "--out", reads=[image])
    classifier = PixelClassifier(model, weights)
    pixels = load_pixels(image, classifier.preprocessing)
    layer = layer or default_layer(classifier, pixels)
    maps = activations(classifier, pixels, layer)
    chosen, strongest = strongest_channels(maps, channels)
    save_png(feature_grid(pixels, strongest, chosen, layer), out)
    click.echo(f"layer {layer}: {maps.shape[0]} channels of {maps.shape[1]} x {maps.shape[2]}; "
               f"strongest {', '.join(map(str, chosen))} -> {out}")


@viz.command()
@click.option("--class", "class_", required=True, help="ImageNet class: index, name or part of a name, any case.")
@options.model
@options.weights
@click.option("--steps", type=click.IntRange(min=1), default=128, show_default=True, help="Adam steps.")
@click.option("--tv-weight", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Total-variation penalty (0: none).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@_out_option("dream.png")
@user_errors
def dream(class_, model, weights, steps, tv_weight, seed, out):
    """Optimise an image from random noise until the model sees the class in it (gradient ascent on the
    class logit, Fourier parameterisation, jitter, total-variation penalty)."""
    from featx.viz._classes import PixelClassifier
    from featx.viz._dream import dream as run
    from featx.viz._images import save_png

    check_output(out, "--out")
    classifier = PixelClassifier(model, weights)
    index = classifier.class_index(class_)
    result = run(classifier, index, steps=steps, tv_weight=tv_weight, seed=seed)
    save_png(result.pixels, out)
    click.echo(f"{classifier.categories[index]} ({index}): probability {result.probability:.4f}, "
               f"total variation {result.total_variation:.4f} -> {out}")


def _echo_top(title: str, top: list[tuple[int, str, float]]) -> None:
    click.echo(title)
    for index, name, probability in top:
        click.echo(f"  {probability:7.4f}  {name} ({index})")


@viz.command()
@image_argument
@click.option("--target", help="Class to turn the image into (index or name); default: untargeted, away from the top-1.")
@click.option("--eps", default="8/255", show_default=True, help="L-infinity budget in [0, 1] pixels, e.g. 4/255 or 0.03.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="PGD steps (up to twice as many if the 8-bit image fails).")
@options.model
@options.weights
@_out_option("adversarial.png")
@click.option("--compare", type=click.Path(dir_okay=False), help="Side-by-side PNG with the amplified difference; default: OUT-compare.png.")
@user_errors
def attack(image, target, eps, steps, model, weights, out, compare):
    """A targeted (--target) or untargeted projected-gradient attack on IMAGE within an L-infinity budget,
    in 8-bit pixel space: the saved PNG (the model's input size) fools the model as it is."""
    from featx.viz._attack import comparison, parse_eps, pgd
    from featx.viz._classes import PixelClassifier
    from featx.viz._images import load_pixels, save_png

    budget = parse_eps(eps)
    compare = compare or str(Path(out).with_name(Path(out).stem + "-compare.png"))
    check_output(out, "--out", reads=[image])
    check_output(compare, "--compare", reads=[image])
    if Path(compare).absolute() == Path(out).absolute():
        raise click.UsageError(f"--compare {compare} is --out: give the comparison another name")
    classifier = PixelClassifier(model, weights)
    index = None if target is None else classifier.class_index(target)
    pixels = load_pixels(image, classifier.preprocessing)
    result = pgd(classifier, pixels, index, budget, steps)
    _echo_top("top-5 before:", classifier.top(pixels))  # said first: a file that cannot be written loses nothing
    _echo_top("top-5 after:", classifier.top(result.adversarial))
    save_png(result.adversarial, out)
    save_png(comparison(classifier, pixels, result.adversarial, budget), compare)
    click.echo(f"perturbation: L-inf {result.linf(pixels) * 255:.0f}/255, L2 {result.l2(pixels):.3f} "
               f"({result.steps} steps) -> {out}, {compare}")
    if not result.success:
        goal = f"top-1 {classifier.categories[index]!r}" if index is not None else "a different top-1"
        raise click.ClickException(f"no {goal} within eps {eps} in {result.steps} steps; try a larger --eps or --steps")
