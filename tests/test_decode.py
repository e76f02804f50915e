"""Decoding: every Pillow mode to RGB, EXIF orientation, and bad bytes refused with a reason."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from featx.images._decode import DecodeError, array_to_rgb, decode, decode_rgb


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_photograph_round_trips(chelsea):
    decoded = decode_rgb(encode(chelsea, "PNG"))
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(chelsea))


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK"])
def test_plain_modes_become_rgb(chelsea, mode):
    source = chelsea.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_rgb(encode(source, fmt))
    assert decoded.mode == "RGB" and decoded.size == chelsea.size
    # the grey levels survive: a grey image decodes to equal channels matching its luminance
    if mode == "L":
        rgb = np.asarray(decoded)
        assert np.array_equal(rgb[..., 0], np.asarray(source)) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256 * 16, dtype=np.uint16).reshape(16, 256)
    decoded = np.asarray(decode_rgb(encode(Image.fromarray(ramp), "PNG")))
    assert decoded[..., 0].min() == 0 and decoded[..., 0].max() == 255
    # monotone and spread over the whole range (clipping would saturate everything above 255 at 255)
    ramp8 = decoded[..., 0].ravel().astype(int)
    assert np.all(np.diff(ramp8) >= 0) and len(np.unique(ramp8)) == 256


def test_float_and_int32_images_are_scaled():
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    f = np.asarray(decode_rgb(encode(Image.fromarray(values, "F"), "TIFF")))
    assert f.min() == 0 and f.max() == 255
    big = (np.arange(64 * 64, dtype=np.int32).reshape(64, 64) * 1000)
    i = np.asarray(decode_rgb(encode(Image.fromarray(big, "I"), "TIFF")))
    assert i.min() == 0 and i.max() == 255


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    decoded = np.asarray(decode_rgb(encode(rgba, "PNG")))
    assert tuple(decoded[0, 0]) == (255, 0, 0)
    assert tuple(decoded[4, 4]) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert tuple(np.asarray(decode_rgb(encode(la, "PNG")))[1, 1]) == (255, 255, 255)


def test_palette_with_transparency():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 1)
    decoded = np.asarray(decode_rgb(encode(p, "PNG", transparency=0)))
    assert tuple(decoded[0, 0]) == (0, 255, 0) and tuple(decoded[2, 2]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_rgb(encode(wide, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not an image", "not an image"),
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_rgb(data)


def test_truncated_image_is_refused(chelsea):
    data = encode(chelsea, "JPEG")
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_rgb(data[: len(data) // 2])


def test_decompression_bomb_is_refused():
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")  # 400 megapixels in a few kilobytes
    assert len(bomb) < 200_000
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_rgb(bomb)


def test_arrays():
    grey = np.full((5, 6), 7, dtype=np.uint8)
    assert np.asarray(array_to_rgb(grey)).shape == (5, 6, 3)
    with pytest.raises(ValueError, match="uint8"):
        array_to_rgb(grey.astype(np.float64))


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (333, 517), (300, 300), (100, 80)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_resize_crop_matches_torchvision_on_colour_and_grey(chelsea, size, interpolation):
    from featx.backbones._preprocessing import Preprocessing, _torchvision_resize_crop

    colour = chelsea.resize(size)
    pre = Preprocessing(resize=232, crop=224, interpolation=interpolation, mean=(0, 0, 0), std=(1, 1, 1))
    for image in (colour, colour.convert("L")):
        ours = pre.geometric()(image).int()
        reference = _torchvision_resize_crop(image.convert("RGB"), 232, 224, interpolation).int()
        assert ours.shape == reference.shape == (3, 224, 224) and ours.dtype == torch.int32
        assert (ours - reference).abs().max() <= 2  # PIL's resampling of the crop vs of the whole image
        assert (ours - reference).abs().float().mean() < 0.5


def test_grey_images_stay_one_channel_until_resized():
    grey = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8), "L")
    assert decode(encode(grey, "PNG")).mode == "L"
    assert decode_rgb(encode(grey, "PNG")).mode == "RGB"


def big_photo(chelsea, size=(3000, 2000), orientation=None, fmt="JPEG") -> bytes:
    """Chelsea upscaled to camera size, with a little noise so that it compresses like a photograph."""
    rng = np.random.default_rng(0)
    pixels = np.asarray(chelsea.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    image = Image.fromarray(np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8))
    options = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    return encode(image, fmt, **options)


def lite0(decode_mode):
    from featx.backbones._registry import get_backbone

    return get_backbone("efficientnet_lite0").preprocessing().with_decode(decode_mode)  # resize 256, crop 224


def test_large_jpeg_is_decoded_at_a_reduced_scale_never_below_the_target(chelsea):
    data = big_photo(chelsea)
    assert decode(data).size == (3000, 2000)
    assert decode(data, min_size=512).size == (1500, 1000)  # 1/2: 1/4 would go below 512
    assert decode(data, min_size=250).size == (375, 250)  # 1/8, exactly the target
    assert lite0("reduced").min_decode_size == 512 and lite0("full").min_decode_size is None


def test_orientation_is_applied_to_reduced_decoding(chelsea):
    decoded = decode(big_photo(chelsea, orientation=6), min_size=512)
    assert decoded.size == (1000, 1500)
    full = decode(big_photo(chelsea, orientation=6))
    assert full.size == (2000, 3000)
    # the same picture, upright: the reduced decode matches the full one shrunk the same way
    shrunk = np.asarray(full.resize(decoded.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(np.asarray(decoded, dtype=np.int16) - shrunk).mean() < 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reduced_decoding_keeps_the_features_of_a_large_photo(chelsea, fmt):
    """The tolerance comes from benchmarks/reduced_decode.py (docs/performance.md): over 112 camera-like
    12-megapixel photographs, cosine 0.9994 on average, 0.9967 at worst."""
    from featx.backbones._registry import get_backbone
    from featx.features._network import build_feature_network

    data = big_photo(chelsea, size=(2400, 1600) if fmt == "PNG" else (3000, 2000), fmt=fmt)
    full, reduced = lite0("full").load(data), lite0("reduced").load(data)
    assert full.shape == reduced.shape == (3, 224, 224) and not torch.equal(full, reduced)
    backbone = get_backbone("efficientnet_lite0")
    network = build_feature_network(backbone, backbone.weights(None))
    with torch.inference_mode():
        a, b = network(torch.stack([full, reduced])).numpy()
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.996


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_under_four_times_the_target_decodes_exactly_as_before(chelsea, fmt):
    data = big_photo(chelsea, size=(1000, 700), fmt=fmt)  # shorter side 700: under 4x the resize target, 256
    assert torch.equal(lite0("reduced").load(data), lite0("full").load(data))


def test_unknown_decode_mode_is_refused(tmp_path):
    import featx
    from featx.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="decode mode 'fast'.*full, reduced"):
        featx.extract(tmp_path, decode="fast", store=tmp_path / "s.h5")  # checked before anything is read
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("tag", ["convnext_base.fb_in22k_ft_in1k_384", "dm_nfnet_f0.dm_in1k", "resnet10t.c3_in1k"])
@pytest.mark.parametrize("size", [(451, 300), (300, 451)])
def test_timm_weights_are_cropped_as_timm_does(chelsea, tag, size):
    """timm's crop_mode: "squash" resizes both sides (convnext_base's 384 px fine-tune keeps the whole photo in
    the crop; dm_nfnet_f0 squashes to 213 px, then crops 192), "center" keeps the aspect ratio (resnet10t)."""
    import timm

    from featx.backbones._registry import get_backbone

    cfg = timm.models.get_pretrained_cfg(tag).to_dict()
    pre = get_backbone(f"timm/{tag}").preprocessing()
    assert pre.crop_mode == (cfg.get("crop_mode") or "center")
    reference = timm.data.transforms_factory.transforms_imagenet_eval(
        cfg["input_size"][-1], cfg["crop_pct"], cfg.get("crop_mode"), interpolation=cfg["interpolation"],
        use_prefetcher=True)  # uint8 pixels, not normalised
    for image in (chelsea.resize(size), chelsea.resize(size).convert("L")):
        ours = pre.geometric()(image).int()
        theirs = torch.as_tensor(np.asarray(reference(image.convert("RGB")))).int()
        assert ours.shape == theirs.shape == (3, pre.crop, pre.crop)
        assert (ours - theirs).abs().max() <= 2 and (ours - theirs).abs().float().mean() < 0.5


def test_crop_modes_featx_does_not_apply_are_one_line_and_center_spaces_read_back_unchanged():
    from featx.backbones._preprocessing import Preprocessing
    from featx.backbones._registry import get_backbone
    from featx.errors import FeatxError

    with pytest.raises(FeatxError, match="crop_mode 'border'.*choose another pretrained tag"):
        get_backbone("timm/deepseek_vit_412m.deepseek_v4_1_flash")
    squash = get_backbone("timm/convnext_base.fb_in22k_ft_in1k_384").preprocessing()
    center = get_backbone("timm/resnet10t.c3_in1k").preprocessing()
    assert squash.as_dict()["crop_mode"] == "squash" and "crop_mode" not in center.as_dict()  # as written before
    assert [Preprocessing.from_dict(p.as_dict()) for p in (squash, center)] == [squash, center]
