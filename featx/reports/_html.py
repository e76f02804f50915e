"""Self-contained HTML pages: sections, tables, embedded PNG figures and galleries of image thumbnails.

A page is one file that opens from disk in any browser: styles inline, every image embedded as a data URI,
no external URL. Every piece of text passes through `html.escape`. Thumbnails are made only for the items
shown, so a page about 100,000 images costs what its galleries show. Each thumbnail links to its file by a
path relative to the page's folder (the page and the images can move together).

Written by hand on the standard library: the pages are a few fixed shapes, and a template engine would be a
dependency for string joining.
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

THUMBNAIL = 160  # px, the longer side
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.subtitle,.note{color:#555}table{border-collapse:collapse;margin:.6rem 0}
th,td{padding:.25rem .7rem;border-bottom:1px solid #e4e4e4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.row,.figures{display:flex;flex-wrap:wrap;gap:1rem 2.5rem;align-items:flex-start}
.figures img{box-sizing:border-box;max-width:calc(50% - 1.25rem);min-width:20rem;height:auto;border:1px solid #eee}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.8rem}
.gallery figure{margin:0;padding:.4rem;border:1px solid #e4e4e4;border-radius:4px;background:#fafafa}
.gallery img,.gallery .missing{display:block;margin:auto;max-width:100%}
.gallery .missing{width:10rem;height:6rem;line-height:6rem;text-align:center;color:#a00;background:#fee}
figcaption{font-size:.8rem;overflow-wrap:anywhere;margin-top:.3rem}figcaption .name{font-weight:600}
"""


def escape(value: object) -> str:
    """Text (anything, through str) made safe for HTML content and attribute values; a file name's bytes that
    are not UTF-8 (held by Python as surrogates, which UTF-8 refuses) are shown as \\xNN."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(text, quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """Bytes as a data URI (base64)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def embedded_image(png: bytes, alt: str, mime: str = "image/png") -> str:
    """An <img> holding the image itself (PNG bytes by default)."""
    return f'<img src="{data_uri(png, mime)}" alt="{escape(alt)}">'


def figures(images: dict[str, bytes]) -> str:
    """PNG figures side by side; keys are their alt texts."""
    return '<div class="figures">' + "".join(embedded_image(png, alt) for alt, png in images.items()) + "</div>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{escape(value)}</td>"


def table(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """A table (no header row when `header` is None); floats are shown with 3 decimals, integers with
    thousands separators, anything else as text."""
    head = "<thead><tr>" + "".join(f"<th>{escape(name)}</th>" for name in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def metrics_table(values: dict[str, object]) -> str:
    """A two-column table of named values (metrics, settings)."""
    return table(None, values.items())


def row(*parts: str) -> str:
    """Parts side by side (wrapping on narrow screens)."""
    return f'<div class="row">{"".join(parts)}</div>'


def paragraph(text: str, kind: str = "note") -> str:
    return f'<p class="{escape(kind)}">{escape(text)}</p>'


def section(title: str, *parts: str) -> str:
    """A titled section of already-built HTML parts."""
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def page(title: str, sections: Iterable[str], subtitle: str = "") -> str:
    """A whole HTML5 document: the title, an optional subtitle line, then the sections."""
    sub = paragraph(subtitle, "subtitle") if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{sub}{''.join(sections)}</body></html>\n"
    )


def write(path: str | os.PathLike, document: str) -> Path:
    """Write a page (UTF-8); returns its path."""
    from featx.outputs import atomic_write

    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as out:
        out.write(document)
    return path


def thumbnail(path: str | os.PathLike, size: int = THUMBNAIL) -> bytes | None:
    """A JPEG thumbnail of an image file (longer side `size`, upright), or None when it cannot be read."""
    from PIL import Image, ImageOps

    from featx.images._decode import to_rgb

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly
            image = ImageOps.exif_transpose(image)
            image.thumbnail((size, size))
            image = image if image.mode == "L" else to_rgb(image)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
            return out.getvalue()
    except Exception:  # anything unreadable is shown as such, never fails the page
        return None


def link(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """A link target for `path` from a page in folder `base`: relative when possible, else a file: URI."""
    absolute = Path(path).absolute()
    try:
        # the file name's own bytes, percent-encoded, so that a name that is not UTF-8 still opens
        return quote(os.fsencode(Path(os.path.relpath(absolute, Path(base).absolute())).as_posix()))
    except ValueError:  # another drive (Windows)
        return absolute.as_uri()


@dataclass
class GalleryItem:
    """One image of a gallery: its file and the caption lines under the file name."""

    path: str
    lines: Sequence[str] = field(default_factory=tuple)


def gallery(items: Sequence[GalleryItem], base: str | os.PathLike, size: int = THUMBNAIL) -> str:
    """Thumbnails (made now, for these items only) with their file name and caption, each linking to its file."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(lambda item: thumbnail(item.path, size), items))
    cells = []
    for item, thumb in zip(items, thumbs):
        name = escape(Path(item.path).name)
        picture = embedded_image(thumb, Path(item.path).name, "image/jpeg") if thumb else '<span class="missing">unreadable</span>'
        lines = "".join(f"<br>{escape(line)}" for line in item.lines)
        href = escape(link(item.path, base))
        cells.append(
            f'<figure><a href="{href}">{picture}</a>'
            f'<figcaption><a class="name" href="{href}">{name}</a>{lines}</figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(cells)}</div>'


def file_list(entries: Iterable[tuple[str, str]], base: str | os.PathLike, header: Sequence[str] = ("file", "reason")) -> str:
    """A table of files (each linked) with a note on each, e.g. why it failed."""
    rows = "".join(
        f'<tr><td><a href="{escape(link(path, base))}">{escape(path)}</a></td><td>{escape(note)}</td></tr>'
        for path, note in entries
    )
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
