"""CelebA faces from a folder of the official aligned JPEGs, as 64x64 RGB canvases.

CelebA (Liu, Luo, Wang and Tang, ICCV 2015) may not be redistributed, so nothing is
downloaded: the user puts the official ``img_align_celeba/*.jpg`` (178x218 pixels) in a
folder. Each face is centre-cropped to a square and resized with a Lanczos filter.

Example::

    faces = CelebA("~/data/celeba")     # the folder holding img_align_celeba/ (or the JPEGs)
    image = faces[0]                    # (3, 64, 64) float in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from spiral_ppl.checks import optional_positive_int, positive_int
from spiral_ppl.data.cache import default_root


class CelebA(Dataset):
    """Aligned CelebA faces as ``(3, image_size, image_size)`` tensors in ``[0, 1]``.

    :param root: folder holding ``img_align_celeba/`` or the JPEGs themselves
        (default ``$SPIRAL_PPL_DATA/celeba``).
    :param image_size: side of the returned images.
    :param crop: side of the centred square cut from each face before resizing (default: the
        whole width of the image, 178 for the official files).
    """

    def __init__(self, root: str | Path | None = None, image_size: int = 64, crop: int | None = None) -> None:
        positive_int("image_size", image_size)
        optional_positive_int("crop", crop)
        self.root = Path(root).expanduser() if root is not None else default_root("celeba")
        folder = self.root / "img_align_celeba" if (self.root / "img_align_celeba").is_dir() else self.root
        self.files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        if not self.files:
            raise FileNotFoundError(
                f"no CelebA JPEGs in {folder}. CelebA cannot be downloaded automatically (its licence forbids "
                "redistribution): download the aligned images (img_align_celeba.zip) from the CelebA site, "
                f"unzip them into {self.root / 'img_align_celeba'}, or pass root= the folder that holds them."
            )
        self.image_size, self.crop = image_size, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as picture:
                picture = picture.convert("RGB")
        except OSError as error:
            raise ValueError(f"cannot read {path} as an image: {error}") from None
        side = min(self.crop or picture.width, picture.width, picture.height)
        left, top = (picture.width - side) // 2, (picture.height - side) // 2
        picture = picture.crop((left, top, left + side, top + side))
        picture = picture.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
