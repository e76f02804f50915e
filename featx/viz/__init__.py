"""Look inside a classifier: feature maps, class visualisation by gradient ascent, adversarial examples.

Everything works on one image in pixel space: a float 1 x 3 x H x W tensor in [0, 1] at the backbone's
input size, normalised inside the differentiable forward pass (see `classes.PixelClassifier`).
"""
