"""`featx map`: one self-contained HTML page with a point per stored file, projected to 2-D.

Drawn with plotly's WebGL scatter (`scattergl`), its script inlined: the page opens from disk with no network.
Chosen over bokeh by measuring both on 20,000 points (docs/explore.md): plotly's page is larger (5.7 vs 2.2 MB)
but was written 3.5x faster and loaded no slower, and its legend hides a class, its hover and click events and
`Plotly.Fx.hover` are public API, which the hover panel (thumbnail, path, label, prediction) and the tests use.
Beyond MAX_POINTS files a seeded random sample is drawn (said on the page). Thumbnails are embedded up to
EMBED_THUMBNAILS files; beyond, the hover panel loads the file itself (relative link, as the report's).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np

from featx.errors import BadInputError, FeatxError, ParameterError, StoreWarning, UnknownNameError
from featx.exploring._export import Rows
from featx.features._store import FeatureStore

COLORS = ("label", "prediction", "finding")
METHODS = ("pca", "tsne", "umap")
MAX_POINTS = 50_000  # WebGL draws 20,000 points smoothly; the page's data grows ~200 bytes a point
EMBED_THUMBNAILS = 2_000  # 64 px JPEGs of ~2.5 kB each in base64
THUMB = 64
NONE = "(none)"

SCRIPT = """
(function () {
  const D = %s, gd = document.getElementById("map"), panel = document.getElementById("hover");
  const shown = () => gd.data.filter(t => t.visible !== "legendonly" && t.name !== "found")
                             .reduce((n, t) => n + t.x.length, 0);
  const count = () => { document.getElementById("count").textContent = shown() + " of " + D.paths.length + " points shown"; };
  gd.on("plotly_afterplot", count);
  gd.on("plotly_restyle", count);
  gd.on("plotly_hover", e => {
    const i = e.points[0].customdata;
    panel.querySelector("img").src = D.thumbs[i] || D.links[i];
    panel.querySelector(".path").textContent = D.paths[i];
    panel.querySelector(".label").textContent = "label: " + D.labels[i] + (D.predictions ? "   prediction: " + D.predictions[i] : "");
    panel.hidden = false;
  });
  gd.on("plotly_click", e => { window.open(D.links[e.points[0].customdata], "_blank"); });
  document.getElementById("search").addEventListener("input", e => {
    const q = e.target.value.trim().toLowerCase(), xs = [], ys = [], ids = [];
    if (q) D.names.forEach((name, i) => { if (name.toLowerCase().includes(q)) { xs.push(D.x[i]); ys.push(D.y[i]); ids.push(i); } });
    Plotly.restyle(gd, {x: [xs], y: [ys], customdata: [ids]}, [gd.data.length - 1]);
    document.getElementById("matches").textContent = q ? ids.length + " files match" : "";
  });
  count();
})();
"""
STYLE = """#map{width:100%;height:75vh}#hover{position:fixed;right:1rem;bottom:1rem;background:#fff;border:1px solid #ccc;
padding:.5rem;max-width:20rem;font-size:.8rem;overflow-wrap:anywhere}#hover img{max-width:12rem;max-height:12rem;display:block}"""


def embedding_map(store: str | os.PathLike, out: str | os.PathLike, *, method: str = "pca",
                  colour: str = "label", predictions: Mapping[str, str] | None = None,
                  findings: Mapping[str, str] | None = None, model: str | os.PathLike | None = None,
                  audit: str | os.PathLike | None = None, unsafe_pickle: bool = False, seed: int = 0) -> Path:
    """Write the map of `store` to `out`. `colour`: "label", "prediction" (`predictions`: path -> class, or
    those of a `model` from featx fit on this store's feature space) or "finding" (`findings`: path -> the
    audit's finding, or those of an `audit` folder, see `featx.auditing.read_findings`)."""
    from featx.outputs import check_output
    from featx.reports._figures import projection
    from featx.reports._html import link, page, write

    if method not in METHODS:
        raise UnknownNameError("projection method", method, METHODS)
    if colour not in COLORS:
        raise UnknownNameError("colouring", colour, COLORS)
    wanted = {"prediction": ("--model MODEL", predictions, model), "finding": ("--audit DIR", findings, audit)}
    if colour in wanted and wanted[colour][1] is None and wanted[colour][2] is None:
        raise ParameterError(f"--color {colour} needs {wanted[colour][0]}")
    # every file read, so that the page replaces none of them (a map written over its model or audit CSV)
    check_output(out, "--out", reads=[store, *([model] if model else []), *([Path(audit, "findings.csv")] if audit else [])])
    go = plotly()  # a missing plotly said before the model, the projection and the thumbnails are made
    if model is not None:
        from featx.classify._bundle import load_bundle

        predictions = load_bundle(model, unsafe_pickle=unsafe_pickle).predict_store(store)
    if audit is not None:
        from featx.auditing._audit import read_findings

        findings = read_findings(audit)
    with FeatureStore.open(store, warn=True) as opened:
        rows = Rows(opened, present=True)  # a point that opens no file would only mislead
        keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:MAX_POINTS])
        features = opened.rows(rows.rows[keep])
    notes = [f"a random sample of {len(keep):,} of its {len(rows):,} files"] if len(keep) < len(rows) else []
    notes += [f"{rows.gone:,} files no longer on disk left out"] if rows.gone else []
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():  # PCA and t-SNE refuse NaN: the map of the others is still worth drawing
        notes.append(f"{np.count_nonzero(~finite):,} files whose features hold NaN or infinity left out")
        warnings.warn(StoreWarning(f"{store}: {notes[-1]} of the map; featx info --check --repair {store} copies "
                                   "the others into a new store"), stacklevel=2)
        keep, features = keep[finite], features[finite]
    if len(keep) < 3:
        raise BadInputError(f"{store} holds {len(keep)} files: a map needs at least 3")
    # rounded as float64: float32 values rounded still print as 0.829200029373169 (the page grew by 15%)
    points = projection(features, method).astype(np.float64).round(4)
    paths = [rows.paths[i] for i in keep]
    labels = [rows.labels[i] or NONE for i in keep]
    predicted = None if predictions is None else [predictions.get(p, NONE) for p in paths]
    groups = {"label": labels, "prediction": predicted,
              "finding": [(findings or {}).get(p, "no finding") for p in paths]}[colour]
    base = Path(out).absolute().parent
    data = {"x": points[:, 0].tolist(), "y": points[:, 1].tolist(), "paths": paths,
            "names": [Path(p).name for p in paths], "labels": labels, "links": [link(p, base) for p in paths],
            "predictions": predicted,
            "thumbs": _thumbnails(paths) if len(paths) <= EMBED_THUMBNAILS else [None] * len(paths)}
    figure = _figure(go, points, groups, method)
    # <, > and & as JSON escapes: no name in the data ("</script>", or "<!--<script>", which keeps a script open
    # past its end tag) is read as HTML
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = ('<p><input id="search" type="search" placeholder="file name"> <span id="matches"></span> '
            '<span id="count"></span></p>'
            + figure.to_html(include_plotlyjs=True, full_html=False, div_id="map", config={"scrollZoom": True})
            + '<div id="hover" hidden><img alt="thumbnail"><div class="path"></div><div class="label"></div></div>'
            + f"<script>{SCRIPT % payload}</script>")
    subtitle = (f"{store}: {len(keep):,} files, {method.upper() if method == 'pca' else method}, coloured by {colour}"
                f"{''.join(f'; {note}' for note in notes)}. Scroll to zoom, drag to pan, click a legend entry to hide it, click a point to open its file.")
    document = page("Embedding map", [f"<style>{STYLE}</style>", body], subtitle)
    return write(out, document)


def plotly() -> ModuleType:
    """plotly.graph_objects, or one line saying how to install it."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise FeatxError('featx map needs plotly: pip install "featx[explore]"') from None
    return go


def _figure(go: ModuleType, points: np.ndarray, groups: Sequence[str], method: str):
    groups = np.asarray(groups, dtype=object)
    figure = go.Figure(layout={"dragmode": "pan", "hovermode": "closest", "margin": {"l": 30, "r": 10, "t": 10, "b": 30},
                               "xaxis": {"title": f"{method} 1"}, "yaxis": {"title": f"{method} 2"}})
    for name in sorted(set(groups)):
        members = np.flatnonzero(groups == name)
        # lists, not arrays: plotly would write arrays as typed-array specs, which the page's script cannot count
        figure.add_trace(go.Scattergl(x=points[members, 0].tolist(), y=points[members, 1].tolist(),
                                      customdata=members.tolist(), name=f"{name} ({len(members)})",
                                      mode="markers", marker={"size": 6, "opacity": 0.8}, hoverinfo="none"))
    figure.add_trace(go.Scattergl(x=[], y=[], customdata=[], name="found", mode="markers", hoverinfo="none",
                                  marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "red"}}))
    return figure


def _thumbnails(paths: Sequence[str]) -> list[str | None]:
    from featx.reports._html import data_uri, thumbnail

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        made = list(pool.map(lambda p: thumbnail(p, THUMB), paths))
    return [data_uri(jpeg, "image/jpeg") if jpeg else None for jpeg in made]
