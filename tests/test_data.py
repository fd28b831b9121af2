"""Dataset loaders: real files when SPIRAL_PPL_DATA is set, generated fixtures always,
and downloads with checksum verification against a local HTTP server on loopback."""

import functools
import gzip
import http.server
import io
import os
import shutil
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spiral_ppl as sp
from spiral_ppl.data import download, integrity, mnist
from spiral_ppl.data.integrity import ChecksumError
from spiral_ppl.metrics import chamfer_distance, parsing_scores, pen_paths

# -- fixtures: small files in the original formats -------------------------------------------


def write_idx(path, array, magic):
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", n) for n in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def make_mnist(folder, count=6):
    folder.mkdir(parents=True, exist_ok=True)
    digits = np.zeros((count, 28, 28), dtype=np.uint8)
    for index in range(count):
        digits[index, 4 + index, 4:24] = 255  # a horizontal bar whose row encodes the index
    write_idx(folder / "t10k-images-idx3-ubyte.gz", digits, mnist.IMAGE_MAGIC)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(count) % 10, mnist.LABEL_MAGIC)
    return {name: download.sha256_of(folder / name) for name in mnist.FILES["test"]}


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


# -- MNIST -------------------------------------------------------------------------------------


def test_mnist_reads_idx_files_and_resizes(tmp_path):
    checksums = make_mnist(tmp_path)
    digits = sp.data.MNIST(tmp_path, split="test", image_size=56, download=False, checksums=checksums)
    assert len(digits) == 6
    image, label = digits[3]
    assert image.shape == (1, 56, 56) and label == 3
    rows = image[0].sum(1)
    assert rows.argmax().item() in (2 * 7, 2 * 7 + 1)  # row 4 + 3 = 7 of 28, doubled
    assert digits.images([0, 1]).shape == (2, 1, 56, 56)


def test_mnist_real_files(data_root):
    test = sp.data.MNIST(data_root / "mnist", split="test", download=False)
    train = sp.data.MNIST(data_root / "mnist", split="train", download=False)
    assert (len(test), len(train)) == (10000, 60000)
    image, label = test[0]
    assert label == 7 and image.shape == (1, 64, 64)
    assert 0.05 < image.mean() < 0.25 and image.max() > 0.95 and image[:, :4].sum() == 0


def test_the_sample_ships_with_the_package(monkeypatch):
    monkeypatch.delenv("SPIRAL_PPL_DATA", raising=False)
    sample = sp.data.MNIST(split="test-sample", download=False)
    assert len(sample) == 500 and [sample[i][1] for i in range(5)] == [7, 2, 1, 0, 4]
    assert torch.bincount(sample.labels).tolist() == [42, 67, 55, 45, 55, 50, 43, 49, 40, 54]


def test_the_shipped_sample_is_the_first_500_test_digits(data_root):
    sample = sp.data.MNIST(split="test-sample", download=False)
    test = sp.data.MNIST(data_root / "mnist", split="test", download=False)
    assert torch.equal(sample.images(range(500)), test.images(range(500)))
    assert torch.equal(sample.labels, test.labels[:500])


def test_mnist_rejects_corrupt_files(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(6), mnist.IMAGE_MAGIC)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        sp.data.MNIST(tmp_path, download=False, checksums=None)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as stream:
        stream.write(struct.pack(">ii", mnist.LABEL_MAGIC, 10) + bytes(3))
    with pytest.raises(ValueError, match="body has 3"):
        sp.data.MNIST(tmp_path, download=False, checksums=None)


def test_mnist_downloads_and_verifies_checksums(tmp_path, server):
    served, url = server
    checksums = make_mnist(served)
    root = tmp_path / "cache"
    digits = sp.data.MNIST(root, mirrors=[url], checksums=checksums)
    assert len(digits) == 6 and sorted(p.name for p in root.iterdir()) == sorted(mnist.FILES["test"])


def test_a_corrupted_download_is_rejected_and_not_left_behind(tmp_path, server):
    served, url = server
    checksums = make_mnist(served)
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(b"corrupted")
    root = tmp_path / "cache"
    with pytest.raises(download.ChecksumError, match="t10k-images"):
        sp.data.MNIST(root, mirrors=[url], checksums=checksums)
    assert not (root / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_a_bad_mirror_falls_through_to_a_good_one(tmp_path, server):
    served, url = server
    checksums = make_mnist(served)
    dead = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    digits = sp.data.MNIST(tmp_path / "cache", mirrors=[dead, url], checksums=checksums)
    assert len(digits) == 6


@pytest.fixture
def verified_record(tmp_path, monkeypatch):
    """A private record of verified files, and a count of the files hashed."""
    monkeypatch.setenv("SPIRAL_PPL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "SETTLED_SECONDS", 0.0)
    hashed = []
    real_sha256_of = integrity.sha256_of
    monkeypatch.setattr(integrity, "sha256_of", lambda path: hashed.append(Path(path).name) or real_sha256_of(path))
    return hashed


def flip_a_byte(path, offset=-9):
    """Change one byte of a file in place: same size, same name, other content."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_altered_file_is_refused_and_a_verified_one_is_not_hashed_again(tmp_path, verified_record):
    folder = tmp_path / "mnist"
    checksums = make_mnist(folder)
    sp.data.MNIST(folder, download=False, checksums=checksums)
    sp.data.MNIST(folder, download=False, checksums=checksums)
    assert sorted(verified_record) == sorted(mnist.FILES["test"])  # hashed once each, then remembered

    labels = folder / "t10k-labels-idx1-ubyte.gz"
    stamp = labels.stat()
    flip_a_byte(labels)
    os.utime(labels, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even with its old modification time
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte.gz is not the published file.*checksums=None"):
        sp.data.MNIST(folder, download=False, checksums=checksums)
    write_idx(labels, np.full(6, 9), mnist.LABEL_MAGIC)  # labels of one's own, read unverified on request
    assert sp.data.MNIST(folder, download=False, checksums=None)[0][1] == 9


def test_the_shipped_checksums_match_the_real_files_and_catch_a_flipped_byte(tmp_path, data_root, verified_record):
    for name in mnist.FILES["test"]:
        shutil.copy(data_root / "mnist" / name, tmp_path / name)
    assert len(sp.data.MNIST(tmp_path, download=False)) == 10000
    flip_a_byte(tmp_path / "t10k-images-idx3-ubyte.gz", offset=5000)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz is not the published file.*replace it with the original"):
        sp.data.MNIST(tmp_path, download=False)
    shutil.copy(data_root / "omniglot" / "images_evaluation.npz", tmp_path / "images_evaluation.npz")
    assert len(sp.data.Omniglot(tmp_path, split="evaluation")) == 659 * 20
    flip_a_byte(tmp_path / "images_evaluation.npz", offset=100_000)
    with pytest.raises(ChecksumError, match="images_evaluation.npz.*replace it with the original"):
        sp.data.Omniglot(tmp_path, split="evaluation")


def test_offline_or_no_download_says_which_files_to_put_where(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(NotADirectoryError, match="root=.*a-file' is a file; pass root= the folder"):
        sp.data.MNIST(tmp_path / "a-file")
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.gz.*put them in"):
        sp.data.MNIST(tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="download failed"):
        sp.data.MNIST(tmp_path, mirrors=["http://127.0.0.1:9/"])


# -- Omniglot ------------------------------------------------------------------------------------


def ink_png(drawn_rows):
    picture = np.ones((105, 105), dtype=bool)
    picture[drawn_rows] = False
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def test_omniglot_npz_and_png_fixtures(tmp_path):
    images = np.ones((2, 20, 105, 105), dtype=bool)
    images[1, 3, 50:55] = False  # character 2, drawer 4: a band of ink
    np.savez(tmp_path / "images_background.npz", images=images, labels=np.zeros((2, 20), dtype=np.int64))
    characters = sp.data.Omniglot(tmp_path, split="background", checksums=None)
    assert len(characters) == 40
    image, character = characters[1 * 20 + 3]
    assert character == 2 and image.shape == (1, 64, 64)
    assert image[0, 32].min().item() == pytest.approx(1.0) and image[0, :25].sum() == 0

    with zipfile.ZipFile(tmp_path / "images_background_small1.zip", "w") as archive:
        archive.writestr("images_background_small1/Alpha/character01/0001_01.png", ink_png(slice(10, 20)))
        archive.writestr("images_background_small1/Alpha/character02/0002_01.png", ink_png(slice(80, 90)))
    drawings = sp.data.Omniglot(tmp_path, split="background_small1", source="png", download=False, checksums=None)
    assert len(drawings) == 2 and drawings[1][1] == 2
    assert drawings[1][0][0, 52].min().item() == pytest.approx(1.0) and drawings[1][0][0, :40].sum() == 0


def test_stroke_files_parse_into_image_coordinates(tmp_path):
    text = "START\n10,-20,0\n30,-20,50\nBREAK\n5,-5,100\n5,-60,140\nBREAK\n"
    strokes = sp.data.parse_strokes(text)
    assert len(strokes) == 2
    np.testing.assert_array_equal(strokes[0], [[10, 20, 0], [30, 20, 50]])
    with zipfile.ZipFile(tmp_path / "strokes_background_small1.zip", "w") as archive:
        archive.writestr("strokes_background_small1/Alpha/character01/0001_07.txt", text)
        archive.writestr("__MACOSX/strokes_background_small1/Alpha/character01/._0001_07.txt", "junk")
    drawings = sp.data.OmniglotStrokes(tmp_path, download=False, checksums=None)
    assert len(drawings) == 1 and drawings[0].drawer == 7 and drawings[0].character_id == 1
    np.testing.assert_allclose(drawings[0].scaled(210)[1], [[10, 10], [10, 120]])
    with pytest.raises(ValueError, match="START"):
        sp.data.parse_strokes("10,20,0")
    with pytest.raises(ValueError, match="line 2"):
        sp.data.parse_strokes("START\n1;2;3")


def test_omniglot_real_files_agree_and_strokes_lie_on_the_ink(data_root):
    root = data_root / "omniglot"
    arrays = sp.data.Omniglot(root, split="background")
    assert len(arrays) == 964 * 20
    pngs = sp.data.Omniglot(root, split="background_small1", source="png", image_size=105, download=False)
    # The PNG of character id c, drawer d is row c - 1, column d - 1 of the npz arrays.
    first_id = int(pngs.character_ids[0])
    full = sp.data.Omniglot(root, split="background", image_size=105)
    torch.testing.assert_close(pngs[0][0], full[(first_id - 1) * 20][0])
    strokes = sp.data.OmniglotStrokes(root, split="background_small1", download=False)
    drawing = strokes[0]
    assert drawing.character_id == first_id and drawing.drawer == 1
    ink = pngs[0][0][0].numpy() > 0.5
    ys, xs = np.nonzero(ink)
    points = np.concatenate(drawing.strokes)[:, :2]
    nearest = np.sqrt(((points[:, None, :] - np.stack([xs, ys], 1)[None]) ** 2).sum(-1)).min(1)
    assert np.mean(nearest < 3) > 0.9


def test_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_evaluation.npz"):
        sp.data.Omniglot(tmp_path, split="evaluation")
    with pytest.raises(ValueError, match="split must be one of"):
        sp.data.Omniglot(tmp_path, split="background_small1", source="npz")
    with zipfile.ZipFile(tmp_path / "strokes_background_small1.zip", "w") as archive:
        archive.writestr("strokes_background_small1/Alpha/character01/0001_07.txt", "START\n" + "1,-2,3\n" * 500)
    whole = (tmp_path / "strokes_background_small1.zip").read_bytes()
    (tmp_path / "strokes_background_small1.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="strokes_background_small1.zip is truncated or corrupt"):
        sp.data.OmniglotStrokes(tmp_path, download=False, checksums=None)


# -- CelebA --------------------------------------------------------------------------------------


def test_celeba_centre_crops_and_resizes(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for index in range(3):
        face = np.zeros((218, 178, 3), dtype=np.uint8)
        face[:, :, 1] = 200  # green where the crop keeps
        face[:20, :, 0] = 255  # red band above the square crop
        face[-20:, :, 2] = 255  # blue band below it
        Image.fromarray(face).save(folder / f"{index:06d}.jpg", quality=95)
    faces = sp.data.CelebA(tmp_path)
    assert len(faces) == 3
    image = faces[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert abs(image[1].mean().item() - 200 / 255) < 0.03
    assert image[0].max() < 0.15 and image[2].max() < 0.15


def test_celeba_missing_folder_explains_the_licence(tmp_path):
    with pytest.raises(FileNotFoundError, match="licence"):
        sp.data.CelebA(tmp_path)


# -- parsing metrics -------------------------------------------------------------------------------


def test_pen_paths_join_drawn_steps_and_split_at_jumps():
    brush = sp.renderers.Brush(canvas_size=64, grid_size=32)
    actions = {
        "flag": torch.tensor([1, 1, 0, 1]),
        "end_point": torch.tensor([31, 31 * 32 + 31, 31 * 32, 0]),
        "control_point": torch.tensor([15, 15 * 32 + 31, 0, 15 * 32]),
    }
    paths = pen_paths(brush, actions)
    assert len(paths) == 2
    np.testing.assert_allclose(paths[0][0], [0, 0])
    np.testing.assert_allclose(paths[0][-1], [63, 63])
    np.testing.assert_allclose(paths[1][[0, -1]], [[0, 63], [0, 0]])
    scores = parsing_scores(paths, [np.array([[0.0, 0.0], [63.0, 0.0], [63.0, 63.0]])])
    assert scores["inferred_strokes"] == 2 and scores["stroke_count_error"] == 1
    with pytest.raises(ValueError, match="one program"):
        pen_paths(brush, {name: value.repeat(2, 1) for name, value in actions.items()})
    assert 0 < scores["chamfer"] < 20


def test_chamfer_distance():
    line = [np.array([[0.0, 0.0], [10.0, 0.0]])]
    assert chamfer_distance(line, line) == 0
    assert chamfer_distance(line, [np.array([[0.0, 3.0], [10.0, 3.0]])]) == pytest.approx(3.0)
    # Symmetric, and a missing half of the drawing costs on one side only.
    half = [np.array([[0.0, 0.0], [5.0, 0.0]])]
    assert chamfer_distance(line, half) == pytest.approx(chamfer_distance(half, line))
    assert 0.5 < chamfer_distance(line, half) < 2
    with pytest.raises(ValueError, match="at least one path"):
        chamfer_distance([], line)
