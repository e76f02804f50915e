"""Reports: figures as PNG bytes without pyplot state, and the self-contained HTML report."""
from __future__ import annotations

import numpy as np

from featx.report import Report, metrics


def small_report() -> Report:
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 3
    predicted = np.where(rng.random(40) < 0.8, labels, (labels + 1) % 3)
    features = rng.normal(size=(40, 6)) + labels[:, None]
    return Report(["a", "b", "c"], metrics(labels, predicted, ["a", "b", "c"]), {"classifier": "x"}, (features, labels))


def test_figures_are_png_bytes_and_leave_the_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend of choice
    try:
        report = small_report()
        drawn = report.figures(tsne=True)
        assert set(drawn) == {"confusion", "pca", "tsne"}
        assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in drawn.values())
        written = report.save(tmp_path / "r", tsne=True)
        assert [p.name for p in written] == ["r.json", "r-confusion.png", "r-pca.png", "r-tsne.png"]
        assert all(p.read_bytes() == drawn[p.stem.split("-")[1]] for p in written[1:])  # figures are deterministic
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
