"""Checks of featx's HTML pages shared by the tests: strict HTML5 parsing, embedded images, no external URL."""
from __future__ import annotations


def parse_html(text: str):
    """The document parsed by html5lib's strict HTML5 parser (raises on any parse error)."""
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


def embedded_images(document) -> list:
    """Every <img> of a parsed page decoded from its data URI (fails on any other kind of source)."""
    import base64
    import io

    from PIL import Image

    decoded = []
    for img in document.iter("img"):
        mime, data = img.get("src").split(",", 1)
        assert mime in ("data:image/png;base64", "data:image/jpeg;base64"), mime
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        decoded.append(image)
    return decoded


def no_external_url(text: str) -> bool:
    import re

    return not re.search(r"(?i)\b(https?|ftp)://|//[a-z0-9.-]+\.[a-z]{2,}/|\burl\(", text)


def gallery(document, heading: str) -> list[tuple[str, list[str]]]:
    """(file name, caption lines) of each image in the section whose title starts with `heading`, in order."""
    for section in document.iter("section"):
        if section.find("h2").text.startswith(heading):
            return [
                (caption.find("a").text, [line.tail for line in caption.findall("br")])
                for caption in section.iter("figcaption")
            ]
    raise AssertionError(f"no section {heading!r}")
