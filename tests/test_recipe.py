"""SPIRAL's configuration and recipes: nested settings, phases run in order, resumed mid-phase."""

import csv
import json
import tomllib

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import Decoding, SpiralConfig, recipe

pytestmark = pytest.mark.usefixtures("single_thread")  # small networks: one thread is faster


def brush_program(steps):
    brush = sp.renderers.Brush(canvas_size=16, grid_size=4, sizes=(8, 12), pressure_levels=2, compile=False)
    return sp.programs.PaintProgram(brush, steps=steps)


def rows(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


TOML = """
[policy]
channels = 8
lstm_size = 16
location_decoder = "spatial"

[a2c]
batch_size = 4
lr = 1e-3

[reward]
kind = "l2"
scale = 10.0

[train]
eval_every = 2
eval_size = 8
checkpoint_every = 2
log_every = 1

[[train.phases]]
kind = "a2c"
updates = 3
program_steps = 2

[[train.phases]]
kind = "self_imitation"
updates = 4
program_steps = 2
passes = 3
targets = 8
round_updates = 2
settings = { "a2c.lr" = 3e-4 }

[[train.phases]]
kind = "self_imitation"
updates = 2
passes = 2
targets = 4
round_updates = 1
"""


def test_the_toml_tables_are_the_configuration_one_to_one():
    config = SpiralConfig.from_dict(tomllib.loads(TOML))
    assert (config.policy.location_decoder, config.a2c.batch_size, config.reward.kind) == ("spatial", 4, "l2")
    assert [phase.kind for phase in config.train.phases] == ["a2c", "self_imitation", "self_imitation"]
    assert config.train.phases[1].settings == {"a2c.lr": 3e-4}
    assert SpiralConfig.from_dict(config.to_dict()) == config
    assert SpiralConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace({"a2c.entropy_cost": 0.0}).a2c.entropy_cost == 0.0 and config.a2c.entropy_cost == 0.01


@pytest.mark.parametrize("values, message", [
    ({"optimiser": {}}, r"unknown SpiralConfig sections \['optimiser'\]"),
    ({"a2c": {"policy_lr": 1e-3}}, r"unknown \[a2c\] settings \['policy_lr'\]"),
    ({"a2c": {"lr": 0}}, "a2c.lr must be positive"),
    ({"a2c": {"betas": [0.9, 1.5]}}, "a2c.betas must be two numbers"),
    ({"a2c": {"vtrace_c_clip": 2.0}}, "must not exceed"),
    ({"reward": {"kind": "l1"}}, "reward.kind must be one of"),
    ({"train": {"phases": [{"kind": "sleep", "updates": 3}]}}, "phase kind must be one of"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 0}]}}, "phase updates must be a positive int"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "epochs": 2}]}}, r"unknown phase settings \['epochs'\]"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"policy.lstm_size": 8}}]}},
     "would change the networks' shapes"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"a2c.learning_rate": 1}}]}},
     "unknown setting 'a2c.learning_rate'"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"train.phases": []}}]}},
     "cannot change train.phases"),
])
def test_bad_settings_are_named(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SpiralConfig.from_dict(values)


def test_small_takes_a_dict_per_section():
    assert SpiralConfig.small(a2c={"lr": 3e-4}).a2c.lr == 3e-4
    with pytest.raises(TypeError, match=r"small\(a2c=...\) takes a dict of a2c settings"):
        SpiralConfig.small(a2c=3e-4)


def test_a_recipe_runs_its_phases_retargets_and_resumes_in_the_middle_of_a_phase(tmp_path):
    torch.manual_seed(0)
    short = brush_program(2)
    actions = {c.name: torch.randint(0, c.size, (40, 2)) for c in short.action_space}
    images = short.render(actions)
    config = SpiralConfig.from_dict(tomllib.loads(TOML))
    agent = sp.inference.Spiral(brush_program(3), config=config, device="cpu")
    # A time limit that runs out in the middle of the first self-imitation phase.
    first = recipe.run(agent, images, tmp_path, program=brush_program, progress=False,
                       stop=lambda current: current.learner.updates >= 5)
    assert first.prog.steps == 2 and first.learner.updates in (5, 6)  # stopped mid-phase, after a chunk
    stopped_at = first.learner.updates
    # The checkpoint holds the stopped run; a new process resumes it from the file.
    resumed = sp.inference.Spiral.load(tmp_path / "checkpoint.pt", brush_program(2), device="cpu")
    assert resumed.learner.updates == stopped_at and resumed.config.a2c.lr == 3e-4  # the phase's setting
    final = recipe.run(resumed, images, tmp_path, program=brush_program, steps=3, progress=False)
    assert final.prog.steps == 3 and final.learner.updates == 9  # the last phase re-targeted it
    assert final.config.a2c.lr == 3e-4

    train = [int(row["update"]) for row in rows(tmp_path / "train.csv")]
    imitation = [int(row["update"]) for row in rows(tmp_path / "imitation.csv")]
    assert train == [1, 2, 3] and imitation == list(range(4, 10))  # every update once, in order
    evaluations = rows(tmp_path / "eval.csv")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["eval_l2"] == pytest.approx(min(float(row["eval_l2"]) for row in evaluations), rel=1e-5)
    assert sp.inference.Spiral.load(tmp_path / "best.pt").prog.steps in (2, 3)


def test_a_recipe_refuses_imitation_without_programs_and_retargeting_without_a_program_builder(tmp_path):
    prog = brush_program(2)
    images = prog.render({c.name: torch.randint(0, c.size, (20, 2)) for c in prog.action_space})
    imitation = SpiralConfig.small(train={"phases": [{"kind": "imitation", "updates": 2}], "eval_size": 4},
                                   reward={"kind": "l2"})
    with pytest.raises(ValueError, match="only MUJOCO SCENES"):
        recipe.run(sp.inference.Spiral(prog, config=imitation, device="cpu"), images, tmp_path)
    longer = SpiralConfig.small(train={"phases": [{"kind": "a2c", "updates": 1, "program_steps": 3}], "eval_size": 4},
                                reward={"kind": "l2"})
    with pytest.raises(ValueError, match="runs on 3-step programs and the agent's has 2"):
        recipe.run(sp.inference.Spiral(prog, config=longer, device="cpu"), images, tmp_path)
    with pytest.raises(ValueError, match="has no recipe"):
        recipe.run(sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}), device="cpu"),
                   images, tmp_path)


def test_decoding_is_one_value_saved_with_the_agent(tmp_path):
    torch.manual_seed(0)
    prog = brush_program(3)
    agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}), device="cpu")
    cold = agent.with_decoding(greedy_first=True, smc_tempering=0.01)
    assert cold.policy is agent.policy and agent.decoding == Decoding()  # a view, and the agent is unchanged
    assert (cold.smc().tempering, agent.smc().tempering) == (0.01, None)
    cold.save(tmp_path / "cold.pt", training_state=False)
    assert sp.inference.Spiral.load(tmp_path / "cold.pt", prog).decoding == cold.decoding
    with pytest.raises(ValueError, match="3 steps, one each"):
        agent.decoding = Decoding(smc_tempering=(0.5, 1.0))
    with pytest.raises(TypeError, match="decoding must be a Decoding"):
        agent.decoding = {"temperature": 0.5}


def test_a_shipped_agent_saved_in_the_current_format_acts_the_same(tmp_path):
    agent = sp.inference.Spiral.pretrained("scenes-recon-cpu", device="cpu")
    scenes = sp.data.MujocoScenes(size=4, seed=3, image_size=64, steps=10)
    targets = torch.stack([scenes[index][0] for index in range(4)])
    before = agent.infer(agent.prog, targets, sp.Budget(renders=10), seed=0)
    agent.save(tmp_path / "agent.pt", training_state=False)
    assert torch.load(tmp_path / "agent.pt", weights_only=True)["format"] == "spiral_ppl.Spiral/2"
    again = sp.inference.Spiral.load(tmp_path / "agent.pt", device="cpu")
    after = again.infer(again.prog, targets, sp.Budget(renders=10), seed=0)
    assert again.config == agent.config and again.decoding == agent.decoding
    assert all(torch.equal(before.actions[name], after.actions[name]) for name in before.actions)
