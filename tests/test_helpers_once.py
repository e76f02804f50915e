"""Pieces written once and shared (#26 point 4): the normalisation into network input (feature network,
fine-tuning, viz), the preprocessing read back from JSON (feature spaces, fine-tuned networks), and the labels
of evaluated images as indices into a model's classes (fitted bundles, fine-tuned networks)."""
import numpy as np
import pytest
import torch
from torch import nn

from featx.backbones._preprocessing import Preprocessing, normalisation
from featx.errors import BadInputError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's


def test_feature_network_fine_tuning_and_viz_give_the_network_the_same_input():
    from featx.features._network import FeatureNetwork
    from featx.finetuning._model import Trainee
    from featx.viz._classes import PixelClassifier

    images = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    pre = Preprocessing(8, 5, "bilinear", MEAN, STD)
    viz = PixelClassifier("mobilenet_v3_small", "random")  # ImageNet's mean and std
    viz.model = nn.Identity()
    inputs = {
        "features": FeatureNetwork(nn.Identity(), MEAN, STD, "avg").normalise(images),
        "finetuning": Trainee(nn.Identity(), None, pre, torch.device("cpu")).inputs(images),
        "viz": viz(images.float() / 255),
    }
    scale, shift = normalisation(MEAN, STD, pixel_max=255.0)  # the one place the three take it from
    inputs["normalisation"] = images * scale - shift
    for name, x in inputs.items():
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-5, msg=name)


def test_preprocessing_reads_back_what_it_wrote_for_spaces_and_fine_tuned_networks():
    from featx.features._space import FeatureSpace

    pre = Preprocessing(256, 224, "bicubic", MEAN, STD, decode="reduced")
    assert Preprocessing.from_dict(pre.as_dict(), "reduced") == pre
    assert Preprocessing.from_dict(pre.as_dict()).decode == "full"  # a fine-tuned network's, as featx 0.1.0's spaces
    space = {"model": "m", "weights": "w", "preprocessing": pre.as_dict(), "layer": [], "pooling": "avg",
             "decode": "reduced"}
    assert FeatureSpace.from_dict(space).preprocessing == pre


def test_evaluated_labels_are_indices_into_the_models_classes():
    from featx.classify._results import labels_in
    from featx.images._inputs import ImageList

    images = ImageList(["a", "b", "c"], np.array([1, -1, 0]), ["cat", "dog"], [])
    assert labels_in(images, ["dog", "cat", "cow"]).tolist() == [0, -1, 1]
    with pytest.raises(BadInputError, match=r"classes the model does not know: dog \(it knows cat, cow\)"):
        labels_in(images, ["cat", "cow"])
