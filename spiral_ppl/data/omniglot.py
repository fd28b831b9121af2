"""Omniglot characters as 64x64 canvases, and the pen trajectories people drew them with.

Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015) holds 1,623 handwritten
characters from 50 alphabets, each drawn by 20 people, as 105x105 binary images and as
stroke files. Two sources of images are read:

- the npz arrays ``images_background.npz`` / ``images_evaluation.npz``: ``images`` bool
  ``(characters, 20, 105, 105)`` with True for the white background, row ``r`` being
  character id ``r + 1`` (background) or ``r + 965`` (evaluation);
- the original PNG zips (``images_background.zip``, ``images_background_small1.zip``, ...),
  members ``<split>/<alphabet>/characterNN/<charid>_<drawer>.png``.

Ink becomes 1 on a 0 background (the grayscale brush's convention) and images are
area-resized to ``image_size``.

Stroke files (``strokes_<split>.zip``, one text file per drawing) start with ``START``,
then hold ``x,y,t`` lines (``t`` in milliseconds) with a ``BREAK`` line closing each stroke.
The coordinates are those of the 105x105 image with ``y`` negated; :func:`parse_strokes`
returns them in image coordinates, ``(x, y)`` pointing right and down.

Example::

    characters = Omniglot(split="background")              # npz source
    image, character_id = characters[0]                    # (1, 64, 64), 1
    drawings = OmniglotStrokes(split="background_small1")  # ground-truth pen trajectories
    drawing = drawings[0]                                  # .strokes: list of (N, 3) x, y, t
"""

from __future__ import annotations

import io as _io
import re
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from spiral_ppl.checks import positive_int
from spiral_ppl.data.cache import default_root
from spiral_ppl.data.download import ensure_files
from spiral_ppl.data.resize import resized

#: Side of the original images; stroke coordinates are in this frame.
ORIGINAL_SIZE = 105
#: Where the original zips are published.
MIRRORS = ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",)
#: SHA-256 of the files the loaders know: the published zips, which can be downloaded, and
#: the npz arrays, which cannot. Files not listed (the full-set PNG zips) are read unverified.
SHA256 = {
    "images_background_small1.zip": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    "strokes_background_small1.zip": "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2",
    "strokes_background_small2.zip": "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78",
    "images_background.npz": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "images_evaluation.npz": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
}
NPZ_SPLITS = {"background": ("images_background.npz", 1), "evaluation": ("images_evaluation.npz", 965)}
ZIP_SPLITS = ("background", "evaluation", "background_small1", "background_small2")
_MEMBER = re.compile(r"(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<id>\d+)_(?P<drawer>\d+)\.(png|txt)$")


def _to_canvas(background: torch.Tensor, image_size: int) -> torch.Tensor:
    """Boolean/0-1 images ``(N, H, W)`` with 1 = background -> ink ``(N, 1, S, S)``."""
    return resized(1.0 - background.to(torch.float32)[:, None], image_size).clamp(0, 1)


def _ensure(root: Path, name: str, download: bool, dataset: str, checksums: Mapping[str, str] | None) -> None:
    """Make sure ``name`` is in ``root`` and, when its checksum is known, is the original file."""
    sha256 = None if checksums is None else checksums.get(name)
    mirrors = MIRRORS if name.endswith(".zip") else ()
    ensure_files({name: sha256}, root, mirrors, download, dataset)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Name the file, and the fix, when it turns out not to be a readable archive."""
    try:
        yield
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, KeyError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}); replace it with the original "
            f"(the zips are published at {MIRRORS[0]})"
        ) from None


class Omniglot(Dataset):
    """Omniglot images as ``(1, image_size, image_size)`` ink-on-black tensors and character ids.

    :param root: folder with the npz arrays or zips (default ``$SPIRAL_PPL_DATA/omniglot``).
    :param split: ``"background"`` or ``"evaluation"``; with ``source="png"`` also
        ``"background_small1"`` or ``"background_small2"``.
    :param source: ``"npz"`` (the arrays) or ``"png"`` (the original zip of PNGs).
    :param image_size: side of the returned images.
    :param download: fetch missing zips with published checksums when online.
    :param checksums: SHA-256 per file name (default :data:`SHA256`), checked the first time a
        file is read; ``None`` reads files of your own unverified.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "background",
        source: str = "npz",
        image_size: int = 64,
        download: bool = True,
        checksums: Mapping[str, str] | None = SHA256,
    ) -> None:
        if source not in ("npz", "png"):
            raise ValueError(f"source must be 'npz' or 'png', got {source!r}")
        valid = NPZ_SPLITS if source == "npz" else ZIP_SPLITS
        if split not in valid:
            raise ValueError(f"split must be one of {sorted(valid)} for source={source!r}, got {split!r}")
        positive_int("image_size", image_size)
        self.root = Path(root) if root is not None else default_root("omniglot")
        self.split, self.source, self.image_size = split, source, image_size
        if source == "npz":
            name, first_id = NPZ_SPLITS[split]
            _ensure(self.root, name, download=False, dataset=f"Omniglot {split}", checksums=checksums)
            with _reading(self.root / name), np.load(self.root / name, allow_pickle=False) as arrays:
                images = arrays["images"]
            if images.dtype != bool or images.ndim != 4 or images.shape[-2:] != (ORIGINAL_SIZE, ORIGINAL_SIZE):
                raise ValueError(f"{name}: expected bool images (characters, drawers, 105, 105), got "
                                 f"{images.dtype} {images.shape}")
            characters, drawers = images.shape[:2]
            self._background = torch.from_numpy(images.reshape(-1, ORIGINAL_SIZE, ORIGINAL_SIZE))
            self.character_ids = torch.arange(first_id, first_id + characters).repeat_interleave(drawers)
        else:
            name = f"images_{split}.zip"
            _ensure(self.root, name, download, dataset=f"Omniglot {split}", checksums=checksums)
            backgrounds, ids = [], []
            with _reading(self.root / name), zipfile.ZipFile(self.root / name) as archive:
                for member in sorted(archive.namelist()):
                    match = _MEMBER.search(member)
                    if not match or not member.endswith(".png"):
                        continue
                    with Image.open(_io.BytesIO(archive.read(member))) as picture:
                        backgrounds.append(np.asarray(picture.convert("L"), dtype=np.uint8) > 127)
                    ids.append(int(match["id"]))
            if not backgrounds:
                raise ValueError(
                    f"{self.root / name} holds no Omniglot PNGs (<alphabet>/characterNN/<id>_<drawer>.png)"
                )
            self._background = torch.from_numpy(np.stack(backgrounds))
            self.character_ids = torch.tensor(ids)

    def __len__(self) -> int:
        return len(self.character_ids)

    def images(self, indices) -> torch.Tensor:
        """A batch ``(N, 1, image_size, image_size)`` of the drawings at ``indices``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return _to_canvas(self._background[index], self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} drawings")
        return self.images([index % len(self)])[0], int(self.character_ids[index])


def character_ids_in(split: str, root: str | Path | None = None, download: bool = True,
                     checksums: Mapping[str, str] | None = SHA256) -> set[int]:
    """The ids of the characters drawn in the PNG zip of ``split``, read from its members' names
    (no image is decoded)."""
    if split not in ZIP_SPLITS:
        raise ValueError(f"split must be one of {list(ZIP_SPLITS)}, got {split!r}")
    root = Path(root) if root is not None else default_root("omniglot")
    name = f"images_{split}.zip"
    _ensure(root, name, download, dataset=f"Omniglot {split}", checksums=checksums)
    with _reading(root / name), zipfile.ZipFile(root / name) as archive:
        matches = (_MEMBER.search(member) for member in archive.namelist() if member.endswith(".png"))
        return {int(match["id"]) for match in matches if match}


def parse_strokes(text: str) -> list[np.ndarray]:
    """A stroke file's text -> strokes, each ``(N, 3)`` of ``x, y, t`` in image coordinates."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "START":
        raise ValueError("an Omniglot stroke file starts with a START line")
    strokes, current = [], []
    for number, line in enumerate(lines[1:], start=2):
        if line == "BREAK":
            if current:
                strokes.append(np.array(current, dtype=np.float64))
            current = []
            continue
        try:
            x, y, t = (float(value) for value in line.split(","))
        except ValueError:
            raise ValueError(f"line {number}: expected 'x,y,t', got {line!r}") from None
        current.append((x, -y, t))
    if current:
        strokes.append(np.array(current, dtype=np.float64))
    return strokes


@dataclass
class Drawing:
    """One person's drawing of one character: its strokes in 105x105 image coordinates."""

    alphabet: str
    character: str
    character_id: int
    drawer: int
    strokes: list[np.ndarray]

    def scaled(self, image_size: int) -> list[np.ndarray]:
        """The strokes' ``(x, y)`` points in the pixel coordinates of an ``image_size`` canvas."""
        scale = image_size / ORIGINAL_SIZE
        return [stroke[:, :2] * scale for stroke in self.strokes]


class OmniglotStrokes(Dataset):
    """The ground-truth pen trajectories of ``strokes_<split>.zip``, as :class:`Drawing` items.

    ``root``, ``download`` and ``checksums`` are as for :class:`Omniglot`.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "background_small1",
        download: bool = True,
        checksums: Mapping[str, str] | None = SHA256,
    ) -> None:
        if split not in ZIP_SPLITS:
            raise ValueError(f"split must be one of {list(ZIP_SPLITS)}, got {split!r}")
        self.root = Path(root) if root is not None else default_root("omniglot")
        name = f"strokes_{split}.zip"
        _ensure(self.root, name, download, dataset=f"Omniglot strokes {split}", checksums=checksums)
        self.drawings: list[Drawing] = []
        with _reading(self.root / name), zipfile.ZipFile(self.root / name) as archive:
            for member in sorted(archive.namelist()):
                match = _MEMBER.search(member)
                if not match or member.startswith("__MACOSX") or not member.endswith(".txt"):
                    continue
                try:
                    strokes = parse_strokes(archive.read(member).decode())
                except ValueError as error:
                    raise ValueError(f"{self.root / name}, member {member}: {error}") from None
                self.drawings.append(
                    Drawing(match["alphabet"], match["character"], int(match["id"]), int(match["drawer"]), strokes)
                )
        if not self.drawings:
            raise ValueError(f"{self.root / name} holds no stroke files (<alphabet>/characterNN/<id>_<drawer>.txt)")

    def __len__(self) -> int:
        return len(self.drawings)

    def __getitem__(self, index: int) -> Drawing:
        return self.drawings[index]
