"""Fetching dataset files with checksum verification.

A file is downloaded into a temporary file beside its destination, its SHA-256 is checked,
and only then is it moved into place, so a corrupted or truncated download is never left
where a loader would read it. Each file may have several mirrors, tried in order.

Example::

    fetch("t10k-labels-idx1-ubyte.gz", root, mirrors=MNIST_MIRRORS, sha256="f7ae60f9...")
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from spiral_ppl.data.integrity import ChecksumError, sha256_of, verify
from spiral_ppl.io import atomic_path

__all__ = ["ChecksumError", "ensure_files", "fetch", "sha256_of"]


def fetch(name: str, root: str | Path, mirrors: Sequence[str], sha256: str, timeout: float = 60.0) -> Path:
    """Download ``name`` from the first mirror that serves it correctly into ``root``.

    :param mirrors: base URLs; the file is fetched from ``mirror + name``.
    :param sha256: the published SHA-256 of the file.
    :raises ChecksumError: every mirror that answered served a file with another checksum.
    :raises ConnectionError: no mirror could be reached (offline).
    """
    destination = Path(root) / name
    if not mirrors:
        raise ValueError(f"no mirrors to download {name} from")
    problems = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            with atomic_path(destination) as temporary:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(temporary, "wb") as out:
                    shutil.copyfileobj(response, out)
                found = sha256_of(temporary)
                if found != sha256:
                    # Raising inside atomic_path deletes the temporary file.
                    raise ChecksumError(f"{url}: SHA-256 {found}, expected {sha256}")
            return destination
        except ChecksumError as error:
            problems.append(str(error))
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            problems.append(f"{url}: {getattr(error, 'reason', error)}")
    if any("SHA-256" in problem for problem in problems):
        raise ChecksumError(f"could not download a verified {name}: " + "; ".join(problems))
    raise ConnectionError(f"could not download {name}: " + "; ".join(problems))


def ensure_files(
    files: Mapping[str, str | None], root: str | Path, mirrors: Sequence[str], download: bool, dataset: str
) -> list[Path]:
    """Make sure ``files`` (name -> SHA-256, or None where none is published) are in ``root``
    and are the published files, downloading the missing ones.

    Raises :class:`FileNotFoundError` that says which files to put where when they are
    missing and cannot be downloaded (offline, or ``download=False``), and
    :class:`ChecksumError` naming a file whose content is not the published one.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{dataset}: root={str(root)!r} is a file; pass root= the folder that holds "
                                 f"{', '.join(files)} (or leave it unset for the default folder)")
    missing = [name for name in files if not (root / name).is_file()]
    downloadable = [name for name in missing if files[name] is not None]
    if not mirrors:
        reason = "they cannot be downloaded"
    elif not download:
        reason = "downloading is off (download=False)"
    else:
        reason = "no published checksum is known to verify a download of them"
    if downloadable and download and mirrors:
        try:
            for name in downloadable:
                fetch(name, root, mirrors, files[name])
            missing = [name for name in missing if name not in downloadable]
        except ConnectionError as error:
            reason = f"the download failed ({error})"
    if missing:
        raise FileNotFoundError(
            f"{dataset} files {missing} are not in {root} and {reason}. Download them by hand "
            f"(from {mirrors[0] if mirrors else 'the original source'}) and put them in {root}, "
            "or pass root= the folder that holds them."
        )
    if download and mirrors:
        fix = f"delete it, and loading {dataset} again downloads it from {mirrors[0]}"
    else:
        fix = f"replace it with the original (from {mirrors[0] if mirrors else 'the original source'})"
    fix += ", or pass checksums=None to read a version of your own unverified"
    for name, sha256 in files.items():
        if sha256 is not None:
            verify(root / name, sha256, fix=fix)
    return [root / name for name in files]
