"""Target images for training, from a tensor or a torch ``Dataset``, drawn reproducibly.

A data set is a tensor ``(N, C, H, W)`` or a ``Dataset`` whose items are images
``(C, H, W)`` or ``(image, label)`` tuples (as :class:`spiral_ppl.data.MNIST` gives); values
lie in ``[0, 1]``. Batches are drawn with replacement by a generator of their own, whose
state goes into checkpoints so that a resumed run draws the same batches.

Example::

    >>> import torch
    >>> source = ImageSource(torch.rand(10, 1, 4, 4), channels=1, image_size=4)
    >>> source.batch(3).shape, len(source)
    (torch.Size([3, 1, 4, 4]), 10)
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from spiral_ppl import checks

#: Data sets every item of which has been checked, by ``id``, with the image shape they were
#: checked against: the phases of a recipe each draw from the same data, and reading 60,000
#: MNIST items once a phase costs seconds each time.
_CHECKED: dict[int, tuple[weakref.ref, tuple[int, int]]] = {}


def _already_checked(data: Any, shape: tuple[int, int]) -> bool:
    if isinstance(data, torch.utils.data.Subset):
        return _already_checked(data.dataset, shape)
    reference, checked_shape = _CHECKED.get(id(data), (None, None))
    return reference is not None and reference() is data and checked_shape == shape


def _remember_checked(data: Any, shape: tuple[int, int]) -> None:
    try:
        _CHECKED[id(data)] = (weakref.ref(data, lambda _, key=id(data): _CHECKED.pop(key, None)), shape)
    except TypeError:  # an object without weak references is checked each time
        pass


class ImageSource:
    """Images of a tensor or data set, checked against the program's shape.

    :param data: ``(N, C, H, W)`` tensor or a ``Dataset`` of images or ``(image, label)``.
    :param channels: the program's image channels.
    :param image_size: the program's image side.
    :param indices: the items to use (default: all), e.g. to hold some out.
    :param seed: the seed of :meth:`batch`'s draws (default: drawn from torch's global stream).
    """

    def __init__(self, data: Any, channels: int, image_size: int, indices: Sequence[int] | None = None,
                 seed: int | None = None) -> None:
        if isinstance(data, torch.Tensor):
            if data.dim() != 4:
                raise ValueError(f"data must be images (N, C, H, W), got shape {tuple(data.shape)}")
        elif not isinstance(data, Dataset) or not hasattr(data, "__len__"):
            raise TypeError(
                "data must be a tensor (N, C, H, W) of images in [0, 1] or a torch Dataset of images "
                f"(or (image, label) tuples), got {type(data).__name__}"
            )
        self.data, self.channels, self.image_size = data, channels, image_size
        self.indices = torch.arange(len(data)) if indices is None else torch.as_tensor(list(indices))
        self._whole = indices is None
        if len(self.indices) == 0:
            raise ValueError("data holds no images; give at least one")
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)
        self.check_all()

    def check_all(self, chunk: int = 1024) -> None:
        """Check every image now, rather than meet a bad one mid-run: the first bad item is named.

        A data set is read once through; a bar shows the reading when it takes more than a few
        seconds (a folder of JPEGs), and items are checked again as they are drawn. A ``Dataset``
        read through once for this image shape (or a subset of one) is not read again: the phases
        of a recipe share it.
        """
        shape = (self.channels, self.image_size)
        if isinstance(self.data, Dataset) and _already_checked(self.data, shape):
            return
        with tqdm(total=len(self.indices), desc="checking the training images", unit="image", delay=3,
                  leave=False) as bar:
            for start in range(0, len(self.indices), chunk):
                self.images(self.indices[start:start + chunk])
                bar.update(min(chunk, len(self.indices) - start))
        if self._whole and isinstance(self.data, Dataset):
            _remember_checked(self.data, shape)

    def __len__(self) -> int:
        return len(self.indices)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` (positions in the underlying data), checked."""
        if isinstance(self.data, torch.Tensor):
            return self.check(self.data[indices].float(), indices)
        items = [self.data[int(i)] for i in indices]
        return self.check(torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items]),
                          indices)

    def batch(self, count: int) -> torch.Tensor:
        """``count`` images drawn uniformly with replacement."""
        chosen = self.indices[torch.randint(len(self.indices), (count,), generator=self.generator)]
        return self.images(chosen)

    def check(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``images``, items ``indices`` of the data, if they are float images of the program's
        shape, finite and in ``[0, 1]``; else an error that names the first bad item."""
        expected = (self.channels, self.image_size, self.image_size)
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"data items must be float image tensors {expected} in [0, 1]")
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"data images must have shape {expected} to match the program, got {tuple(images.shape[1:])}"
            )
        bad = (~torch.isfinite(images) | (images < 0) | (images > 1)).flatten(1).any(1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            image = images[first]
            found = "NaN or infinite values" if not bool(torch.isfinite(image).all()) else \
                f"values in [{float(image.min()):.3g}, {float(image.max()):.3g}]"
            raise ValueError(f"data item {int(indices[first])} has {found}; training images must be finite with "
                             "values in [0, 1] (for uint8 pixels use images.float() / 255)")
        return images


def hold_out(data: Any, eval_data: Any, eval_size: int, channels: int, image_size: int
             ) -> tuple[range | None, torch.Tensor]:
    """Held-out targets for evaluations: the first ``eval_size`` images of ``eval_data``, or
    else the last ``eval_size`` items of ``data``, which training then leaves out.

    :returns: the items of ``data`` to train on (``None``: all of them) and the held-out images.
    """
    checks.positive_int("eval_size", eval_size, hint="targets to hold out")
    if eval_data is not None:
        held = ImageSource(eval_data, channels, image_size, indices=range(min(eval_size, len(eval_data))))
        return None, held.images(held.indices)
    total = len(data)
    if total <= eval_size:
        raise ValueError(f"data holds {total} images, too few to hold out eval_size={eval_size}; "
                         "pass eval_data= or a smaller eval_size")
    held = ImageSource(data, channels, image_size, indices=range(total - eval_size, total))
    return range(total - eval_size), held.images(held.indices)


def split_held_out(data: Any, eval_data: Any, eval_size: int, channels: int, image_size: int
                   ) -> tuple[Any, torch.Tensor]:
    """The data to train on (``data`` less the held-out items, if they come from it) and the
    held-out targets, as :func:`hold_out` chooses them."""
    training, held_out = hold_out(data, eval_data, eval_size, channels, image_size)
    if training is None:
        return data, held_out
    if isinstance(data, torch.Tensor):
        return data[: len(training)], held_out
    return torch.utils.data.Subset(data, training), held_out
