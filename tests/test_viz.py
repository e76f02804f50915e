"""featx viz: feature maps, class visualisation and adversarial examples on a real photograph (Chelsea)."""
import re

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featx.backbones._registry import get_backbone
from featx.errors import AmbiguousNameError, ParameterError, UnknownNameError
from featx.viz._attack import parse_eps
from featx.viz._classes import PixelClassifier, resolve_class
from featx.viz._dream import (
    COARSE,
    FINE,
    FourierImage,
    cutoff,
    dream,
    total_variation,
    transform,
)
from featx.viz._images import load_pixels

CAT_CLASSES = range(281, 294)  # domestic and wild cats


@pytest.fixture(scope="module")
def classifier():
    return PixelClassifier()


@pytest.fixture
def chelsea_png(chelsea, tmp_path):
    path = tmp_path / "chelsea.png"
    chelsea.save(path)
    return path


def run(*args):
    from featx.cli.viz import viz

    return CliRunner().invoke(viz, [str(a) for a in args])


def test_class_names_resolve():
    names = get_backbone("efficientnet_lite0").categories()
    assert resolve_class("281", names) == resolve_class("Tabby", names) == resolve_class("tabby cat", names) == 281
    assert resolve_class("egyptian", names) == 285
    assert resolve_class(1, names) == resolve_class("goldfish", names) == 1
    with pytest.raises(AmbiguousNameError, match="'tiger cat' \\(282\\).*'Egyptian cat' \\(285\\)"):
        resolve_class("cat", names)
    assert resolve_class("CRANE", names) == 517 and resolve_class("crane bird", names) == 134  # exact beats partial
    with pytest.raises(UnknownNameError):
        resolve_class("unicorn", names)
    with pytest.raises(UnknownNameError):
        resolve_class("1000", names)
    with pytest.raises(UnknownNameError):  # a superscript two: a digit to str.isdigit, not to int
        resolve_class("\u00b2", names)


def test_eps_parsing():
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps(0.03) == 0.03
    for bad in ("2/0", "x", "0", "1.5", "1e400", "1/1000"):
        with pytest.raises(ParameterError):
            parse_eps(bad)


def test_feature_grid(chelsea_png, tmp_path):
    out = tmp_path / "features.png"
    result = run("features", chelsea_png, "--out", out)
    assert result.exit_code == 0, result.output
    assert "layer blocks.2: 40 channels of 28 x 28" in result.output
    assert Image.open(out).size == (4 * 128, 4 * (128 + 14))  # the image and 15 channels, 4 x 4 tiles
    result = run("features", chelsea_png, "--layer", "blocks.1", "--channels", "3", "--out", out)
    assert "24 channels of 56 x 56" in result.output and Image.open(out).size == (2 * 128, 2 * (128 + 14))
    assert "valid names: conv_stem" in run("features", chelsea_png, "--layer", "nope").output


def test_targeted_attack_survives_png(classifier, chelsea_png, tmp_path):
    out = tmp_path / "adversarial.png"
    result = run("attack", chelsea_png, "--target", "goldfish", "--eps", "8/255", "--out", out)
    assert result.exit_code == 0, result.output
    before, after = re.findall(r"top-5 (?:before|after):\n\s+\S+\s+(.+) \((\d+)\)", result.output)
    assert int(before[1]) in CAT_CLASSES and after == ("goldfish", "1")
    assert (tmp_path / "adversarial-compare.png").exists()
    original = load_pixels(chelsea_png, classifier.preprocessing)
    reloaded = load_pixels(out, classifier.preprocessing)  # crop-size: taken as it is
    assert classifier.top(reloaded, 1)[0][0] == 1
    assert (reloaded - original).abs().max() <= 8 / 255 + 1e-6
    assert "L-inf 8/255" in result.output


def test_untargeted_attack_and_failure(chelsea_png, tmp_path):
    result = run("attack", chelsea_png, "--eps", "2/255", "--out", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    tops = re.findall(r"top-5 (?:before|after):\n\s+\S+\s+.+ \((\d+)\)", result.output)
    assert tops[0] != tops[1]
    failed = run("attack", chelsea_png, "--target", "toaster", "--eps", "1/255", "--steps", "1", "--out", tmp_path / "b.png")
    assert failed.exit_code == 1 and "no top-1 'toaster'" in failed.output


def test_dream_reaches_its_class_and_the_penalty_smooths(classifier, tmp_path):
    out = tmp_path / "dream.png"
    result = run("dream", "--class", "tabby cat", "--steps", "48", "--out", out)
    assert result.exit_code == 0, result.output
    assert float(re.search(r"probability ([\d.]+)", result.output)[1]) >= 0.9
    smooth = load_pixels(out, classifier.preprocessing)
    assert classifier.probability(smooth, 281) >= 0.9
    rough = dream(classifier, 281, steps=48, tv_weight=0)
    assert rough.probability >= 0.9
    assert total_variation(smooth) < 0.9 * rough.total_variation
    assert smooth.shape == (1, 3, 224, 224) and torch.equal(smooth, smooth.mul(255).round().div(255))


def test_dream_views_are_padded_scaled_rotated_and_differentiable():
    generator = torch.Generator().manual_seed(0)
    line = torch.zeros(1, 3, 64, 64)
    line[..., 31:33, :] = 1.0
    line.requires_grad_()
    still = transform(line, generator, pad=4, jitter=0, scale=(1.0, 1.0), degrees=0)
    padded = torch.nn.functional.pad(line - 0.5, (4, 4, 4, 4)) + 0.5  # grey padding, sampled at the image's size
    assert still.shape == (1, 3, 64, 64)  # a network of a fixed input size takes it
    assert torch.allclose(still, torch.nn.functional.interpolate(padded, size=(64, 64), mode="bilinear"), atol=1e-5)
    zoomed = transform(line, generator, pad=0, jitter=0, scale=(2.0, 2.0), degrees=0)
    assert zoomed[0, 0, :, 32].gt(0.5).sum() == 4  # the 2-pixel line, twice as thick
    views = transform(line, generator, copies=8, pad=0, jitter=0, scale=(1.0, 1.0), degrees=10)
    rows = views[:, 0].argmax(1)  # per view and column: the row of the line
    assert (rows[:, 8] - rows[:, -8]).abs().max() >= 4  # some view's line is tilted
    views.sum().backward()
    assert line.grad.abs().sum() > 0


def test_dream_starts_coarse():
    assert cutoff(0, 10) == COARSE and cutoff(5, 10) == cutoff(9, 10) == FINE
    image = FourierImage(32, torch.Generator().manual_seed(0))
    image(cutoff(0, 10)).sum().backward()
    moved = image.spectrum.grad.abs().sum((0, 3)) > 0
    assert torch.equal(moved, image.frequencies <= COARSE)


@pytest.mark.parametrize("command", [["features"], ["attack", "--eps", "1/255"]])
def test_unreadable_image_is_one_line_exit_1(command, elpv_folder, tmp_path):
    """#25 point 8: a truncated real ELPV cell ended in a featx.images._decode.DecodeError traceback."""
    data = sorted(elpv_folder.rglob("*.png"))[0].read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 3])
    result = run(command[0], bad, *command[1:], "--out", tmp_path / "o.png")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot read image {bad}: corrupt or truncated image")
    assert not (tmp_path / "o.png").exists()


def test_usage_errors_and_outputs_over_the_input_are_one_line_before_any_work(chelsea_png, tmp_path, monkeypatch):
    """A budget under one 8-bit level and an ambiguous class are usage errors (exit 2), said before a network is
    built; the photograph named as --out, or --compare named as --out, is refused and left as it was."""
    before = chelsea_png.read_bytes()
    monkeypatch.setattr(PixelClassifier, "__init__", lambda *a: pytest.fail("a network was built"))
    runs = [(["attack", chelsea_png, "--eps", "1/1000"], 2, "less than one 8-bit level"),
            (["attack", chelsea_png, "--out", chelsea_png], 1, "it is the input"),
            (["attack", chelsea_png, "--out", tmp_path / "a.png", "--compare", tmp_path / "a.png"], 2, "is --out"),
            (["features", chelsea_png, "--out", chelsea_png], 1, "it is the input")]
    for args, code, said in runs:
        result = run(*args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code == code and len(errors) == 1 and said in errors[0], (args, result.output)
    assert chelsea_png.read_bytes() == before and not (tmp_path / "a.png").exists()
    monkeypatch.undo()
    assert run("dream", "--class", "cat", "--steps", "1", "--out", tmp_path / "d.png").exit_code == 2  # ambiguous


def test_a_network_without_its_imagenet_head_or_feature_maps_is_one_line_and_a_fixed_size_one_dreams(tmp_path,
                                                                                                      chelsea_png):
    """timm networks built with random weights (offline): ImageNet-12k's 11,821 outputs are not the 1,000 names;
    a ViT has no C x H x W maps to draw, and takes only 224 px, which the dream's views now are."""
    other_head = run("dream", "--class", "1", "-m", "timm/convnext_nano.in12k", "--weights", "random", "--steps", "1",
                     "--out", tmp_path / "d.png")
    assert other_head.exit_code == 2 and "gives 11821 outputs, not the 1000 ImageNet classes" in other_head.output
    vit = ["-m", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "--weights", "random"]
    maps = run("features", chelsea_png, *vit, "--out", tmp_path / "f.png")
    assert maps.exit_code == 2 and "has no layer of C x H x W feature maps" in maps.output, maps.output
    dreamt = run("dream", "--class", "1", *vit, "--steps", "2", "--out", tmp_path / "d.png")
    assert dreamt.exit_code == 0 and Image.open(tmp_path / "d.png").size == (224, 224), dreamt.output
