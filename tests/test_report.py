"""Reports: figures as PNG bytes without pyplot state, and the self-contained HTML report."""
from __future__ import annotations

import numpy as np
from html_checks import embedded_images, no_external_url, parse_html

from featx.reports._report import Report, metrics


def small_report() -> Report:
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 3
    predicted = np.where(rng.random(40) < 0.8, labels, (labels + 1) % 3)
    features = rng.normal(size=(40, 6)) + labels[:, None]
    return Report(["a", "b", "c"], metrics(labels, predicted, ["a", "b", "c"]), {"classifier": "x"}, (features, labels))


def test_figures_are_png_bytes_and_leave_the_backend_alone(tmp_path):
    import matplotlib

    from featx.reports._html import data_uri

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend of choice
    try:
        report = small_report()
        drawn = report.figures(tsne=True)
        assert set(drawn) == {"confusion", "pca", "tsne"}
        assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in drawn.values())
        written = report.save(tmp_path / "r", tsne=True)
        assert [p.name for p in written] == ["r.html", "r.json", "r-confusion.png", "r-pca.png", "r-tsne.png"]
        assert all(p.read_bytes() == drawn[p.stem.split("-")[1]] for p in written[2:])  # figures are deterministic
        page = written[0].read_text()
        for p in written[2:]:  # the page embeds the very PNG files
            assert data_uri(p.read_bytes()) in page
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_html_page_pieces_escape_embed_and_link(tmp_path):
    import io

    from PIL import Image

    from featx.reports import _html as h

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (300, 200), 90).save(images / "grey.png")
    Image.new("RGBA", (64, 640), (200, 10, 10, 128)).save(images / "tall <&> 'x'.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    items = [h.GalleryItem(str(p), [f"score <{i}>"]) for i, p in enumerate(sorted(images.iterdir()))]
    figure = small_report().figures()["confusion"]
    text = h.page(
        "a <title> & more",
        [
            h.section("metrics", h.metrics_table({"accuracy": 0.5, "n": 1234, "<b>": "x & y"})),
            h.section("figures", h.figures({"confusion": figure})),
            h.section("gallery", h.gallery(items, tmp_path / "out")),
            h.section("failed", h.file_list([(str(images / "broken.jpg"), "not an image <!>")], tmp_path / "out")),
        ],
        subtitle="<script>alert(1)</script>",
    )
    document = parse_html(text)
    assert document.find("head/title").text == "a <title> & more"
    assert document.find(".//script") is None and "<b>" not in text and "&lt;b&gt;" in text
    decoded = embedded_images(document)
    assert len(decoded) == 3  # the figure and two thumbnails; the broken file is shown as unreadable
    assert decoded[0].tobytes() == Image.open(io.BytesIO(figure)).tobytes()
    assert all(max(thumb.size) == h.THUMBNAIL for thumb in decoded[1:])
    assert text.count('class="missing"') == 1
    links = {a.get("href") for a in document.iter("a")}
    from urllib.parse import unquote

    assert {(tmp_path / "out" / unquote(href)).resolve() for href in links} == {p.resolve() for p in images.iterdir()}
    assert no_external_url(text)
