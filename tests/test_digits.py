"""The digit classifier and the scores it gives generated images (spiral_ppl.digits)."""

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl import digits

pytestmark = pytest.mark.usefixtures("single_thread")


def test_frechet_distance_of_diagonal_gaussians_by_hand():
    # For diagonal covariances d^2 = |mu_a - mu_b|^2 + sum_i (sigma_a,i - sigma_b,i)^2.
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    sigma_a, sigma_b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 1.0])
    expected = float((mean_a - mean_b).pow(2).sum() + (sigma_a - sigma_b).pow(2).sum())
    assert digits.frechet_distance(mean_a, torch.diag(sigma_a**2), mean_b, torch.diag(sigma_b**2)) == \
        pytest.approx(expected)
    # A rotation of both changes nothing; the same Gaussian is at distance 0.
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    rotated = [rotation @ torch.diag(s**2) @ rotation.T for s in (sigma_a, sigma_b)]
    assert digits.frechet_distance(rotation @ mean_a, rotated[0], rotation @ mean_b, rotated[1]) == \
        pytest.approx(expected, rel=1e-6)
    assert digits.frechet_distance(mean_a, rotated[0], mean_a, rotated[0]) == pytest.approx(0, abs=1e-6)


def test_a_classifier_trained_on_real_digits_tells_digits_from_strokes(tmp_path):
    # 400 of the shipped test digits train it, 100 others judge it: far above chance (0.1).
    mnist = sp.data.MNIST(split="test-sample", image_size=28)
    images, labels = mnist.images(range(500)), mnist.labels[:500]
    classifier = digits.train_digit_classifier(images[:400], labels[:400], epochs=5, batch_size=32, progress=False)
    assert digits.accuracy(classifier, images[400:], labels[400:]) > 0.75
    digits.save_classifier(classifier, tmp_path / "classifier.pt")
    again = digits.load_classifier(tmp_path / "classifier.pt")
    torch.testing.assert_close(again(images[:5]), classifier(images[:5]))

    # Real digits (at the agents' 32x32, resized inside) against random brush programs.
    real = sp.data.MNIST(split="test-sample", image_size=32).images(range(200))
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=32, grid_size=16), steps=8)
    strokes = prog.render(prog.sample_prior(200, generator=torch.Generator().manual_seed(0)))
    digit_scores = digits.generation_scores(classifier, real[100:], real[:100])
    stroke_scores = digits.generation_scores(classifier, strokes, real[:100])
    assert digit_scores["top_probability"] > stroke_scores["top_probability"]
    assert digit_scores["frechet_distance"] < 0.25 * stroke_scores["frechet_distance"]
    assert sum(digit_scores["class_shares"]) == pytest.approx(1) and len(digit_scores["class_shares"]) == 10
    assert min(digit_scores["class_shares"]) > 0


def test_bad_inputs_are_named(tmp_path):
    classifier = digits.DigitClassifier()
    good = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="images must be"):
        digits.generation_scores(classifier, torch.rand(4, 3, 28, 28), good)
    with pytest.raises(ValueError, match=r"reference must be finite values in \[0, 1\]"):
        digits.generation_scores(classifier, good, good * 2)
    with pytest.raises(ValueError, match="must agree"):
        digits.train_digit_classifier(good, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"train_labels must be digits 0..9"):
        digits.train_digit_classifier(good, torch.tensor([0, 3, 10, 1]))
    with pytest.raises(ValueError, match=r"train_labels must be digits 0..9"):
        digits.train_digit_classifier(good, torch.zeros(4))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a digit classifier"):
        digits.load_classifier(tmp_path / "broken.pt")
