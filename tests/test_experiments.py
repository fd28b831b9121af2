"""Experiment configurations: shipped files, overrides, programs and datasets they describe."""

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl import experiments

PAPER_EXPERIMENTS = {"mnist-gen", "mnist-recon", "mnist-recon-blind", "mnist-recon-l2", "omniglot-gen",
                     "omniglot-recon", "celeba-recon", "scenes-recon", "scenes-recon-l2"}


def test_every_paper_experiment_is_shipped_and_builds_its_program():
    assert set(experiments.list_configs()) >= PAPER_EXPERIMENTS
    for name in PAPER_EXPERIMENTS:
        config = experiments.load_config(name)
        assert config["name"] == name
        prog = experiments.build_program(config)
        assert prog.steps == 20 and prog.image_size == 64
    assert experiments.load_config("celeba-recon")["program"]["color"] is True
    assert experiments.load_config("mnist-recon-blind")["agent"]["blind"] is True
    assert experiments.load_config("mnist-gen")["agent"]["conditional"] is False
    assert isinstance(experiments.build_program(experiments.load_config("scenes-recon")), sp.programs.SceneProgram)


@pytest.mark.parametrize("name", ["mnist-recon-cpu", "scenes-recon-cpu", "omniglot-recon-cpu"])
def test_the_cpu_recipes_describe_the_shipped_agents(name):
    # The configuration is the recipe of the pretrained agent of the same name: same program,
    # same network and training settings (the learning rate and entropy cost are those it
    # started with; its model card says how they were lowered).
    config = experiments.load_config(name)
    agent = sp.inference.Spiral.pretrained(name, device="cpu")
    assert repr(experiments.build_program(config)) == repr(agent.prog)
    recipe = experiments.spiral_config(config)
    for section in ("policy", "critic", "reward"):
        assert getattr(recipe, section) == getattr(agent.config, section), section
    # The phases' settings, applied in order, end at the hyper-parameters the agent was saved with.
    final = recipe
    for phase in recipe.train.phases:
        final = final.replace(phase.settings)
    assert final.a2c == agent.config.a2c


def test_overrides_are_parsed_as_toml():
    config = experiments.load_config("mnist-recon", ["train.phases.0.updates=7", "a2c.lr=3e-4", "reward.kind=l2",
                                                     "program.renderer=brush", "agent.blind=true"])
    assert config["train"]["phases"][0]["updates"] == 7 and config["a2c"]["lr"] == 3e-4
    assert config["reward"]["kind"] == "l2" and config["agent"]["blind"] is True


@pytest.mark.parametrize(
    "override, message",
    [("steps=3", "table.key=value"), ("model.steps=3", "unknown table"), ("train.steps", "table.key=value"),
     ("train.phases.5.updates=3", "not an index"), ("a2c.lr.x=3", "'lr' is a value, not a table")],
)
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        experiments.load_config("mnist-recon", [override])


def test_config_files_by_path_and_errors(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('[program]\nrenderer = "brush"\ncanvas_size = 16\ngrid_size = 4\nsteps = 2\n')
    config = experiments.load_config(path)
    assert config["name"] == "tiny" and experiments.build_program(config).image_size == 16
    path.write_text("[program\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        experiments.load_config(path)
    path.write_text("[optimiser]\nlr = 1\n")
    with pytest.raises(ValueError, match="unknown tables"):
        experiments.load_config(path)
    with pytest.raises(ValueError, match="unknown configuration"):
        experiments.load_config("mnist-reconstruction")
    with pytest.raises(ValueError, match="do not fit Brush"):
        experiments.build_program(experiments.load_config("mnist-recon", ["program.brush_width=3"]))
    with pytest.raises(ValueError, match="renderer must be"):
        experiments.build_program(experiments.load_config("mnist-recon", ["program.renderer=opengl"]))


def test_datasets_of_a_configuration(data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    train, test = experiments.load_datasets(experiments.load_config("mnist-recon"), image_size=32)
    assert (len(train), len(test)) == (60000, 10000)
    images = experiments.target_images(test, 4)
    assert images.shape == (4, 1, 32, 32) and torch.equal(images[0], test[0][0])
    with pytest.raises(ValueError, match="cannot take"):
        experiments.target_images(test, 5, start=9998)


TINY = ["program.canvas_size=16", "program.grid_size=4", "program.steps=2", "train.eval_every=3",
        "train.eval_size=4", "train.checkpoint_every=2", "train.log_every=1", "a2c.batch_size=4",
        "policy.channels=8", "policy.lstm_size=16", "critic.channels=8", "policy.res_blocks=1",
        "policy.location_channels=4"]


def fake_celeba(folder, count=24):
    import numpy as np
    from PIL import Image

    (folder / "img_align_celeba").mkdir(parents=True)
    generator = np.random.default_rng(0)
    for index in range(count):
        face = generator.integers(0, 255, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(face).save(folder / "img_align_celeba" / f"{index:06d}.jpg")


def test_train_writes_a_run_folder_and_resumes_it(tmp_path):
    from spiral_ppl import cli

    fake_celeba(tmp_path / "celeba")
    overrides = TINY + [f"data.root={str(tmp_path / 'celeba')!r}", "data.test_fraction=0.25",
                        "train.phases.0.updates=3"]
    arguments = ["train", "celeba-recon", "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert cli.main(arguments + [item for pair in (("--set", o) for o in overrides) for item in pair]) == 0
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.pt", "agent.pt", "eval.csv", "train.csv", "curve.png", "samples_3.png"):
        assert (run / name).exists(), name
    resolved = __import__("json").loads((run / "config.json").read_text())
    assert resolved["program"]["color"] is True and resolved["train"]["phases"][0]["updates"] == 3
    # Asking for more steps resumes from the checkpoint instead of starting again.
    overrides[-1] = "train.phases.0.updates=5"
    assert cli.main(arguments + [item for pair in (("--set", o) for o in overrides) for item in pair]) == 0
    updates = [int(line.split(",")[0]) for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert updates == [1, 2, 3, 4, 5]
    agent = sp.inference.Spiral.load(run / "checkpoint.pt")
    assert agent.learner.updates == 5 and agent.prog.channels == 3


def test_train_refuses_unknown_settings(tmp_path):
    fake_celeba(tmp_path / "celeba")
    config = experiments.load_config("celeba-recon", TINY + [f"data.root={str(tmp_path / 'celeba')!r}",
                                                              "train.epochs=3"])
    with pytest.raises(ValueError, match=r"unknown \[train\] settings \['epochs'\]"):
        experiments.train_experiment(config, tmp_path / "run")
    config = experiments.load_config("celeba-recon", TINY + [f"data.root={str(tmp_path / 'celeba')!r}",
                                                              "a2c.learning_rate=3"])
    with pytest.raises(ValueError, match="learning_rate"):
        experiments.train_experiment(config, tmp_path / "run")


def test_scenes_run_imitates_the_dataset_programs_then_runs_a2c_and_resumes(tmp_path):
    overrides = [f"data.root={str(tmp_path / 'scenes')!r}", "data.order=raster", "data.train_size=16",
                 "data.test_size=4", "program.image_size=32", "program.steps=3", "train.eval_every=5",
                 "train.eval_size=4", "train.checkpoint_every=2", "train.log_every=1",
                 "a2c.batch_size=4", "policy.channels=8", "policy.lstm_size=16", "policy.res_blocks=1",
                 "policy.location_channels=4"]
    config = experiments.load_config("scenes-recon-cpu", overrides)
    config["train"]["phases"] = [{"kind": "imitation", "updates": 3}, {"kind": "a2c", "updates": 2}]
    train = experiments.load_dataset(config, 32, "train")
    assert train.order == "raster" and len(train) == 16
    run = tmp_path / "run"
    experiments.train_experiment(config, run, device="cpu", progress=False)

    def updates(table):
        return [int(line.split(",")[0]) for line in (run / f"{table}.csv").read_text().splitlines()[1:]]

    assert updates("imitation") == [1, 2, 3] and updates("train") == [4, 5]
    header = (run / "imitation.csv").read_text().splitlines()[0]
    assert "imitation_loss" in header
    # More steps resume the A2C phase; the imitation already done is not repeated.
    longer = experiments.load_config("scenes-recon-cpu", overrides)
    longer["train"]["phases"] = [{"kind": "imitation", "updates": 3}, {"kind": "a2c", "updates": 3}]
    experiments.train_experiment(longer, run, device="cpu", progress=False)
    assert updates("imitation") == [1, 2, 3] and updates("train") == [4, 5, 6]
    assert sp.inference.Spiral.load(run / "checkpoint.pt").learner.updates == 6


def test_imitation_needs_a_dataset_with_programs(tmp_path):
    fake_celeba(tmp_path / "celeba")
    config = experiments.load_config("celeba-recon", TINY + [f"data.root={str(tmp_path / 'celeba')!r}",
                                                              "train.phases.0.kind=imitation"])
    with pytest.raises(ValueError, match="only MUJOCO SCENES"):
        experiments.train_experiment(config, tmp_path / "run", device="cpu")
    with pytest.raises(ValueError, match="A2C only"):
        experiments.pbt_experiment(config, tmp_path / "pbt", population=2, interval=1)


def test_a_run_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "load_datasets", lambda config, image_size: ([], []))
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(ValueError, match="cannot write the run folder .*a-file/run"):
        experiments._prepare_run(experiments.load_config("mnist-recon"), tmp_path / "a-file" / "run")


@pytest.mark.parametrize(
    "text, message",
    [("program = 3\n", "program must be a table"), ("name = 3\n", "name must be a string"),
     ("[train]\nphases = 3\n", "train.phases must be a list of tables"),
     ("[program]\ncanvas_size = 100000\n", r"\[program\] canvas_size must be at most 4096"),
     ("[program]\nsteps = 0\n", r"\[program\] steps must be a positive int"),
     ("[agent]\nblind = \"yes\"\n", r"\[agent\] blind must be true or false")],
)
def test_configuration_values_are_named_by_table_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        config = experiments.load_config(path)
        experiments.spiral_config(config)
        experiments.build_program(config)
        experiments.build_agent(config, experiments.build_program(config))


def test_a_configuration_that_is_not_text_is_named(tmp_path):
    (tmp_path / "image.toml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match="image.toml is not a configuration: it is not text"):
        experiments.load_config(tmp_path / "image.toml")


def test_pbt_refuses_a_population_before_making_its_run_folder(tmp_path):
    config = experiments.load_config("mnist-recon", ["train.phases.0.updates=2"])
    with pytest.raises(ValueError, match="at least 2"):
        experiments.pbt_experiment(config, tmp_path / "pbt", population=1, interval=1)
    assert not (tmp_path / "pbt").exists()


@pytest.mark.parametrize("name", ["critic-vs-l2-mnist", "critic-vs-l2-omniglot", "critic-vs-l2-scenes"])
def test_the_critic_comparison_recipes_build(name):
    # The comparison's arms differ from these files by --set alone (benchmarks/critic_vs_l2.py).
    config = experiments.load_config(name)
    prog = experiments.build_program(config)
    recipe = experiments.spiral_config(config)
    assert recipe.reward.kind == "critic" and recipe.reward.normalise and recipe.reward.temporal
    assert [phase.kind for phase in recipe.train.phases] == ["a2c"]
    l2 = experiments.spiral_config(experiments.load_config(name, ["reward.kind=l2"]))
    assert l2.replace({"reward.kind": "critic"}) == recipe
    assert prog.steps >= 8 and config["agent"]["conditional"]


def test_the_generation_recipe_distils_the_reconstruction_agent_on_its_program_then_trains_with_the_critic():
    from spiral_ppl.inference.spiral.checkpoints import describe_program

    config = experiments.load_config("mnist-gen-cpu")
    recipe = experiments.spiral_config(config)
    assert [(phase.kind, phase.teacher) for phase in recipe.train.phases] == [
        ("distillation", "mnist-recon-cpu"), ("a2c", None), ("a2c", None)]
    assert recipe.reward.kind == "critic" and recipe.reward.new_stroke_penalty > 0 < recipe.reward.empty_canvas_penalty
    assert not config["agent"]["conditional"]
    teacher = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
    assert describe_program(experiments.build_program(config)) == describe_program(teacher.prog)


def test_a_stride_keeps_every_nth_test_item(data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    config = experiments.load_config("mnist-recon", ["data.test_stride=1000"])
    test = experiments.load_dataset(config, 16, "test")
    everything = experiments.load_dataset(experiments.load_config("mnist-recon"), 16, "test")
    assert len(test) == 10 and torch.equal(test[3][0], everything[3000][0])
    with pytest.raises(ValueError, match=r"\[data\] test_stride must be a positive int"):
        experiments.load_dataset(experiments.load_config("mnist-recon", ["data.test_stride=0"]), 16, "test")


def test_a_new_runs_seed_sets_its_weights_and_cpu_time_is_logged(tmp_path):
    from spiral_ppl import cli

    fake_celeba(tmp_path / "celeba")
    overrides = TINY + [f"data.root={str(tmp_path / 'celeba')!r}", "data.test_fraction=0.25",
                        "train.phases.0.updates=2", "train.eval_every=1"]
    settings = [item for pair in (("--set", o) for o in overrides) for item in pair]
    weights = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        arguments = ["train", "celeba-recon", "--out", str(tmp_path / run), "--device", "cpu", "--seed", str(seed)]
        assert cli.main(arguments + settings) == 0
        weights[run] = sp.inference.Spiral.load(tmp_path / run / "agent.pt").policy.state_dict()
    assert all(torch.equal(weights["a"][key], weights["b"][key]) for key in weights["a"])
    assert not all(torch.equal(weights["a"][key], weights["c"][key]) for key in weights["a"])
    rows = (tmp_path / "a" / "eval.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert header[:3] == ["update", "seconds", "cpu_seconds"]
    assert 0 < float(last[2]) and last[0] == "2"


def test_a_new_run_starts_from_another_agents_weights_and_decoding(tmp_path):
    from spiral_ppl import cli

    fake_celeba(tmp_path / "celeba")
    overrides = TINY + [f"data.root={str(tmp_path / 'celeba')!r}", "data.test_fraction=0.25",
                        "train.phases.0.updates=2"]
    settings = [item for pair in (("--set", o) for o in overrides) for item in pair]
    assert cli.main(["train", "celeba-recon", "--out", str(tmp_path / "source"), "--device", "cpu"] + settings) == 0
    source = sp.inference.Spiral.load(tmp_path / "source" / "agent.pt")
    source.decoding = sp.inference.spiral.Decoding(temperature=0.5, greedy_first=True)
    source.save(tmp_path / "source.pt", training_state=False)

    config = experiments.load_config("celeba-recon", overrides + [f"agent.start_from={str(tmp_path / 'source.pt')!r}"])
    agent = experiments.build_agent(config, experiments.build_program(config))
    weights = source.policy.state_dict()
    assert all(torch.equal(value, weights[key]) for key, value in agent.policy.state_dict().items())
    assert all(torch.equal(value, source.critic.state_dict()[key]) for key, value in agent.critic.state_dict().items())
    assert agent.decoding == source.decoding and agent.learner.updates == 0
    # Without start_from the same seed gives other weights: the copy is what made them equal.
    torch.manual_seed(0)
    fresh = experiments.build_agent(experiments.load_config("celeba-recon", overrides),
                                    experiments.build_program(config))
    assert not all(torch.equal(value, weights[key]) for key, value in fresh.policy.state_dict().items())

    start = f"agent.start_from={str(tmp_path / 'source.pt')!r}"
    for changes, message in [
        (["program.grid_size=8"], r"start_from: that agent acts on .* differs .* in \['action_space'\]"),
        (["policy.channels=4"], r"start_from: that agent's policy network has other shapes than \[policy\]"),
        (["agent.conditional=false"], r"start_from: that agent has conditional=True"),
    ]:
        bad = experiments.load_config("celeba-recon", overrides + changes + [start])
        with pytest.raises(ValueError, match=message):
            experiments.build_agent(bad, experiments.build_program(bad))
    other_critic = experiments.load_config("celeba-recon", overrides + ["critic.channels=4", start])
    with pytest.warns(UserWarning, match="critic starts afresh"):
        experiments.build_agent(other_critic, experiments.build_program(other_critic))
    for value, message in [("'no-such-agent'",
                            r"start_from 'no-such-agent' is neither a pretrained agent \['mnist-recon-cpu'"),
                           ("3", r"\[agent\] start_from must be")]:
        bad = experiments.load_config("celeba-recon", overrides + [f"agent.start_from={value}"])
        with pytest.raises(ValueError, match=message):
            experiments.build_agent(bad, experiments.build_program(bad))


def test_omniglot_training_can_leave_out_the_characters_of_a_split(data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    config = experiments.load_config("omniglot-recon-cpu")
    train = experiments.load_dataset(config, 16, "train")
    whole = sp.data.Omniglot(split="background", image_size=16)
    held_out = set(sp.data.Omniglot(split="background_small1", source="png", image_size=16).character_ids.tolist())
    kept = {int(whole.character_ids[index]) for index in train.indices}
    # 136 characters of 5 alphabets, 20 drawings each, leave the background set's 964 characters.
    assert len(held_out) == 136 and not kept & held_out and len(kept) == 964 - 136
    assert sp.data.omniglot.character_ids_in("background_small1") == held_out
    assert len(train) == 20 * len(kept) and torch.equal(train[0][0], whole[train.indices[0]][0])
    for value in ("'evaluation-small'", "'background'"):
        bad = experiments.load_config("omniglot-recon-cpu", [f"data.train_exclude={value}"])
        with pytest.raises(ValueError, match=r"\[data\] train_exclude must be one of"):
            experiments.load_dataset(bad, 16, "train")
