"""No name lists: what a method, a schedule or a backend can do is declared where it lives, and
the code asks it (issue 32, item 3).

- a method declares `Method.trajectory_is_sampler_path` (Direct Inversion asks it);
- a schedule names in the `Schedule` protocol all a method calls on it, and declares
  `has_karras_grid` (euler asks it, never ``hasattr``);
- one table (`unsample.backends.registry.BACKENDS`) maps a pipeline class to the backend that loads it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unsample
from unsample.backends.base import Model
from unsample.backends.diffusers_common import FAMILY_NAMES
from unsample.backends.registry import BACKENDS, backend_for, load_backend
from unsample.core.flow_schedule import FlowSchedule
from unsample.core.schedule import NoiseSchedule, Schedule, TimestepGrid
from unsample.errors import InputError, ModelLoadError
from unsample.methods import registry
from unsample.methods.euler import EulerConfig
from unsample.methods.registry import available_methods, get_method, sampler_path_methods
from unsample_lab.bench.closed_form import SCHEDULER

SRC = Path(__file__).resolve().parents[1] / "src" / "unsample"
DIRECT_METHODS_BEFORE = ("ddim", "euler", "fixed-point", "negative-prompt", "null-text")
"""The name list `editing.branches` kept before the capability (the registry must agree with it)."""


def _schedules() -> list[Schedule]:
    return [NoiseSchedule.from_config(SCHEDULER), FlowSchedule(shift=3.0)]


# ------------------------------------------------------------ methods: trajectory_is_sampler_path


def test_the_methods_on_their_sampler_path_are_the_old_name_list() -> None:
    declared = {name for name in available_methods() if get_method(name).trajectory_is_sampler_path}
    assert declared == set(DIRECT_METHODS_BEFORE)
    assert sampler_path_methods() == sorted(DIRECT_METHODS_BEFORE)


def test_the_capable_list_comes_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method that declares the capability joins the list; nothing else has to change."""
    edict = get_method("edict")
    monkeypatch.setitem(registry._registry(), "edict", dataclasses.replace(edict, trajectory_is_sampler_path=True))
    assert "edict" in sampler_path_methods()


@pytest.mark.parametrize("method", ["edict", "bdia"])
def test_direct_inversion_is_refused_for_a_method_without_the_capability(tiny_model, tiny_image, method: str) -> None:
    assert not get_method(method).trajectory_is_sampler_path
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method=method, steps=3)
    with pytest.raises(InputError) as err:
        unsample.edit(tiny_model, inv, "a green cat", direct=True)
    assert str(err.value) == (
        "Direct Inversion needs a method whose trajectory is its sampler's path "
        f"(ddim, euler, fixed-point, negative-prompt, null-text); {method!r} reconstructs exactly already, "
        "edit it without --direct"
    )


# ------------------------------------------------------------ schedules: the protocol and has_karras_grid


def _protocol_members() -> dict[str, object]:
    return {name: value for name, value in vars(Schedule).items() if not name.startswith("_")}


def test_the_protocol_names_what_methods_and_editing_call_on_a_schedule() -> None:
    """Every ``schedule.X`` in the methods, editing and the Denoiser is a member of `Schedule`."""
    members = set(_protocol_members())
    assert members == {"prediction_type", "num_train_timesteps", "has_karras_grid", "alpha_sigma_at", "grid", "karras_grid"}
    files = [*sorted((SRC / "methods").glob("*.py")), *sorted((SRC / "editing").glob("*.py")), SRC / "core" / "denoiser.py"]
    called = {
        (path.name, attr) for path in files
        for attr in re.findall(r"\bschedule\.([A-Za-z_]\w*)", path.read_text(encoding="utf-8"))
    }
    assert called, "the scan found no schedule calls: the pattern or the paths are wrong"
    assert {(name, attr) for name, attr in called if attr not in members} == set()


def test_no_method_or_edit_asks_a_schedule_what_it_has() -> None:
    asking = re.compile(r"\b(?:hasattr|getattr)\(\s*[\w.]*schedule\b")
    files = [*sorted((SRC / "methods").glob("*.py")), *sorted((SRC / "editing").glob("*.py"))]
    assert [path.name for path in files if asking.search(path.read_text(encoding="utf-8"))] == []


@pytest.mark.parametrize("schedule", _schedules(), ids=lambda s: type(s).__name__)
def test_each_schedule_class_has_the_protocol_members(schedule: Schedule) -> None:
    for name, member in _protocol_members().items():
        assert hasattr(schedule, name), f"{type(schedule).__name__} lacks {name}"
        if isinstance(member, property):
            continue
        theirs = inspect.signature(getattr(schedule, name)).parameters
        for param in list(inspect.signature(member).parameters.values())[1:]:  # past self
            assert param.name in theirs, f"{type(schedule).__name__}.{name} lacks parameter {param.name}"
            assert theirs[param.name].default == param.default or param.default is inspect.Parameter.empty
    assert isinstance(schedule.prediction_type, str)
    assert isinstance(schedule.num_train_timesteps, int) and schedule.num_train_timesteps == 1000
    assert isinstance(schedule.has_karras_grid, bool)
    assert isinstance(schedule.grid(4), TimestepGrid)


def test_the_karras_grid_is_declared_vp_yes_flow_no() -> None:
    vp, flow = _schedules()
    assert vp.has_karras_grid is True and flow.has_karras_grid is False
    grid = vp.karras_grid(4)
    assert len(grid) == 4 and bool(torch.isfinite(grid.sigmas).all())
    with pytest.raises(InputError, match=r"^a flow schedule has no Karras grid .*; use its own grid, schedule\.grid\(steps\)$"):
        flow.karras_grid(4)


def test_euler_refuses_a_flow_by_the_declared_property() -> None:
    """A FlowSchedule *has* a karras_grid attribute (which refuses): euler reads has_karras_grid."""
    euler = get_method("euler")
    vp, flow = _schedules()
    assert hasattr(flow, "karras_grid")
    assert euler.refuses is not None and euler.refuses(vp) is None
    with pytest.raises(InputError, match=r"^method 'euler' cannot run on this model: it steps in k-diffusion's sigma"):
        euler.check_applies(flow)

    class NoKarras(NoiseSchedule):
        """A VP schedule that declares it cannot build a Karras grid."""

        @property
        def has_karras_grid(self) -> bool:
            return False

    with pytest.raises(InputError, match="it steps in k-diffusion's sigma"):
        euler.check_applies(NoKarras.from_config(SCHEDULER))


def test_euler_chooses_its_grid_from_the_schedule() -> None:
    vp, flow = _schedules()
    karras, plain = EulerConfig().make_grid(vp, 5), EulerConfig(sigmas="timesteps").make_grid(vp, 5)
    assert torch.equal(karras.sigma, vp.karras_grid(5).sigma) and torch.equal(plain.timesteps, vp.grid(5).timesteps)
    with pytest.raises(InputError, match="^a flow schedule has no Karras grid"):
        EulerConfig().make_grid(flow, 5)


def test_euler_is_refused_on_a_flow_pipeline(tiny_sd3_pipeline_dir: Path) -> None:
    model = unsample.load(str(tiny_sd3_pipeline_dir), device="cpu")
    assert model.schedule.has_karras_grid is False
    image = Image.fromarray((np.random.default_rng(0).random((model.resolution,) * 2 + (3,)) * 255).astype(np.uint8))
    with pytest.raises(InputError, match=r"^method 'euler' cannot run on this model: it steps in k-diffusion's sigma"):
        unsample.invert(model, image, "a cat", method="euler", steps=2)


# ------------------------------------------------------------ backends: one table


@pytest.mark.parametrize("class_name", sorted(BACKENDS))
def test_every_supported_class_maps_to_a_model_class_that_loads(class_name: str) -> None:
    backend = BACKENDS[class_name]
    assert backend_for(class_name) is backend
    loader = backend.loader()
    assert isinstance(loader, type) and issubclass(loader, Model)
    params = inspect.signature(loader.from_pretrained).parameters
    assert {"name", "device", "dtype", "local_files_only", "variant"} <= set(params)
    assert ("config" in params) == backend.loads_single_file
    assert backend.family in FAMILY_NAMES or not backend.loads_single_file


@pytest.mark.parametrize(
    "fixture", ["tiny_pipeline_dir", "tiny_sdxl_pipeline_dir", "tiny_sd3_pipeline_dir", "tiny_flux_pipeline_dir",
                "tiny_ddpm_pipeline_dir", "tiny_ddpm_flat_dir"],
)
def test_a_folder_loads_with_the_backend_its_class_names(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    index = folder / "model_index.json"
    class_name = json.loads(index.read_text())["_class_name"] if index.is_file() else "UNet2DModel"
    loaded = load_backend(str(folder), device="cpu")
    assert type(loaded) is BACKENDS[class_name].loader()


def test_unknown_and_missing_classes_are_refused_in_one_line(tmp_path: Path) -> None:
    listed = ", ".join(sorted(BACKENDS))
    with pytest.raises(ModelLoadError) as err:
        backend_for("KandinskyV22Pipeline")
    assert str(err.value) == f"pipeline class 'KandinskyV22Pipeline' is not supported; unsample loads {listed}"
    with pytest.raises(ModelLoadError) as err:
        backend_for(None)  # no default backend any more
    assert str(err.value) == f"the model_index.json names no pipeline class (_class_name); set it to one of {listed}"
    for name, index in [("unknown", {"_class_name": "KandinskyV22Pipeline"}), ("nameless", {"_diffusers_version": "0.30.0"})]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(ModelLoadError) as err:
            unsample.load(str(folder), device="cpu")
        assert "\n" not in str(err.value) and str(err.value).endswith(listed)


def test_a_hub_id_without_a_cached_model_index_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        unsample.load("nobody-here/no-such-model", device="cpu", local_files_only=True)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("could not read the model_index.json of 'nobody-here/no-such-model' (")
    assert str(err.value).endswith("give a local diffusers folder or a hub id that is in the local cache")
