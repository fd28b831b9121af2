"""MNIST digits as 64x64 canvases, read straight from the four original IDX files.

The IDX format is a big-endian header (magic number 2051 for images, 2049 for labels, then
the dimensions) followed by unsigned bytes. Digits are white ink on black, the grayscale
brush's convention, and are resized from 28x28 to the canvas size (bilinear up, area
means down: :func:`spiral_ppl.data.resize.resized`).

Reference: LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998. MNIST is distributed under CC BY-SA 3.0.

Example::

    digits = MNIST(split="test")          # $SPIRAL_PPL_DATA/mnist or ~/.cache/spiral_ppl/mnist,
                                          # downloaded there (checksums verified) if missing
    sample = MNIST(split="test-sample")   # the first 500 test digits, shipped in the package
    image, label = digits[0]              # (1, 64, 64) float in [0, 1], int
    batch = digits.images(range(16))      # (16, 1, 64, 64)
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from spiral_ppl.checks import positive_int
from spiral_ppl.data.cache import default_root
from spiral_ppl.data.download import ensure_files
from spiral_ppl.data.resize import resized

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    "test-sample": ("t10k-sample-images-idx3-ubyte.gz", "t10k-sample-labels-idx1-ubyte.gz"),
}
#: Published SHA-256 of the original files, and of the sample shipped in the package.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "t10k-sample-images-idx3-ubyte.gz": "4fb033ac49621ffb23557df5d81c082c8a56336b3b76ce845c0ddcaaaec299e2",
    "t10k-sample-labels-idx1-ubyte.gz": "58f68b157d53451c304c693c10fc827d368b4cd0cbe53b39acf5e507818d59ba",
}
#: The folder of the sample: the first 500 test digits, so that demos run offline.
SAMPLE_ROOT = Path(__file__).resolve().parent / "mnist_sample"
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a (possibly gzipped) IDX file of unsigned bytes, checking its magic number."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); delete it and download "
                         "it again: sp.data.MNIST fetches missing files when online") from None
    if len(data) < 8:
        raise ValueError(f"{path} is too short to be an IDX file")
    found, count = struct.unpack(">ii", data[:8])
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}; is it the right (uncorrupted) file?")
    dimensions = 3 if magic == IMAGE_MAGIC else 1
    shape = struct.unpack(">" + "i" * dimensions, data[4 : 4 + 4 * dimensions])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes), body has {body.size}")
    return body.reshape(shape)


class MNIST(Dataset):
    """MNIST digits as ``(1, image_size, image_size)`` float tensors in ``[0, 1]`` and labels.

    :param root: folder holding the IDX files (default: :func:`~spiral_ppl.data.cache.default_root`;
        for ``"test-sample"``, the package).
    :param split: ``"train"`` (60,000 digits), ``"test"`` (10,000) or ``"test-sample"`` (the
        first 500 test digits, shipped in the package: nothing to download).
    :param image_size: side of the returned images (64 in the paper).
    :param download: fetch missing files (checksums verified) when online.
    :param mirrors: base URLs to download from.
    :param checksums: SHA-256 per file name (default: the published ones). Every file is
        checked against it the first time it is read (see :mod:`spiral_ppl.data.integrity`);
        ``None`` reads files of your own unverified.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "test",
        image_size: int = 64,
        download: bool = True,
        mirrors: Sequence[str] = MIRRORS,
        checksums: Mapping[str, str] | None = SHA256,
    ) -> None:
        if split not in FILES:
            raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
        positive_int("image_size", image_size)
        if root is not None:
            self.root = Path(root)
        else:
            self.root = SAMPLE_ROOT if split == "test-sample" else default_root("mnist")
        self.split = split
        self.image_size = image_size
        if checksums is not None and not set(FILES[split]) <= set(checksums):
            raise ValueError(f"checksums must give the SHA-256 of {list(FILES[split])}, or be None to read the files "
                             f"unverified; it has {sorted(checksums)}")
        files = {name: None if checksums is None else checksums[name] for name in FILES[split]}
        # The sample ships with the package; no mirror serves it.
        mirrors = () if split == "test-sample" else mirrors
        image_file, label_file = ensure_files(files, self.root, mirrors, download, dataset=f"MNIST {split}")
        self.digits = torch.from_numpy(read_idx(image_file, IMAGE_MAGIC).copy())
        self.labels = torch.from_numpy(read_idx(label_file, LABEL_MAGIC).astype(np.int64))
        if len(self.digits) != len(self.labels):
            raise ValueError(f"{len(self.digits)} images but {len(self.labels)} labels in {self.root}")

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices: Iterable[int]) -> torch.Tensor:
        """A batch ``(N, 1, image_size, image_size)`` of the digits at ``indices``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        digits = self.digits[index].to(torch.float32)[:, None] / 255.0
        return resized(digits, self.image_size).clamp(0, 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} digits")
        return self.images([index % len(self)])[0], int(self.labels[index])
