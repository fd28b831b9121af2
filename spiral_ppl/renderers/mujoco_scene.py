r"""MuJoCo scenes: simple primitives on a square platform, the paper's 3-D action space.

Each step of a program edits a list of object slots; :meth:`MujocoScene.canvas` renders the
scenes with the real MuJoCo renderer. The action, in order:

============  ===========  ================================================================
component     size         meaning
============  ===========  ================================================================
command       3            0 = add a new object, 1 = skip the step, 2 = modify the most
                           recently added object (replace all its attributes)
shape         4            0 = sphere, 1 = box (a cube), 2 = cylinder (upright),
                           3 = capsule (upright)
location      grid_size^2  flat index ``y * grid_size + x`` of a cell of the platform
object_size   3            half-extents 0.1, 0.15, 0.2 (small, medium, large)
red, green,   4 each       colour bin ``k`` is intensity ``k / 3``: 0, 1/3, 2/3, 1
blue
============  ===========  ================================================================

Two commands cannot act and are no-ops, so every action sequence is a valid program:
*modify* before any object was added, and *add* when all ``max_objects`` slots are full.
The shape, location, size and colour of a *skip* are ignored.

Geometry. The platform is the square :math:`[-1, 1]^2` in the plane :math:`z = 0`; grid
cell :math:`(x, y)` is centred at world coordinates

.. math::

    \big(-c + (x + \tfrac12) \tfrac{2c}{g},\; c - (y + \tfrac12) \tfrac{2c}{g}\big),
    \qquad c = 0.8,\ g = \text{grid\_size},

so that the largest object on an edge cell still stands on the platform, and grid rows
grow towards the camera: on the image, ``x`` runs left to right and ``y`` top to bottom.
An object of half-extent :math:`h` rests on the platform: a sphere of radius :math:`h`, a
cube of half-side :math:`h`, a cylinder of radius :math:`h` and half-height :math:`h`, and a
capsule of radius :math:`0.6 h` whose straight part has half-length :math:`0.6 h`. The
camera looks down at the platform's centre from 60 degrees above the horizon.

Lighting keeps colours recognisable: every light has zero specular term, so an object of
colour :math:`k` has pixels :math:`k \cdot s` with a shading factor :math:`s \le 1` that is
the same for the three channels (ambient 0.3 plus two diffuse lights, from the camera and
from above). The platform is mid grey and the background black.

Speed. The MJCF model is compiled once, with ``max_objects`` geom slots; each render only
writes the slots' type, size, position and colour into the compiled model (unused slots get
alpha 0, which MuJoCo skips) and draws. Shadows, reflections and multisampling add nothing
at 64x64 and are off unless asked for. Rendering is headless through EGL: ``MUJOCO_GL=egl``
is set when the user has not chosen a backend (on CPU machines Mesa's software EGL, from
the Debian packages ``libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0``; on NVIDIA machines
the driver's EGL). Large batches can be spread over ``workers`` processes, each with its
own model and GL context.

Example::

    >>> import torch, spiral_ppl as sp
    >>> scene = sp.renderers.MujocoScene(image_size=64, grid_size=16)
    >>> [c.name for c in scene.action_space]
    ['command', 'shape', 'location', 'object_size', 'red', 'green', 'blue']
    >>> red_cube = {"command": torch.tensor([[0]]), "shape": torch.tensor([[1]]),
    ...             "location": torch.tensor([[8 * 16 + 8]]), "object_size": torch.tensor([[2]]),
    ...             "red": torch.tensor([[3]]), "green": torch.tensor([[0]]), "blue": torch.tensor([[0]])}
    >>> image = scene.render(red_cube)
    >>> image.shape, bool(image[0, 0].max() > 0.5 > image[0, 1].max())
    (torch.Size([1, 3, 64, 64]), True)

References: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018, section 4.3 (MuJoCo scenes); Todorov et al., "MuJoCo: A physics engine
for model-based control", IROS 2012; the MuJoCo documentation on MJCF ``visual`` settings
and headless rendering (``MUJOCO_GL``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from spiral_ppl import checks
from spiral_ppl.checks import non_negative_int
from spiral_ppl.renderers.base import Component, Renderer, check_new_states, validate_actions

#: Commands of the ``command`` component.
ADD, SKIP, MODIFY = 0, 1, 2
#: Object types, indexed by the ``shape`` component.
SHAPES = ("sphere", "box", "cylinder", "capsule")
#: Half-extents of the three object sizes, in platform units (the platform is 2 wide).
DEFAULT_SIZES = (0.1, 0.15, 0.2)
#: The attributes an object slot stores, in order (the action components after ``command``).
OBJECT_FIELDS = ("shape", "location", "object_size", "red", "green", "blue")
#: Debian packages that provide headless OpenGL through Mesa's EGL.
GL_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libopengl0")

#: Half-width of the square the grid cells cover: keeps the largest objects on the platform.
_GRID_EXTENT = 0.8
_CAPSULE_RATIO = 0.6
_PLATFORM_GREY = 0.5
_CAMERA_ELEVATION_DEG = 60.0
_CAMERA_DISTANCE = 3.1


class SceneState(NamedTuple):
    """Object slots of a batch of scenes: cheap to copy and edit, rendered by ``canvas``."""

    #: ``(B, max_objects, 6)`` long: :data:`OBJECT_FIELDS` of each slot.
    objects: torch.Tensor
    #: ``(B,)`` long: how many slots are filled; slot ``count - 1`` is the last object added.
    count: torch.Tensor


class MujocoScene(Renderer):
    """Scenes of up to ``max_objects`` primitives on a platform, rendered by MuJoCo.

    :param image_size: side of the square RGB images in pixels (64 in the paper).
    :param grid_size: side of the location grid on the platform (16 in the paper).
    :param max_objects: object slots of the compiled model; *add* is a no-op once they are
        full. Programs of ``T`` steps never need more than ``T``.
    :param sizes: the half-extents, in platform units, the ``object_size`` component picks.
    :param color_bins: bins per colour channel; bin ``k`` is intensity ``k / (bins - 1)``.
    :param shadows: let the top light cast shadows (off: costs time, adds little at 64x64).
    :param multisample: anti-alias with 4 samples per pixel (off for the same reason).
    :param workers: spread batches of at least ``2 * workers`` scenes over this many worker
        processes, each with its own MuJoCo model and GL context (0: render in this process).
        Workers are started with ``spawn`` (a forked child would share this process's GL
        state), so a script that uses them needs the usual ``if __name__ == "__main__":``
        guard. Call :meth:`close` (or use the scene as a context manager) to stop them.
    """

    channels = 3

    def __init__(
        self,
        image_size: int = 64,
        grid_size: int = 16,
        max_objects: int = 20,
        *,
        sizes: Sequence[float] = DEFAULT_SIZES,
        color_bins: int = 4,
        shadows: bool = False,
        multisample: bool = False,
        workers: int = 0,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 4096:
            raise ValueError(f"image_size must be an int in [8, 4096], got {image_size!r}")
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or not 1 <= grid_size <= 256:
            raise ValueError(f"grid_size must be an int in [1, 256], got {grid_size!r}")
        if isinstance(max_objects, bool) or not isinstance(max_objects, int) or not 1 <= max_objects <= 1000:
            raise ValueError(f"max_objects must be an int in [1, 1000], got {max_objects!r}")
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in sizes):
            raise ValueError(f"sizes must be a non-empty list of half-extents in (0, 1], got {sizes!r}")
        sizes = tuple(float(s) for s in sizes)
        if not sizes or any(not np.isfinite(s) or not 0 < s <= 1 for s in sizes):
            raise ValueError(f"sizes must be a non-empty list of half-extents in (0, 1], got {sizes!r}")
        if isinstance(color_bins, bool) or not isinstance(color_bins, int) or color_bins < 2:
            raise ValueError(f"color_bins must be an int >= 2, got {color_bins!r}")
        non_negative_int("workers", workers, hint="0 renders in this process")
        self.image_size = image_size
        self.grid_size = grid_size
        self.max_objects = max_objects
        self.sizes = sizes
        self.color_bins = color_bins
        self.shadows = checks.switch("shadows", shadows)
        self.multisample = checks.switch("multisample", multisample)
        self.workers = workers
        self.action_space = (
            Component("command", 3),
            Component("shape", len(SHAPES)),
            Component("location", grid_size * grid_size, "location"),
            Component("object_size", len(sizes), ordered=True),
            Component("red", color_bins, ordered=True),
            Component("green", color_bins, ordered=True),
            Component("blue", color_bins, ordered=True),
        )
        self._gl: _GLScene | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._pool_finalizer: Any = None

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this renderer."""
        return {
            "image_size": self.image_size,
            "grid_size": self.grid_size,
            "max_objects": self.max_objects,
            "sizes": list(self.sizes),
            "color_bins": self.color_bins,
            "shadows": self.shadows,
            "multisample": self.multisample,
            "workers": self.workers,
        }

    def _settings(self) -> dict[str, Any]:
        """Constructor arguments that determine the images (sent to worker processes)."""
        return {name: value for name, value in self.settings().items() if name != "workers"}

    # -- the step-wise protocol: cheap edits of object slots --------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> SceneState:
        device = check_new_states(batch_size, device, 8 * (self.max_objects * len(OBJECT_FIELDS) + 1))
        objects = torch.zeros(batch_size, self.max_objects, len(OBJECT_FIELDS), dtype=torch.long, device=device)
        return SceneState(objects, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, state: SceneState, action: Mapping[str, torch.Tensor]) -> SceneState:
        validate_actions(self.action_space, action, ndim=1)
        objects, count = _check_state(state, self.max_objects)
        batch = objects.shape[0]
        if action["command"].shape[0] != batch:
            raise ValueError(f"the action has batch {action['command'].shape[0]} but the state holds {batch} scenes")
        device = objects.device
        command = action["command"].to(device=device, dtype=torch.long)
        attributes = torch.stack([action[name].to(device=device, dtype=torch.long) for name in OBJECT_FIELDS], -1)
        add = (command == ADD) & (count < self.max_objects)
        modify = (command == MODIFY) & (count > 0)
        write = add | modify
        slot = torch.where(add, count, count - 1)
        rows = torch.arange(batch, device=device)[write]
        objects = objects.clone()
        objects[rows, slot[write]] = attributes[write]
        return SceneState(objects, count + add.long())

    def canvas(self, state: SceneState) -> torch.Tensor:
        """Render the scenes: images ``(B, 3, image_size, image_size)`` in ``[0, 1]``."""
        objects, count = _check_state(state, self.max_objects)
        objects_np = objects.detach().cpu().numpy().astype(np.int32)
        count_np = count.detach().cpu().numpy().astype(np.int32)
        if self.workers and objects_np.shape[0] >= 2 * self.workers:
            pixels = self._render_in_workers(objects_np, count_np)
        else:
            pixels = self._local_scene().render(objects_np, count_np)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return images.to(objects.device)

    # -- geometry, for users and tests -------------------------------------------------------

    def location_to_world(self, location: torch.Tensor) -> torch.Tensor:
        """Flat grid indices ``(...)`` -> world coordinates ``(..., 2)`` of the cell centres."""
        return torch.from_numpy(_cell_centres(np.asarray(location), self.grid_size))

    # -- rendering back ends ---------------------------------------------------------------

    def _local_scene(self) -> "_GLScene":
        if self._gl is None:
            self._gl = _GLScene(**self._settings())
        return self._gl

    def _render_in_workers(self, objects: np.ndarray, count: np.ndarray) -> np.ndarray:
        if self._pool is None:
            # Spawn, not fork: a forked child would inherit this process's GL state.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self._settings(),),
            )
            self._pool_finalizer = weakref.finalize(self, _shutdown_pool, self._pool)
        chunks = np.array_split(np.arange(objects.shape[0]), self.workers)
        futures = [self._pool.submit(_render_in_worker, objects[chunk], count[chunk]) for chunk in chunks]
        return np.concatenate([future.result() for future in futures])

    def close(self) -> None:
        """Stop the worker processes and free the GL context (the scene stays usable)."""
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = self._pool_finalizer = None
        if self._gl is not None:
            self._gl.close()
            self._gl = None

    def __enter__(self) -> "MujocoScene":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # GL contexts and process pools cannot cross processes; each copy makes its own.
        return self.settings()

    def __setstate__(self, settings: dict[str, Any]) -> None:
        self.__init__(**settings)

    def __repr__(self) -> str:
        return (
            f"MujocoScene(image_size={self.image_size}, grid_size={self.grid_size}, max_objects={self.max_objects}, "
            f"shadows={self.shadows}, multisample={self.multisample}, workers={self.workers})"
        )


def _check_state(state: Any, max_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(state, SceneState):
        raise TypeError(f"state must be a SceneState from MujocoScene.initial_state, got {type(state).__name__}")
    objects, count = state
    if objects.dim() != 3 or objects.shape[1:] != (max_objects, len(OBJECT_FIELDS)) or count.shape != objects.shape[:1]:
        raise ValueError(
            f"state must hold objects (B, {max_objects}, {len(OBJECT_FIELDS)}) and count (B,), "
            f"got {tuple(objects.shape)} and {tuple(count.shape)}"
        )
    return objects, count


def _cell_centres(location: np.ndarray, grid_size: int) -> np.ndarray:
    cell = 2 * _GRID_EXTENT / grid_size
    x = -_GRID_EXTENT + (location % grid_size + 0.5) * cell
    y = _GRID_EXTENT - (location // grid_size + 0.5) * cell
    return np.stack([x, y], axis=-1).astype(np.float32)


# -- the MuJoCo side: one compiled model and GL context per process ---------------------------


def _import_mujoco():
    """Import mujoco for headless rendering, choosing EGL unless the user chose a backend."""
    if "mujoco" not in sys.modules:
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
    except Exception as error:  # an invalid MUJOCO_GL makes the import itself fail
        raise _gl_error(error) from error
    return mujoco


def _gl_error(error: BaseException) -> RuntimeError:
    backend = os.environ.get("MUJOCO_GL", "")
    return RuntimeError(
        f"MuJoCo could not open an OpenGL context for headless rendering (MUJOCO_GL={backend!r}): "
        f"{type(error).__name__}: {error}. "
        "MujocoScene renders through EGL: set MUJOCO_GL=egl (the default when unset) before mujoco is "
        "imported, and install an EGL driver: on Debian/Ubuntu CPU machines Mesa's software EGL, "
        f"`sudo apt-get install {' '.join(GL_PACKAGES)}`; on NVIDIA machines the NVIDIA driver's EGL. "
        "MUJOCO_GL=osmesa needs libosmesa6 instead."
    )


def _scene_xml(image_size: int, max_objects: int, shadows: bool, multisample: bool) -> str:
    elevation = np.deg2rad(_CAMERA_ELEVATION_DEG)
    camera_y = -_CAMERA_DISTANCE * np.cos(elevation)
    camera_z = _CAMERA_DISTANCE * np.sin(elevation)
    # The camera's y axis points up the image: perpendicular to the line of sight, tilted back.
    up = (0.0, np.sin(elevation), np.cos(elevation))
    slots = "\n".join(
        f'    <geom name="object_{k}" type="sphere" size="0.1" pos="0 0 0" rgba="0 0 0 0"/>' for k in range(max_objects)
    )
    return f"""
<mujoco model="spiral_ppl_scene">
  <visual>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <quality shadowsize="{2048 if shadows else 0}" offsamples="{4 if multisample else 0}"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0"/>
  </default>
  <worldbody>
    <light name="top" directional="true" pos="0 0 4" dir="0 0.3 -1" diffuse="0.35 0.35 0.35"
           specular="0 0 0" castshadow="{"true" if shadows else "false"}"/>
    <geom name="platform" type="box" size="1 1 0.02" pos="0 0 -0.02"
          rgba="{_PLATFORM_GREY} {_PLATFORM_GREY} {_PLATFORM_GREY} 1"/>
{slots}
    <camera name="view" pos="0 {camera_y:.6f} {camera_z:.6f}" xyaxes="1 0 0 0 {up[1]:.6f} {up[2]:.6f}" fovy="44"/>
  </worldbody>
</mujoco>
"""


class _GLScene:
    """The compiled MJCF model, its GL context and the per-render geom edits."""

    def __init__(
        self,
        image_size: int,
        grid_size: int,
        max_objects: int,
        sizes: Sequence[float],
        color_bins: int,
        shadows: bool,
        multisample: bool,
    ) -> None:
        mujoco = _import_mujoco()
        self.grid_size = grid_size
        self.max_objects = max_objects
        self.image_size = image_size
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(image_size, max_objects, shadows, multisample))
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        try:
            self.renderer = mujoco.Renderer(self.model, image_size, image_size)
        except Exception as error:  # any GL failure (no EGL vendor, no display, no libOSMesa) is the same problem
            raise _gl_error(error) from error
        self.option = mujoco.MjvOption()
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.camera.fixedcamid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "view")
        scene_flags = self.renderer.scene.flags
        flag = mujoco.mjtRndFlag
        scene_flags[flag.mjRND_SHADOW] = bool(shadows)
        for name in ("mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
            scene_flags[getattr(flag, name)] = False
        self.first_slot = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "object_0")
        self.slots = slice(self.first_slot, self.first_slot + max_objects)

        geom = mujoco.mjtGeom
        self.type_table = np.array([int(getattr(geom, f"mjGEOM_{s.upper()}")) for s in SHAPES], dtype=np.int32)
        half = np.asarray(sizes, dtype=np.float64)
        # size_table[shape, size] = MuJoCo's geom size; height_table = how high the centre sits.
        self.size_table = np.zeros((len(SHAPES), len(half), 3))
        self.size_table[0, :, 0] = half
        self.size_table[1] = half[:, None]
        self.size_table[2, :, 0], self.size_table[2, :, 1] = half, half
        self.size_table[3, :, 0], self.size_table[3, :, 1] = _CAPSULE_RATIO * half, _CAPSULE_RATIO * half
        self.height_table = np.stack([half, half, half, 2 * _CAPSULE_RATIO * half])
        self.color_table = np.linspace(0.0, 1.0, color_bins)

    def render(self, objects: np.ndarray, count: np.ndarray) -> np.ndarray:
        """``objects`` ``(N, max_objects, 6)``, ``count`` ``(N,)`` -> uint8 pixels ``(N, H, W, 3)``."""
        model, data = self.model, self.data
        out = np.empty((objects.shape[0], self.image_size, self.image_size, 3), dtype=np.uint8)
        shape, location, size = objects[..., 0], objects[..., 1], objects[..., 2]
        # All geom attributes of the batch at once; the loop below only copies rows.
        types = self.type_table[shape]
        geom_sizes = self.size_table[shape, size]
        heights = self.height_table[shape, size][..., None]
        positions = np.concatenate([_cell_centres(location, self.grid_size), heights], -1)
        colors = np.concatenate([self.color_table[objects[..., 3:6]], np.ones(objects.shape[:2] + (1,))], -1)
        colors[np.arange(self.max_objects)[None, :] >= count[:, None], 3] = 0.0  # alpha 0: MuJoCo skips the geom
        for index in range(objects.shape[0]):
            model.geom_type[self.slots] = types[index]
            model.geom_size[self.slots] = geom_sizes[index]
            model.geom_rgba[self.slots] = colors[index]
            # The slots belong to the static world body, so their world positions are their model positions.
            data.geom_xpos[self.slots] = positions[index]
            self.renderer.update_scene(data, camera=self.camera, scene_option=self.option)
            self.renderer.render(out=out[index])
        return out

    def close(self) -> None:
        self.renderer.close()


_worker_scene: _GLScene | None = None
_worker_error: Exception | None = None


def _start_worker(settings: dict[str, Any]) -> None:
    global _worker_scene, _worker_error
    try:
        _worker_scene = _GLScene(**settings)
    except Exception as error:  # noqa: BLE001 - re-raised by each task, where the caller sees it
        # An exception in an initializer only breaks the pool with a vague message; keeping it
        # here lets every task raise the real one (a missing GL backend, say).
        _worker_error = error


def _render_in_worker(objects: np.ndarray, count: np.ndarray) -> np.ndarray:
    if _worker_error is not None:
        raise _worker_error
    assert _worker_scene is not None
    return _worker_scene.render(objects, count)


def _shutdown_pool(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
