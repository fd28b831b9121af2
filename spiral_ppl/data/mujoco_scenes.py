r"""MUJOCO SCENES: procedural scenes of 1 to 5 primitives with their ground-truth programs.

Scene ``i`` of a dataset is drawn from a random generator seeded with ``(seed, i)``, so it
depends on nothing but the generation parameters and its index:

- the number of objects :math:`k` is uniform on ``min_objects .. max_objects`` (1 .. 5);
- each object's shape, size and three colour bins are uniform;
- its location is uniform over the grid cells where it does not overlap the objects placed
  before it: the distance between two centres must be at least the sum of their
  half-extents, so footprints may touch but never interpenetrate. When no cell is free the
  object is shrunk to the smallest size, and dropped if even that does not fit (rare; the
  scene then has fewer objects than drawn).

The program of a scene is ``k`` *add* commands with the objects' attributes, then *skip*
commands (all other components 0) up to ``steps`` (20). Rendering it with
:class:`~spiral_ppl.renderers.MujocoScene` (same ``image_size`` and ``grid_size``) gives the
image back exactly.

Caching. 50,000 scenes take a few minutes to render, so they are made once and stored in
``root`` (default ``$SPIRAL_PPL_CACHE/mujoco_scenes``, else
``$XDG_CACHE_HOME/spiral_ppl/mujoco_scenes``, else ``~/.cache/spiral_ppl/mujoco_scenes``) as
two files named by a hash of every generation parameter (and the MuJoCo version, which
could change pixels), so different settings never collide: ``<name>.images.npy``, uint8
``(size, 3, H, W)`` read through a memory map, and ``<name>.programs.npz``, which also holds
the SHA-256 of the images file and of the programs. Each is written to a temporary file and
moved into place with :func:`os.replace`, the programs last, so a crash never leaves a
half-written file under the final name. The images are checked against their checksum when
first read (:func:`~spiral_ppl.data.integrity.verify` remembers a file that passed), the
programs every time. A cache file that cannot be read, does not match its parameters or
fails its checksum is regenerated with a warning.

Example::

    >>> import spiral_ppl as sp, tempfile
    >>> scenes = sp.data.MujocoScenes(root=tempfile.mkdtemp(), size=4, seed=0, progress=False)
    >>> image, actions = scenes[0]
    >>> image.shape, actions["command"].shape
    (torch.Size([3, 64, 64]), torch.Size([20]))
    >>> scene = scenes.scene()
    >>> batch = {name: value[None] for name, value in actions.items()}
    >>> bool((scene.render(batch)[0] == image).all())
    True

Reference: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018, section 4.3.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spiral_ppl.checks import non_negative_int, positive_int
from spiral_ppl.data.cache import cache_root
from spiral_ppl.data.integrity import sha256_of, verify
from spiral_ppl.io import atomic_path
from spiral_ppl.renderers.mujoco_scene import (
    ADD,
    DEFAULT_SIZES,
    MODIFY,
    OBJECT_FIELDS,
    SKIP,
    MujocoScene,
    _cell_centres,
)

#: Bumped whenever the generator changes, so old caches are not reused.
FORMAT_VERSION = 1
#: Scenes rendered per call while generating.
_CHUNK = 256
#: Orders of the add commands in the programs (see :class:`MujocoScenes`).
ORDERS = ("generated", "raster")


def raster_order(programs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same programs with their *add* commands sorted by location (row by row).

    Only for programs of add commands followed by skips, whose objects do not overlap (as
    in MUJOCO SCENES): their images do not depend on the order of the adds.
    """
    missing = {"command", "location"} - set(programs)
    if missing:
        raise ValueError(f"raster_order needs the components 'command' and 'location'; missing {sorted(missing)}")
    command = programs["command"]
    if bool((command == MODIFY).any()):
        raise ValueError("raster_order reorders add commands; these programs modify objects, whose order matters")
    # Skips sort after every location; a stable sort keeps them in place at the end.
    key = torch.where(command == ADD, programs["location"].long(), torch.iinfo(torch.int32).max)
    permutation = torch.sort(key, dim=1, stable=True).indices
    return {name: torch.gather(value, 1, permutation) for name, value in programs.items()}


def scene_expert(
    state: Any, programs: dict[str, torch.Tensor], grid_size: int, *, tolerance: int = 1, modify: bool = True
) -> dict[str, torch.Tensor]:
    """The next edit that brings each scene closer to its ground-truth program: a DAgger expert.

    ``state`` is a :class:`~spiral_ppl.renderers.mujoco_scene.SceneState`, the step-wise
    state of a :class:`~spiral_ppl.programs.SceneProgram` (``prog.stepwise``) that some other
    actor (a policy) built; ``programs`` are the targets' programs of add commands, as
    MUJOCO SCENES stores them. Each placed object, in the order they were added, claims the
    nearest unclaimed object of the program within ``tolerance`` grid cells in x and in y
    (an object one cell off still covers most of its target's pixels); then

    - when every object of the program is claimed: *skip* (the scene is done);
    - when the most recent object claims nothing (it stands where no object should) it is
      the one object that can still be changed: *modify* it into the first unclaimed object
      of the program (unless ``modify`` is off);
    - otherwise *add* the first unclaimed object, in the program's order (raster order with
      ``MujocoScenes(order="raster")``, as in the behaviour-cloning demonstrations).

    On the demonstrations' own states this says exactly what the program does next.
    Matching by place rather than by every attribute is deliberate: a learner that gets a
    colour wrong should move on to the next object, not spend its remaining steps redoing
    one. Wrong objects placed before the most recent one stay; no command removes them.

    :param grid_size: side of the location grid (locations are ``y * grid_size + x``).
    :param tolerance: how many cells a placed object may be off its target's place.
    :param modify: let the expert move a misplaced object. Off, it only adds and skips: a
        learner that cannot yet place the missing object would otherwise be taught to spend
        every remaining step moving one.
    :returns: ``{component: LongTensor[B]}``; a skip's other components are 0, as in the programs.
    """
    objects, count = state
    command = programs["command"].to(objects.device)
    if bool((command == MODIFY).any()):
        raise ValueError("scene_expert follows programs of add commands; these programs modify objects")
    batch = objects.shape[0]
    if command.shape[0] != batch:
        raise ValueError(f"the state holds {batch} scenes but the programs {command.shape[0]}")
    wanted = torch.stack([programs[name].to(objects.device) for name in OBJECT_FIELDS], dim=-1)
    location = OBJECT_FIELDS.index("location")
    action = {name: torch.zeros(batch, dtype=torch.long, device=objects.device) for name in ("command", *OBJECT_FIELDS)}
    action["command"][:] = SKIP
    for row in range(batch):
        unclaimed = wanted[row][command[row] == ADD].tolist()
        last_claims = False
        for placed in objects[row, : int(count[row])].tolist():
            y, x = divmod(placed[location], grid_size)
            offsets = [max(abs(y - goal[location] // grid_size), abs(x - goal[location] % grid_size))
                       for goal in unclaimed]
            last_claims = bool(offsets) and min(offsets) <= tolerance
            if last_claims:
                unclaimed.pop(offsets.index(min(offsets)))
        if not unclaimed:
            continue
        action["command"][row] = MODIFY if modify and int(count[row]) > 0 and not last_claims else ADD
        for name, value in zip(OBJECT_FIELDS, unclaimed[0]):
            action[name][row] = value
    return action


def _programs_sha256(programs: dict[str, np.ndarray]) -> str:
    """One SHA-256 over every component's name and int16 values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(programs):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(programs[name], dtype=np.int16).tobytes())
    return digest.hexdigest()


class MujocoScenes(torch.utils.data.Dataset):
    """The MUJOCO SCENES dataset: ``(image, actions)`` pairs, made once and cached.

    :param root: cache directory (``None``: ``cache_root('mujoco_scenes')``).
    :param size: number of scenes (50,000 by default).
    :param seed: the generator's seed; the same seed gives the same dataset.
    :param image_size: side of the images (64).
    :param grid_size: side of the location grid (16).
    :param steps: length of the ground-truth programs (20).
    :param min_objects, max_objects: range of the number of objects per scene (1 .. 5).
    :param workers: worker processes for rendering while generating (see
        :class:`~spiral_ppl.renderers.MujocoScene`).
    :param progress: show a progress bar while generating (``None``: only on a terminal).
    :param order: the order of each program's *add* commands: ``"generated"`` (the order the
        objects were placed in) or ``"raster"`` (by location, row by row). Objects never
        overlap, so both orders draw the same image; in raster order the next object is a
        function of the image and the canvas so far, so behaviour cloning
        (:meth:`~spiral_ppl.inference.Spiral.imitate`) has one right answer per step.

    Item ``i`` is ``(image, actions)``: a float tensor ``(3, image_size, image_size)`` in
    ``[0, 1]`` and ``{component: LongTensor[steps]}``; :attr:`actions` gives all programs,
    ``{component: LongTensor[size, steps]}`` (kept as int16 inside, which is small to share
    with DataLoader workers).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        size: int = 50_000,
        seed: int = 0,
        image_size: int = 64,
        *,
        grid_size: int = 16,
        steps: int = 20,
        min_objects: int = 1,
        max_objects: int = 5,
        workers: int = 0,
        progress: bool | None = None,
        order: str = "generated",
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        positive_int("size", size)
        non_negative_int("seed", seed)
        positive_int("min_objects", min_objects)
        positive_int("steps", steps)
        if isinstance(max_objects, bool) or not isinstance(max_objects, int) or not min_objects <= max_objects <= steps:
            raise ValueError(
                f"max_objects must be an int in [min_objects={min_objects}, steps={steps}], got {max_objects!r}"
            )
        self.size = size
        self.seed = seed
        self.image_size = image_size
        self.grid_size = grid_size
        self.steps = steps
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.order = order
        # Validates image_size and grid_size; renders nothing until asked.
        self._scene = MujocoScene(image_size, grid_size, max_objects=max_objects, workers=workers)
        self._parameters = self._describe()
        self.root = Path(root) if root is not None else cache_root("mujoco_scenes")
        self.images_path = self.root / f"{self.cache_name}.images.npy"
        self.programs_path = self.root / f"{self.cache_name}.programs.npz"

        loaded = self._load()
        if loaded is None:
            self._generate(progress)
            loaded = self._load()
            if loaded is None:
                raise RuntimeError(f"MUJOCO SCENES was just written to {self.root} but cannot be read back")
        self._images, self._programs_int16 = loaded
        if order == "raster":
            self._programs_int16 = raster_order(self._programs_int16)
        self._scene.close()

    # -- the dataset ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not isinstance(index, (int, np.integer)) or not -self.size <= index < self.size:
            raise IndexError(f"index must be an int in [-{self.size}, {self.size}), got {index!r}")
        image = torch.from_numpy(np.array(self._images[index])).to(torch.float32).div_(255.0)
        return image, {name: value[index].long() for name, value in self._programs_int16.items()}

    def expert(self, state: Any, programs: dict[str, torch.Tensor], **options: Any) -> dict[str, torch.Tensor]:
        """The DAgger expert of these scenes for :meth:`spiral_ppl.inference.Spiral.imitate`:
        :func:`scene_expert` on this dataset's grid (``options``: its ``tolerance`` and ``modify``)."""
        return scene_expert(state, programs, self.grid_size, **options)

    @property
    def actions(self) -> dict[str, torch.Tensor]:
        """All ground-truth programs, ``{component: LongTensor[size, steps]}``."""
        return {name: value.long() for name, value in self._programs_int16.items()}

    def scene(self, **kwargs: Any) -> MujocoScene:
        """A :class:`~spiral_ppl.renderers.MujocoScene` that renders these programs (kwargs: its options)."""
        return MujocoScene(self.image_size, self.grid_size, **kwargs)

    # -- the cache -------------------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        """Everything the images depend on; the cache file name is a hash of it."""
        return dict(self._parameters)

    def _describe(self) -> dict[str, Any]:
        return dict(
            format=FORMAT_VERSION,
            mujoco=importlib.metadata.version("mujoco"),
            size=self.size,
            seed=self.seed,
            image_size=self.image_size,
            grid_size=self.grid_size,
            steps=self.steps,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
        )

    @property
    def cache_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.parameters, sort_keys=True).encode()).hexdigest()[:16]
        return f"mujoco_scenes-{self.size}-seed{self.seed}-{self.image_size}px-{digest}"

    def _load(self) -> tuple[np.ndarray, dict[str, torch.Tensor]] | None:
        if not (self.images_path.exists() and self.programs_path.exists()):
            return None
        expected = (self.size, 3, self.image_size, self.image_size)
        try:
            images = np.load(self.images_path, mmap_mode="r", allow_pickle=False)
            if images.dtype != np.uint8 or images.shape != expected:
                raise ValueError(f"images have {images.dtype} {images.shape}, expected uint8 {expected}")
            with np.load(self.programs_path, allow_pickle=False) as stored:
                parameters = json.loads(str(stored["parameters"]))
                if parameters != self.parameters:
                    raise ValueError(f"it was made with {parameters}")
                if "images_sha256" not in stored or "programs_sha256" not in stored:
                    raise ValueError("it carries no checksums (an older version of the library made it)")
                images_sha256, programs_sha256 = str(stored["images_sha256"]), str(stored["programs_sha256"])
                programs = {c.name: stored[c.name].astype(np.int16) for c in self._scene.action_space}
            for name, value in programs.items():
                if value.shape != (self.size, self.steps):
                    raise ValueError(f"programs of {name!r} have shape {tuple(value.shape)}")
            if _programs_sha256(programs) != programs_sha256:
                raise ValueError("its programs do not match their checksum")
            verify(self.images_path, images_sha256, fix="the cache is regenerated")
            actions = {name: torch.from_numpy(value) for name, value in programs.items()}
        except Exception as error:  # noqa: BLE001 - any unreadable cache is regenerated
            warnings.warn(
                f"MUJOCO SCENES cache {self.images_path.name} in {self.root} is unreadable or does not match "
                f"its parameters ({type(error).__name__}: {error}); regenerating it",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return images, actions

    def _generate(self, progress: bool | None) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RuntimeError(
                f"cannot create the MUJOCO SCENES cache directory {self.root} ({error}); pass root= a writable folder"
            ) from error
        actions = self._programs()
        shape = (self.size, 3, self.image_size, self.image_size)
        with atomic_path(self.images_path) as temporary:
            images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
            disable = None if progress is None else not progress
            with tqdm(total=self.size, desc="MUJOCO SCENES", unit="scene", disable=disable) as bar:
                for start in range(0, self.size, _CHUNK):
                    chunk = {name: torch.from_numpy(value[start : start + _CHUNK]) for name, value in actions.items()}
                    rendered = self._scene.render(chunk)
                    images[start : start + _CHUNK] = rendered.mul(255).round().to(torch.uint8).numpy()
                    bar.update(rendered.shape[0])
            images.flush()
            del images
            images_sha256 = sha256_of(temporary)
        checksums = dict(images_sha256=np.array(images_sha256), programs_sha256=np.array(_programs_sha256(actions)))
        with atomic_path(self.programs_path) as temporary:
            with open(temporary, "wb") as file:
                np.savez(file, parameters=np.array(json.dumps(self.parameters)), **checksums, **actions)

    def _programs(self) -> dict[str, np.ndarray]:
        """The ground-truth programs of every scene: ``{component: int16 (size, steps)}``."""
        names = [c.name for c in self._scene.action_space]
        actions = {name: np.zeros((self.size, self.steps), dtype=np.int16) for name in names}
        actions["command"][:] = SKIP
        attribute_sizes = {c.name: c.size for c in self._scene.action_space}
        cells = _cell_centres(np.arange(self.grid_size**2), self.grid_size)
        half_extents = np.asarray(DEFAULT_SIZES)
        for index in range(self.size):
            rng = np.random.default_rng([self.seed, index])
            placed: list[tuple[np.ndarray, float]] = []
            for _ in range(int(rng.integers(self.min_objects, self.max_objects + 1))):
                attributes = {name: int(rng.integers(attribute_sizes[name])) for name in OBJECT_FIELDS}
                for size in (attributes["object_size"], 0):
                    free = np.ones(len(cells), dtype=bool)
                    for centre, extent in placed:
                        free &= np.linalg.norm(cells - centre, axis=1) >= extent + half_extents[size]
                    if free.any():
                        break
                else:
                    continue  # even the smallest object does not fit: drop it
                attributes["object_size"] = size
                attributes["location"] = int(rng.choice(np.flatnonzero(free)))
                placed.append((cells[attributes["location"]], half_extents[size]))
                step = len(placed) - 1
                actions["command"][index, step] = ADD
                for name, value in attributes.items():
                    actions[name][index, step] = value
        return actions

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memory map would carry all its pixels; worker processes reopen the file instead.
        return {key: value for key, value in self.__dict__.items() if key != "_images"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._images = np.load(self.images_path, mmap_mode="r", allow_pickle=False)

    def __repr__(self) -> str:
        return (
            f"MujocoScenes(size={self.size}, seed={self.seed}, image_size={self.image_size}, "
            f"objects={self.min_objects}..{self.max_objects}, order={self.order!r}, root={str(self.root)!r})"
        )
