"""`featx models`."""
from __future__ import annotations

import click

from .errors import user_errors


@click.command()
@click.option("--offline", is_flag=True, help="Say what works with no network (also: FEATX_OFFLINE=1).")
@user_errors
def models(offline):
    """List backbones: feature dimension, input size, and whether their weights are here, will download on first
    use, or are unavailable."""
    from featx.backbones._registry import get_backbone, model_names
    from featx.backbones._weights import offline_mode

    rows = [("model", "dim", "input", "weights")]
    with offline_mode(offline):
        for name in model_names():
            backbone = get_backbone(name)
            rows.append((name, str(backbone.feature_dim), f"{backbone.input_size}px",
                         backbone.default_weights().status()))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    click.echo("\nAlso: timm/<name> for any timm CNN (weights from the Hugging Face hub, cached in HF_HOME).")
