"""MujocoScene (real MuJoCo through EGL), SceneProgram and the MUJOCO SCENES dataset."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from pyro.poutine.util import site_is_subsample

import spiral_ppl as sp
from spiral_ppl.data.mujoco_scenes import raster_order, scene_expert
from spiral_ppl.renderers.mujoco_scene import ADD, DEFAULT_SIZES, GL_PACKAGES, MODIFY, OBJECT_FIELDS, SHAPES, SKIP

GRID = 16


@pytest.fixture(scope="module")
def scene():
    with sp.renderers.MujocoScene(image_size=64, grid_size=GRID) as scene:
        yield scene


def obj(shape=1, x=8, y=8, size=1, color=(3, 0, 0), command=ADD):
    """One action as a dict of ints."""
    red, green, blue = color
    return dict(command=command, shape=shape, location=y * GRID + x, object_size=size, red=red, green=green, blue=blue)


def program(*steps):
    """A batch of one program from a list of :func:`obj` actions."""
    return {name: torch.tensor([[step[name] for step in steps]]) for name in steps[0]}


def batch(*programs):
    return {name: torch.cat([p[name] for p in programs]) for name in programs[0]}


def skip():
    return obj(command=SKIP)


def object_mask(image, empty):
    """Pixels an object changed: ``(H, W)`` bool."""
    return (image - empty).abs().sum(0) > 0.05


# -- the renderer --------------------------------------------------------------------------


def test_action_space(scene):
    assert [(c.name, c.size, c.kind) for c in scene.action_space] == [
        ("command", 3, "scalar"),
        ("shape", 4, "scalar"),
        ("location", 256, "location"),
        ("object_size", 3, "scalar"),
        ("red", 4, "scalar"),
        ("green", 4, "scalar"),
        ("blue", 4, "scalar"),
    ]
    assert scene.channels == 3 and scene.image_size == 64


def test_empty_scene_shows_the_grey_platform_on_black(scene):
    empty = scene.render(program(skip()))[0]
    assert empty.shape == (3, 64, 64)
    centre = empty[:, 28:36, 28:36]
    # The platform is grey (equal channels, lit to mid intensities); the corners above it are background.
    assert torch.allclose(centre[0], centre[1]) and torch.allclose(centre[1], centre[2])
    assert 0.3 < float(centre.mean()) < 0.8
    assert float(empty[:, :3, :3].max()) == 0.0


def test_centroid_moves_monotonically_with_grid_cell(scene):
    empty = scene.render(program(skip()))[0]
    cells = [0, 3, 6, 9, 12, 15]
    along_x = scene.render(batch(*[program(obj(x=i, y=7, shape=0, size=0)) for i in cells]))
    along_y = scene.render(batch(*[program(obj(x=7, y=j, shape=0, size=0)) for j in cells]))
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")

    def centroid(image):
        mask = object_mask(image, empty)
        assert mask.sum() >= 4, "the object must be visible"
        return float(rows[mask].mean()), float(columns[mask].mean())

    x_centroids = [centroid(image) for image in along_x]
    y_centroids = [centroid(image) for image in along_y]
    # Grid x runs left to right on the image, grid y top (far) to bottom (near).
    assert all(a[1] < b[1] for a, b in itertools.pairwise(x_centroids))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(y_centroids))
    # Moving along x keeps the row nearly fixed; the objects span most of the image.
    assert max(r for r, _ in x_centroids) - min(r for r, _ in x_centroids) < 3
    assert x_centroids[-1][1] - x_centroids[0][1] > 35 and y_centroids[-1][0] - y_centroids[0][0] > 30


def test_colour_bins_give_expected_pixel_colours(scene):
    empty = scene.render(program(skip()))[0]
    colors = [(3, 0, 0), (0, 3, 0), (0, 0, 3), (1, 2, 3), (3, 3, 3), (2, 2, 2), (1, 1, 1)]
    images = scene.render(batch(*[program(obj(shape=1, size=2, color=c)) for c in colors]))
    mask = object_mask(images[4], empty)  # the white cube covers the same pixels as every cube
    pixels = {c: images[i][:, mask] for i, c in enumerate(colors)}  # (3, P)
    shading = pixels[(3, 3, 3)][0]
    # Lights are white with no specular term: each channel is its bin intensity k/3 times a shading
    # factor that is the same for all channels; the lit top face of a white cube is nearly white.
    assert torch.allclose(pixels[(3, 3, 3)][1], shading) and torch.allclose(pixels[(3, 3, 3)][2], shading)
    assert float(shading.max()) > 0.85
    tolerance = 1.5 / 255
    for color, values in pixels.items():
        for channel, k in enumerate(color):
            assert torch.allclose(values[channel], shading * k / 3, atol=tolerance), (color, channel)


def test_larger_sizes_cover_more_pixels(scene):
    empty = scene.render(program(skip()))[0]
    for shape in range(len(SHAPES)):
        images = scene.render(batch(*[program(obj(shape=shape, size=s)) for s in range(len(DEFAULT_SIZES))]))
        covered = [int(object_mask(image, empty).sum()) for image in images]
        assert covered[0] < covered[1] < covered[2], (SHAPES[shape], covered)
        assert covered[0] >= 6


def test_shapes_look_different(scene):
    images = scene.render(batch(*[program(obj(shape=s, size=2)) for s in range(len(SHAPES))]))
    for a, b in itertools.combinations(range(len(SHAPES)), 2):
        assert float((images[a] - images[b]).abs().amax()) > 0.2, (SHAPES[a], SHAPES[b])


def test_skip_leaves_the_image_unchanged(scene):
    first = obj(shape=2, x=3, y=4, size=1, color=(0, 2, 3))
    random_skip = obj(command=SKIP, shape=0, x=12, y=12, size=2, color=(3, 3, 0))
    images = scene.render(batch(program(first, skip()), program(first, random_skip), program(random_skip, first)))
    alone = scene.render(program(first))[0]
    for image in images:
        assert torch.equal(image, alone)
    all_skips = scene.render(program(random_skip, random_skip))[0]
    assert torch.equal(all_skips, scene.render(program(skip()))[0])


def test_modify_replaces_the_last_object(scene):
    a = obj(shape=0, x=2, y=2, color=(3, 0, 0))
    b = obj(shape=1, x=12, y=3, color=(0, 3, 0))
    c = obj(shape=3, x=6, y=13, size=2, color=(0, 0, 3))
    modified = scene.render(program(a, b, {**c, "command": MODIFY}))[0]
    expected = scene.render(program(a, c))[0]
    assert torch.equal(modified, expected)
    assert not torch.equal(modified, scene.render(program(a, b, c))[0])


def test_modify_without_objects_is_a_no_op(scene):
    a = obj(shape=0, x=2, y=2)
    c = {**obj(shape=3, x=6, y=13), "command": MODIFY}
    assert torch.equal(scene.render(program(c, a))[0], scene.render(program(a))[0])
    assert torch.equal(scene.render(program(c))[0], scene.render(program(skip()))[0])


def test_add_when_full_is_a_no_op():
    a, b, c = obj(x=2, y=2), obj(x=12, y=2), obj(x=7, y=12, shape=0)
    with sp.renderers.MujocoScene(max_objects=2) as small:
        full = small.render(program(a, b, c))
        assert torch.equal(full, small.render(program(a, b)))
        # A modify after the ignored add still edits the last object that was placed.
        assert torch.equal(small.render(program(a, b, c, {**c, "command": MODIFY})), small.render(program(a, c)))


def test_batches_and_steps_agree_with_single_renders(scene):
    generator = torch.Generator().manual_seed(0)
    actions = {c.name: torch.randint(c.size, (5, 6), generator=generator) for c in scene.action_space}
    images = scene.render(actions)
    state = scene.initial_state(5)
    for t in range(6):
        state = scene.step(state, {name: value[:, t] for name, value in actions.items()})
    assert torch.equal(scene.canvas(state), images)
    for index in range(5):
        single = scene.render({name: value[index : index + 1] for name, value in actions.items()})
        assert torch.equal(single[0], images[index])
    assert state.count.tolist() == (actions["command"] == ADD).sum(1).tolist()


def test_worker_processes_render_the_same_images(scene):
    generator = torch.Generator().manual_seed(1)
    actions = {c.name: torch.randint(c.size, (6, 4), generator=generator) for c in scene.action_space}
    with sp.renderers.MujocoScene(workers=2) as spread:
        assert torch.equal(spread.render(actions), scene.render(actions))
        assert spread._pool is not None, "a batch of 6 on 2 workers must use the workers"


def test_bad_actions_get_clear_errors(scene):
    good = program(obj())
    with pytest.raises(ValueError, match=r"'location' must lie in \[0, 255\]"):
        scene.render({**good, "location": torch.tensor([[256]])})
    with pytest.raises(ValueError, match=r"'command' must lie in \[0, 2\]"):
        scene.render({**good, "command": torch.tensor([[-1]])})
    with pytest.raises(TypeError, match="integer dtype"):
        scene.render({**good, "red": torch.tensor([[1.0]])})
    with pytest.raises(ValueError, match="unknown: \\['colour'\\]"):
        scene.render({**good, "colour": torch.tensor([[1]])})
    with pytest.raises(ValueError, match="missing: \\['blue'\\]"):
        scene.render({name: value for name, value in good.items() if name != "blue"})
    with pytest.raises(ValueError, match="2 dimensions"):
        scene.render({name: value[0] for name, value in good.items()})
    with pytest.raises(ValueError, match="state holds 2 scenes"):
        scene.step(scene.initial_state(2), {name: value[:, 0] for name, value in good.items()})
    with pytest.raises(TypeError, match="SceneState"):
        scene.canvas(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(image_size=4), "image_size"),
        (dict(grid_size=0), "grid_size"),
        (dict(max_objects=0), "max_objects"),
        (dict(sizes=(0.1, float("nan"))), "sizes"),
        (dict(color_bins=1), "color_bins"),
        (dict(workers=-1), "workers"),
    ],
)
def test_bad_settings_get_clear_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        sp.renderers.MujocoScene(**arguments)


_RENDER_ONE = textwrap.dedent(
    """
    import sys, torch, spiral_ppl as sp
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with sp.renderers.MujocoScene(workers=workers) as scene:
        try:
            scene.render({c.name: torch.zeros(4, 1, dtype=torch.long) for c in scene.action_space})
        except RuntimeError as error:
            print("RuntimeError:", error)
        else:
            print("rendered")
    """
)


@pytest.mark.parametrize(
    "environment, workers",
    [
        ({"MUJOCO_GL": "no-such-backend"}, 0),
        # libglvnd finds no EGL vendor library, which is what a machine without libegl-mesa0 sees.
        ({"MUJOCO_GL": "egl", "__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/egl_vendor.json"}, 0),
        ({"MUJOCO_GL": "egl", "__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/egl_vendor.json"}, 2),
    ],
    ids=["bogus-backend", "no-egl-vendor", "no-egl-vendor-in-workers"],
)
def test_missing_gl_backend_gets_a_clear_error(environment, workers):
    env = {**os.environ, **environment, "SPIRAL_PPL_COMPILE": "0"}
    completed = subprocess.run(
        [sys.executable, "-c", _RENDER_ONE, str(workers)], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr  # importing spiral_ppl must not need GL
    output = completed.stdout
    assert output.startswith("RuntimeError: MuJoCo could not open an OpenGL context"), output + completed.stderr
    assert f"MUJOCO_GL={environment['MUJOCO_GL']!r}" in output
    assert " ".join(GL_PACKAGES) in output


def test_egl_is_chosen_when_the_user_has_not():
    env = {key: value for key, value in os.environ.items() if key != "MUJOCO_GL"}
    code = _RENDER_ONE + "\nimport os; print(os.environ['MUJOCO_GL'])"
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert completed.stdout.split() == ["rendered", "egl"], completed.stdout + completed.stderr


# -- the program -----------------------------------------------------------------------------


def test_scene_program_trace_has_the_sites(scene):
    prog = sp.programs.SceneProgram(scene, steps=3)
    trace = sp.programs.trace(prog, image=torch.zeros(2, 3, 64, 64))
    latent = {
        name
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }
    names = ["command", "shape", "location", "object_size", "red", "green", "blue"]
    assert latent == {f"step_{t}/{name}" for t in range(3) for name in names}
    assert trace.nodes["image"]["is_observed"] and trace.nodes["step_2/location"]["value"].shape == (2,)
    assert trace.nodes["_RETURN"]["value"].shape == (2, 3, 64, 64)
    # The default prior favours skip; the others are uniform.
    assert torch.allclose(prog.prior(0, "command").probs, torch.tensor(sp.programs.DEFAULT_COMMAND_PRIOR))
    assert torch.allclose(prog.prior(0, "location").probs, torch.full((256,), 1 / 256))
    uniform = sp.programs.SceneProgram(scene, steps=3, priors={"command": [1, 1, 1]})
    assert torch.allclose(uniform.prior(1, "command").probs, torch.full((3,), 1 / 3))
    with pytest.raises(TypeError, match="MujocoScene"):
        sp.programs.SceneProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False))


def test_importance_runs_on_a_scene_program(scene):
    prog = sp.programs.SceneProgram(scene, steps=2)
    truth = batch(program(obj(shape=1, size=2, x=5, y=5), skip()), program(obj(shape=0, size=2, x=10, y=9), skip()))
    targets = prog.render(truth)
    result = sp.inference.Importance(progress=False).infer(prog, targets, sp.Budget(renders=12), seed=0)
    assert result.images.shape == (2, 3, 64, 64)
    assert {name: tuple(value.shape) for name, value in result.actions.items()} == {
        c.name: (2, 2) for c in scene.action_space
    }
    assert result.renders.tolist() == [12, 12] and result.log_weights.shape == (12, 2)
    # The reported reconstruction is what its program renders, and l2 is its real error.
    assert torch.equal(prog.render(result.actions), result.images)
    assert torch.allclose(result.l2, sp.programs.mean_squared_error(result.images, targets))
    assert result.curve.l2.shape == (12, 2)


# -- the dataset -----------------------------------------------------------------------------


def _dataset(root, **kwargs):
    return sp.data.MujocoScenes(root=root, **{"size": 12, "progress": False, **kwargs})


def test_dataset_items_are_scenes_with_their_programs(tmp_path, scene):
    scenes = _dataset(tmp_path)
    assert len(scenes) == 12
    image, actions = scenes[3]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert set(actions) == set(scene.component_names) and all(v.dtype == torch.long for v in actions.values())
    all_actions = scenes.actions
    assert all_actions["command"].shape == (12, 20)
    # Each program is 1..5 adds followed by skips, and renders to its image.
    adds = (all_actions["command"] == ADD).sum(1)
    assert 1 <= int(adds.min()) and int(adds.max()) <= 5
    for index in range(12):
        assert (all_actions["command"][index, adds[index] :] == SKIP).all()
    rendered = scene.render(all_actions)
    assert torch.equal(rendered, torch.stack([scenes[i][0] for i in range(12)]))


def test_raster_order_sorts_the_adds_and_draws_the_same_images(tmp_path, scene):
    generated = _dataset(tmp_path, size=20)
    raster = _dataset(tmp_path, size=20, order="raster")
    assert raster.images_path == generated.images_path  # one cache for both orders
    actions, original = raster.actions, generated.actions
    adds = actions["command"] == ADD
    assert torch.equal(adds.sum(1), (original["command"] == ADD).sum(1))
    for index in range(20):
        count = int(adds[index].sum())
        locations = actions["location"][index, :count]
        assert torch.equal(locations, locations.sort().values), index
        # The same objects, attribute for attribute, only reordered.
        objects = torch.stack([actions[name][index, :count] for name in OBJECT_FIELDS], 1)
        before = torch.stack([original[name][index, :count] for name in OBJECT_FIELDS], 1)
        assert sorted(map(tuple, objects.tolist())) == sorted(map(tuple, before.tolist()))
        assert (actions["command"][index, count:] == SKIP).all()
    assert not torch.equal(actions["location"], original["location"])  # some scenes did change order
    assert torch.equal(scene.render(actions), torch.stack([generated[i][0] for i in range(20)]))
    assert torch.equal(raster[7][1]["location"], actions["location"][7])


def test_raster_order_refuses_programs_with_modify_commands():
    programs = {"command": torch.tensor([[ADD, MODIFY]]), "location": torch.tensor([[9, 3]])}
    with pytest.raises(ValueError, match="modify"):
        raster_order(programs)
    with pytest.raises(ValueError, match=r"missing \['location'\]"):
        raster_order({"command": torch.tensor([[ADD]])})



def _expert_after(scene, targets, *placed):
    """The expert's next action (a dict of ints) for ``targets`` after the edits ``placed``."""
    state = scene.initial_state(1)
    for edit in placed:
        state = scene.step(state, {name: torch.tensor([value]) for name, value in edit.items()})
    return {name: int(value[0]) for name, value in scene_expert(state, targets, GRID).items()}


def test_the_scene_expert_finishes_the_program_from_wherever_the_scene_stands(scene):
    first, second = obj(x=2, y=3, color=(3, 0, 0)), obj(shape=0, x=10, y=3, size=2, color=(0, 1, 2))
    targets = program(first, second, obj(command=SKIP, shape=0, x=0, y=0, size=0, color=(0, 0, 0)))
    assert _expert_after(scene, targets) == first
    assert _expert_after(scene, targets, first) == second
    # One cell off and the wrong colour still covers the first object: go on to the second.
    near = obj(x=3, y=4, color=(0, 0, 3))
    assert _expert_after(scene, targets, near) == second
    # Two cells off covers nothing; the most recent object can still be moved.
    astray = obj(x=2, y=5)
    assert _expert_after(scene, targets, astray) == dict(first, command=MODIFY)
    assert _expert_after(scene, targets, first, astray) == dict(second, command=MODIFY)
    # An earlier mistake cannot be undone: add what is missing.
    assert _expert_after(scene, targets, astray, second) == first
    # A duplicate claims nothing either.
    assert _expert_after(scene, targets, first, first) == dict(second, command=MODIFY)
    done = dict(command=SKIP, shape=0, location=0, object_size=0, red=0, green=0, blue=0)
    assert _expert_after(scene, targets, second, first) == done
    assert _expert_after(scene, targets, first, astray, second) == done
    # Without modify it only adds what is missing and stops when all is there.
    state = scene.step(scene.initial_state(1), {name: torch.tensor([value]) for name, value in astray.items()})
    assert {name: int(value) for name, value in scene_expert(state, targets, GRID, modify=False).items()} == first
    with pytest.raises(ValueError, match="modify"):
        scene_expert(scene.initial_state(1), program(first, dict(second, command=MODIFY)), GRID)


def test_on_the_demonstrations_the_scene_expert_repeats_the_programs(tmp_path, scene):
    from spiral_ppl.inference.spiral.imitation import expert_labels

    scenes = _dataset(tmp_path, size=20, order="raster")
    prog = sp.programs.SceneProgram(scene, steps=20)
    labels = expert_labels(prog, scenes.expert, scenes.actions, scenes.actions)
    for name, value in scenes.actions.items():
        assert torch.equal(labels[name], value), name


def test_dataset_objects_do_not_overlap(tmp_path, scene):
    scenes = _dataset(tmp_path, size=40)
    actions = scenes.actions
    centres = scene.location_to_world(actions["location"])
    extents = torch.tensor(DEFAULT_SIZES)[actions["object_size"]]
    for index in range(40):
        placed = actions["command"][index] == ADD
        c, e = centres[index][placed], extents[index][placed]
        distance = torch.cdist(c, c)
        apart = distance >= (e[:, None] + e[None, :]) - 1e-6
        assert apart[~torch.eye(len(c), dtype=torch.bool)].all(), index


def test_same_seed_same_dataset(tmp_path):
    first = _dataset(tmp_path / "a", seed=7)
    second = _dataset(tmp_path / "b", seed=7)
    other = _dataset(tmp_path / "c", seed=8)
    assert all(torch.equal(first.actions[n], second.actions[n]) for n in first.actions)
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(len(first)))
    assert not torch.equal(first.actions["location"], other.actions["location"])


def test_dataset_is_cached_by_parameters(tmp_path):
    first = _dataset(tmp_path, seed=3)
    stamp = first.images_path.stat().st_mtime_ns
    again = _dataset(tmp_path, seed=3)
    assert again.images_path == first.images_path and again.images_path.stat().st_mtime_ns == stamp
    assert torch.equal(again[5][0], first[5][0])
    smaller = _dataset(tmp_path, seed=3, image_size=32)
    assert smaller.images_path != first.images_path and smaller[0][0].shape == (3, 32, 32)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_corrupt_cache_is_regenerated(tmp_path):
    first = _dataset(tmp_path)
    expected = first[4][0].clone()
    first.images_path.write_bytes(first.images_path.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = _dataset(tmp_path)
    assert torch.equal(again[4][0], expected)
    again.programs_path.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        third = _dataset(tmp_path)
    assert torch.equal(third.actions["location"], first.actions["location"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _dataset(tmp_path)  # repaired: loads without a warning


def test_cache_with_altered_pixels_or_programs_of_the_same_size_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_CACHE", str(tmp_path / "cache"))  # the record of verified files
    first = _dataset(tmp_path)
    expected, expected_locations = first[4][0].clone(), first.actions["location"].clone()
    pixels = np.load(first.images_path, mmap_mode="r+")
    pixels[4, 0, 10, 10] ^= 0xFF  # one pixel of scene 4, the file's size unchanged
    pixels.flush()
    del pixels
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        again = _dataset(tmp_path)
    assert torch.equal(again[4][0], expected)

    with np.load(again.programs_path) as stored:
        arrays = dict(stored)
    arrays["location"][0, 0] += 1  # a program altered, its checksum kept
    with open(again.programs_path, "wb") as file:
        np.savez(file, **arrays)
    with pytest.warns(RuntimeWarning, match="programs do not match their checksum"):
        third = _dataset(tmp_path)
    assert torch.equal(third.actions["location"], expected_locations)


def test_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        sp.data.MujocoScenes(root=tmp_path, size=0)
    with pytest.raises(ValueError, match="max_objects"):
        sp.data.MujocoScenes(root=tmp_path, size=2, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="image_size"):
        sp.data.MujocoScenes(root=tmp_path, size=2, image_size=2)
    with pytest.raises(IndexError, match="index"):
        _dataset(tmp_path)[12]
    with pytest.raises(ValueError, match="order must be one of"):
        _dataset(tmp_path, order="by colour")
