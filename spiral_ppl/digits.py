r"""Judging generated digits: a small MNIST classifier, and the scores it gives a set of images.

An unconditional painter of digits is judged the way GANs are, by a network trained on real
digits. :class:`DigitClassifier` is a small convolutional network (two convolutions, two fully
connected layers) that :func:`train_digit_classifier` fits to MNIST's training digits (about
99% test accuracy after 2 epochs on a CPU). :func:`generation_scores` then reports, for a set
of generated images:

- ``top_probability``: the mean over images of the classifier's highest class probability
  (recognisable digits score near 1, scribbles lower);
- ``class_shares``: the share of images given each class (a generator that paints only ones
  has one share near 1);
- ``frechet_distance``: the Fréchet distance between Gaussians fitted to the classifier's
  penultimate features of the images and of reference digits (Heusel et al. 2017, with this
  classifier in place of Inception),

  .. math::

      d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
            - 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\big).

Example::

    >>> import torch
    >>> ones = torch.eye(3, dtype=torch.float64)
    >>> round(frechet_distance(torch.zeros(3), ones, torch.ones(3), ones), 6)   # means 1 apart per axis
    3.0
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.data.resize import resized
from spiral_ppl.inference.engine import hide_progress
from spiral_ppl.io import atomic_path

#: The classifier's input side: MNIST's own.
SIDE = 28


class DigitClassifier(nn.Module):
    """Ten-way digit classifier on ``(N, 1, H, W)`` ink-on-black images in [0, 1] of any side
    (resized to 28x28 by area averaging)."""

    def __init__(self, features: int = 128) -> None:
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Dropout(0.25),
        )
        self.features = nn.Sequential(nn.Linear(64 * 7 * 7, features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(features, 10))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features ``(N, features)``, the space of the Fréchet distance."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (N, 1, H, W) grey digits, got shape {tuple(images.shape)}")
        return self.features(self.convolutions(resized(images, SIDE)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, 10)``."""
        return self.head(self.embed(images))


def train_digit_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, *, epochs: int = 2,
                           batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                           progress: bool | None = None) -> DigitClassifier:
    """A :class:`DigitClassifier` fitted by Adam to ``(N, 1, 28, 28)`` images and their labels."""
    checks.positive_int("epochs", epochs)
    if train_images.ndim != 4 or train_labels.ndim != 1 or train_images.shape[0] != train_labels.shape[0]:
        raise ValueError(f"train_images (N, 1, H, W) and train_labels (N,) must agree, got "
                         f"{tuple(train_images.shape)} and {tuple(train_labels.shape)}")
    if train_labels.dtype != torch.long or bool((train_labels < 0).any() | (train_labels > 9).any()):
        raise ValueError("train_labels must be digits 0..9 as a LongTensor, e.g. sp.data.MNIST(...).labels")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = DigitClassifier()
    optimiser = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    batches = epochs * ((len(train_images) + batch_size - 1) // batch_size)
    with tqdm(total=batches, desc="digit classifier", unit="batch", disable=hide_progress(progress)) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(train_images), generator=generator)
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                loss = F.cross_entropy(classifier(train_images[chosen]), train_labels[chosen])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                bar.update(1)
    return classifier.eval()


@torch.no_grad()
def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` whose most probable class is their label."""
    predictions = torch.cat([classifier(part).argmax(1) for part in images.split(1024)])
    return float((predictions == labels).float().mean())


def frechet_distance(mean_a: torch.Tensor, covariance_a: torch.Tensor, mean_b: torch.Tensor,
                     covariance_b: torch.Tensor) -> float:
    """The Fréchet distance :math:`d^2` (module docstring) between two Gaussians."""
    mean_a, mean_b = mean_a.double(), mean_b.double()

    def root(matrix: torch.Tensor) -> torch.Tensor:  # of a symmetric positive semi-definite matrix
        values, vectors = torch.linalg.eigh(matrix.double())
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    root_a = root(covariance_a)
    cross = root(root_a @ covariance_b.double() @ root_a)
    return float((mean_a - mean_b).pow(2).sum() + torch.trace(covariance_a.double() + covariance_b.double()
                                                                - 2 * cross))


def _gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.double()
    return features.mean(0), torch.cov(features.T)


@torch.no_grad()
def generation_scores(classifier: DigitClassifier, images: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """``top_probability``, ``class_shares`` (a list of 10) and ``frechet_distance`` to
    ``reference`` digits (see the module docstring) of generated ``images`` ``(N, 1, H, W)``."""
    for name, value in (("images", images), ("reference", reference)):
        if value.ndim != 4 or value.shape[1] != 1 or value.shape[0] < 2:
            raise ValueError(f"{name} must be (N, 1, H, W) grey images, N >= 2, got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()) or float(value.min()) < 0 or float(value.max()) > 1:
            raise ValueError(f"{name} must be finite values in [0, 1] (ink on black)")
    classifier = classifier.eval()
    features = torch.cat([classifier.embed(part.float()) for part in images.split(1024)])
    probabilities = classifier.head(features).softmax(1)
    reference_features = torch.cat([classifier.embed(part.float()) for part in reference.split(1024)])
    shares = torch.bincount(probabilities.argmax(1), minlength=10).double() / len(images)
    return {
        "top_probability": float(probabilities.max(1).values.mean()),
        "class_shares": shares.tolist(),
        "frechet_distance": frechet_distance(*_gaussian(features), *_gaussian(reference_features)),
    }


def save_classifier(classifier: DigitClassifier, path: str | Path) -> None:
    """Write the classifier's weights atomically."""
    with atomic_path(path) as temporary:
        torch.save(classifier.state_dict(), temporary)


def load_classifier(path: str | Path) -> DigitClassifier:
    """A classifier saved by :func:`save_classifier`, or a clear error."""
    classifier = DigitClassifier()
    try:
        classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} is not a digit classifier saved by save_classifier ({str(error)[:200]}); "
                         "delete it to train a new one") from None
    return classifier.eval()
