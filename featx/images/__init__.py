"""Images in: finding them in folders and CSVs, content keys, safe decoding, in-memory images, test-time views,
how failed files are listed.
Imports nothing of featx but errors and names."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ImageList": "._inputs", "find_images": "._inputs", "read_column": "._inputs", "display_path": "._inputs",
    "content_key": "._content", "content_keys": "._content",
    "DecodeError": "._decode", "decode_rgb": "._decode",
    "symmetries": "._views",
    "failure_lines": "._failures", "failure_line": "._failures", "FAILURES_SHOWN": "._failures",
})
