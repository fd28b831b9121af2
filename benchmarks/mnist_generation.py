"""Unconditional MNIST generation judged by a digit classifier (``spiral_ppl.digits``).

``python benchmarks/mnist_generation.py OUT AGENT [AGENT ...] [--samples N]`` trains (or reads
from ``OUT/digit_classifier.pt``) the small classifier on MNIST's 60,000 training digits and
reports its test accuracy, then scores ``N`` (default 1,000) samples of each unconditional
agent (a checkpoint path or a pretrained name), ``N`` random programs from the agent's program's
prior, and ``N`` real test digits, against the reference of ``N`` other test digits:

- the mean top-class probability (target for an agent: at least 0.9);
- the smallest share of samples given one class (target: at least 3% for every class);
- the Fréchet distance in the classifier's features (target: at most a quarter of the random
  programs').

Writes ``OUT/results.md`` and, per agent, ``OUT/<agent>_samples.png`` (100 samples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import spiral_ppl as sp
from spiral_ppl import digits
from spiral_ppl.inference.spiral import Spiral
from spiral_ppl.plots import plt


def classifier(out: Path) -> tuple[digits.DigitClassifier, float]:
    path = out / "digit_classifier.pt"
    test = sp.data.MNIST(split="test", image_size=28)
    if path.exists():
        model = digits.load_classifier(path)
    else:
        train = sp.data.MNIST(split="train", image_size=28)
        model = digits.train_digit_classifier(train.images(range(len(train))), train.labels, epochs=2)
        digits.save_classifier(model, path)
    return model, digits.accuracy(model, test.images(range(len(test))), test.labels)


def picture(images: torch.Tensor, path: Path, title: str) -> None:
    grid = images[:100].reshape(10, 10, *images.shape[-2:]).permute(0, 2, 1, 3).reshape(10 * images.shape[-2], -1)
    figure, axis = plt.subplots(figsize=(7, 7.4))
    axis.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
    axis.set_axis_off()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("agents", nargs="+", help="checkpoint paths or pretrained names of unconditional agents")
    parser.add_argument("--samples", type=int, default=1000)
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    model, test_accuracy = classifier(options.out)
    count = options.samples
    lines = ["# MNIST generation judged by a digit classifier", "",
             f"Classifier: `spiral_ppl.digits.DigitClassifier`, 2 epochs on the 60,000 training digits; test "
             f"accuracy {test_accuracy:.4f}. Reference: MNIST test digits 0..{count - 1}; {count} images each.", ""]
    for name in options.agents:
        agent = Spiral.named(name, device="cpu")
        size = agent.prog.image_size
        test = sp.data.MNIST(split="test", image_size=size)
        reference = test.images(range(count))
        prior = agent.prog.render(agent.prog.sample_prior(count, generator=torch.Generator().manual_seed(0)))
        rows = {"real test digits (others)": test.images(range(count, 2 * count)),
                "random programs from the prior": prior,
                f"agent {Path(name).stem}": agent.sample(count, seed=0).images}
        scores = {label: digits.generation_scores(model, images, reference) for label, images in rows.items()}
        random_distance = scores["random programs from the prior"]["frechet_distance"]
        lines += [f"## {Path(name).stem}", "",
                  "| images | mean top-class probability | smallest class share | Fréchet distance | "
                  "/ random programs' |",
                  "|---|---:|---:|---:|---:|"]
        for label, score in scores.items():
            lines.append(f"| {label} | {score['top_probability']:.3f} | {min(score['class_shares']):.3f} | "
                         f"{score['frechet_distance']:.2f} | {score['frechet_distance'] / random_distance:.2f} |")
        agent_scores = scores[f"agent {Path(name).stem}"]
        lines += ["", f"Class shares of agent {Path(name).stem}: "
                  + ", ".join(f"{digit}: {share:.3f}" for digit, share in enumerate(agent_scores["class_shares"])), ""]
        picture(rows[f"agent {Path(name).stem}"], options.out / f"{Path(name).stem}_samples.png",
                f"100 samples of {Path(name).stem}")
    (options.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
