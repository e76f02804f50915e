"""`featx models`."""
from __future__ import annotations

import click

from .errors import user_errors


@click.command()
@user_errors
def models():
    """List backbones: feature dimension, input size, and whether their weights are here now."""
    from featx.backbones import model_names, get_backbone

    rows = [("model", "dim", "input", "weights")]
    for name in model_names():
        backbone = get_backbone(name)
        pre, weights = backbone.preprocessing(), backbone.default_weights()
        status = "available" if weights.available() else "missing: " + weights.location()
        rows.append((name, str(backbone.feature_dim), f"{pre.crop}px", status))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    click.echo("\nAlso: timm/<name> for any timm model (weights from the local Hugging Face cache).")
