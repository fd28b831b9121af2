"""Nothing lost in training: divergence stops before a checkpoint, damaged files are caught,
older checkpoints are kept to fall back on, resumed logs hold each update once."""

import os
import stat

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import SpiralConfig, TrainingDiverged, checkpoints

pytestmark = pytest.mark.usefixtures("single_thread")  # small networks: one thread is faster


def program():
    return sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=2)


def agent_and_data(**train):
    torch.manual_seed(0)
    prog = program()
    data = prog.render({c.name: torch.randint(0, c.size, (32, 2)) for c in prog.action_space})
    config = SpiralConfig.small(a2c={"batch_size": 4}, reward={"kind": "critic"}, train=train)
    return sp.inference.Spiral(prog, config=config, device="cpu"), data


def updates_logged(path):
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def test_weights_blown_up_by_a_learning_rate_far_too_high_never_reach_a_checkpoint(tmp_path):
    agent, data = agent_and_data(checkpoint_every=1)
    checkpoint = tmp_path / "checkpoint.pt"
    agent.fit(data, 2, checkpoint=checkpoint, progress=False)
    saved = checkpoint.read_bytes()
    agent.set_hyperparameters({"a2c.lr": 1e6})
    with pytest.raises(TrainingDiverged, match="after update 3.*before writing"):
        agent.fit(data, 3, checkpoint=checkpoint, progress=False)
    assert checkpoint.read_bytes() == saved
    resumed = sp.inference.Spiral.load(checkpoint, program())
    assert resumed.learner.updates == 2
    resumed.fit(data, 1, progress=False)  # the checkpoint it stopped at trains on
    assert all(bool(torch.isfinite(weight).all()) for weight in resumed.policy.parameters())
    with pytest.raises(ValueError, match="a2c.lr must be positive, a finite number"):
        agent.set_hyperparameters({"a2c.lr": float("inf")})


def test_training_keeps_the_newest_checkpoints_and_reading_falls_back_past_a_damaged_one(tmp_path, capsys):
    agent, data = agent_and_data(checkpoint_every=1, keep_checkpoints=3)
    checkpoint = tmp_path / "checkpoint.pt"
    agent.fit(data, 5, checkpoint=checkpoint, progress=False)
    kept = [checkpoint, tmp_path / "checkpoint.1.pt", tmp_path / "checkpoint.2.pt"]
    assert sorted(tmp_path.glob("checkpoint*.pt")) == sorted(kept)
    assert [checkpoints.read(path)["learner"]["updates"] for path in kept] == [5, 4, 3]

    # A value changed inside a tensor, the file otherwise well formed: the checksum catches it.
    state = torch.load(checkpoint, weights_only=True)
    first = next(iter(state["policy"].values()))
    first[(0,) * first.dim()] += 1.0
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match="is damaged"):
        sp.inference.Spiral.load(checkpoint, program())
    path, state = checkpoints.newest_readable(checkpoint, keep=3)
    assert path == kept[1] and state["learner"]["updates"] == 4
    assert "skipping" in capsys.readouterr().err
    # Bytes flipped in the middle of the file: unreadable or damaged, never loaded silently.
    raw = bytearray(kept[1].read_bytes())
    for offset in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[offset] ^= 0xFF
    kept[1].write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged|not a readable SPIRAL checkpoint"):
        checkpoints.read(kept[1])


def test_a_resumed_run_logs_each_update_once_and_clears_stale_temporary_files(tmp_path):
    agent, data = agent_and_data(log_every=1)
    checkpoint = tmp_path / "checkpoint.pt"
    agent.fit(data, 2, log_dir=tmp_path, checkpoint=checkpoint, progress=False)
    agent.fit(data, 2, log_dir=tmp_path, progress=False)  # updates 3 and 4 logged, then the process dies
    stale = tmp_path / ".checkpoint.pt.x1y2.tmp"  # a write killed half-way
    stale.write_bytes(b"half a checkpoint")
    assert updates_logged(tmp_path / "train.csv") == [1, 2, 3, 4]
    resumed = sp.inference.Spiral.load(checkpoint, program())
    resumed.fit(data, 3, log_dir=tmp_path, checkpoint=checkpoint, progress=False)
    assert updates_logged(tmp_path / "train.csv") == [1, 2, 3, 4, 5]
    assert not stale.exists()
    # Files the user keeps get the permissions the umask gives new files, not 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "train.csv").stat().st_mode) == 0o666 & ~umask


def test_bad_training_images_are_named_before_training_starts():
    agent, data = agent_and_data()
    data[7, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="data item 7 has NaN"):
        agent.fit(data, 1, progress=False)
    data[7, 0, 3, 3], data[11, 0, 0, 0] = 0.0, 3.0
    with pytest.raises(ValueError, match=r"data item 11 has values in \[0, 3\]"):
        agent.fit(data, 1, progress=False)
    assert agent.learner.updates == 0
    # A data set is read through before training too, not only a tensor.
    data[11, 0, 0, 0] = 0.0
    data[-3, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=f"data item {len(data) - 3} has NaN or infinite values"):
        agent.fit(torch.utils.data.TensorDataset(data), minutes=0.1, progress=False)
    assert agent.learner.updates == 0


def test_bad_arguments_to_inference_and_evaluation_are_named():
    agent, data = agent_and_data()
    with pytest.raises(ValueError, match="seed must be an int"):
        agent.infer(agent.prog, data[:2], sp.Budget(renders=2), seed=1.5)
    with pytest.raises(ValueError, match=r"targets values must lie in \[0, 1\]"):
        agent.evaluate(data[:4] * 5)
    with pytest.raises(TypeError, match="engines must map a name to each engine"):
        sp.compare(agent.prog, data[:2], engines=[sp.inference.Importance()], budgets=[4])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asks for a GPU, but torch sees none"):
            sp.inference.Spiral(agent.prog, device="cuda")


class CountingImages(torch.utils.data.Dataset):
    """Images that count how often they are read."""

    def __init__(self, images):
        self.images, self.reads = images, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.reads += 1
        return self.images[index]


def test_a_data_set_is_read_through_once_for_all_the_phases_of_a_run():
    from spiral_ppl.inference.spiral.sources import ImageSource

    agent, data = agent_and_data()
    images = CountingImages(data)
    ImageSource(images, 1, data.shape[-1])
    assert images.reads == len(data)
    ImageSource(images, 1, data.shape[-1])
    ImageSource(torch.utils.data.Subset(images, range(len(data) - 4)), 1, data.shape[-1])
    assert images.reads == len(data)  # neither the data set nor a subset of it is read through again
    with pytest.raises(ValueError, match=r"must have shape \(1, 8, 8\)"):
        ImageSource(images, 1, 8)  # checked for another image shape: read again, and refused at once
    part = CountingImages(data)
    ImageSource(part, 1, data.shape[-1], indices=range(5))
    ImageSource(part, 1, data.shape[-1])
    assert part.reads == 5 + len(data)  # a source of some items does not vouch for the others
    images.images[2, 0, 0, 0] = float("nan")  # changed after the check: still named when drawn
    with pytest.raises(ValueError, match="data item 2 has NaN"):
        ImageSource(images, 1, data.shape[-1]).images(torch.tensor([2]))
