"""Device records and the device registry (iot_dsl.devices.registry)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Mapping
from typing import Any

import pytest

from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.devices.registry import CORE_ATTRIBUTES, FrozenAttributes


def make(device_id: str, site: str = "north", **extra: Any) -> Device:
    return Device(
        id=device_id,
        type=extra.pop("type", "boiler"),
        site=site,
        group=extra.pop("group", "line-1"),
        lat=52.5,
        lon=13.4,
        firmware=extra.pop("firmware", "2.1.0"),
        attrs=extra,
    )


# -- Device ----------------------------------------------------------------------------------------------------


def test_device_attributes_hold_core_fields_then_extras() -> None:
    device = make("b-1", vendor="acme", rated_kw=12)
    attributes = device.as_attributes()
    assert attributes == {
        "id": "b-1",
        "type": "boiler",
        "site": "north",
        "group": "line-1",
        "lat": 52.5,
        "lon": 13.4,
        "firmware": "2.1.0",
        "vendor": "acme",
        "rated_kw": 12,
    }
    assert list(attributes)[: len(CORE_ATTRIBUTES)] == list(CORE_ATTRIBUTES)


def test_device_attributes_are_cached() -> None:
    device = make("b-1")
    assert device.as_attributes() is device.as_attributes()


def test_device_copies_and_freezes_extra_attributes() -> None:
    extra = {"vendor": "acme"}
    device = Device("b-1", "boiler", "north", "line-1", 0.0, 0.0, "1.0", extra)
    extra["vendor"] = "changed"
    assert device.attrs["vendor"] == "acme"
    with pytest.raises(TypeError):
        device.attrs["vendor"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        device.site = "south"  # type: ignore[misc]


def test_device_defaults_to_no_extra_attributes_and_is_hashable() -> None:
    device = Device("b-1", "boiler", "north", "line-1", 0.0, 0.0, "1.0")
    assert dict(device.attrs) == {}
    assert device == Device("b-1", "boiler", "north", "line-1", 0.0, 0.0, "1.0")
    assert len({device, Device("b-1", "boiler", "north", "line-1", 0.0, 0.0, "1.0")}) == 1
    assert device != make("b-1", vendor="acme")


def test_device_survives_pickle_deepcopy_and_asdict() -> None:
    device = make("b-1", vendor="acme")
    device.as_attributes()
    assert pickle.loads(pickle.dumps(device)) == device
    assert copy.deepcopy(device) == device
    assert dataclasses.asdict(device)["attrs"] == {"vendor": "acme"}
    assert repr(device.attrs) == "FrozenAttributes({'vendor': 'acme'})"
    assert FrozenAttributes() == {}
    assert list(FrozenAttributes({"a": 1})) == ["a"]


def test_device_refuses_extra_attributes_that_shadow_core_ones() -> None:
    with pytest.raises(ValueError, match="site"):
        Device("b-1", "boiler", "north", "line-1", 0.0, 0.0, "1.0", {"site": "south"})


@pytest.mark.parametrize("bad_id", ["", None, 7])
def test_device_needs_a_non_empty_string_id(bad_id: object) -> None:
    with pytest.raises(ValueError, match="device id"):
        Device(bad_id, "boiler", "north", "line-1", 0.0, 0.0, "1.0")  # type: ignore[arg-type]


# -- DeviceRegistry --------------------------------------------------------------------------------------------


@pytest.fixture()
def registry() -> DeviceRegistry:
    return DeviceRegistry(
        [
            make("b-3", "south", vendor="acme"),
            make("b-1", "north", vendor="acme"),
            make("b-2", "north", vendor="other", type="pump"),
        ]
    )


def test_registry_basics(registry: DeviceRegistry) -> None:
    assert len(registry) == 3
    assert [d.id for d in registry] == ["b-1", "b-2", "b-3"]
    assert "b-1" in registry
    assert "nope" not in registry
    assert 42 not in registry
    assert registry.get("b-2") is not None
    assert registry.get("nope") is None
    assert registry.sites() == ["north", "south"]
    assert repr(registry) == "DeviceRegistry(3 devices, 2 sites)"


def test_registry_contains_device_only_if_identical(registry: DeviceRegistry) -> None:
    device = registry.get("b-1")
    assert device in registry
    assert make("b-1", "elsewhere") not in registry


def test_registry_add_and_duplicate(registry: DeviceRegistry) -> None:
    before = registry.version
    registry.add(make("a-0", "east"))
    assert registry.version > before
    assert next(d.id for d in registry) == "a-0"
    with pytest.raises(ValueError, match="already registered"):
        registry.add(make("a-0"))


def test_registry_remove(registry: DeviceRegistry) -> None:
    removed = registry.remove("b-3")
    assert removed.id == "b-3"
    assert "b-3" not in registry
    assert registry.by_site("south") == []
    assert registry.sites() == ["north"]
    assert [d.id for d in registry] == ["b-1", "b-2"]
    with pytest.raises(KeyError, match="unknown device"):
        registry.remove("b-3")


def test_registry_attributes(registry: DeviceRegistry) -> None:
    attributes = registry.attributes("b-1")
    assert attributes["vendor"] == "acme"
    assert attributes["site"] == "north"
    with pytest.raises(TypeError):
        attributes["site"] = "x"  # type: ignore[index]
    unknown = registry.attributes("nope")
    assert isinstance(unknown, Mapping)
    assert dict(unknown) == {}


def test_registry_select_is_sorted_by_id(registry: DeviceRegistry) -> None:
    acme = registry.select(lambda a: a.get("vendor") == "acme")
    assert [d.id for d in acme] == ["b-1", "b-3"]
    pumps = registry.select(lambda a: a["type"] == "pump")
    assert [d.id for d in pumps] == ["b-2"]
    assert registry.select(lambda a: False) == []


def test_registry_by_site(registry: DeviceRegistry) -> None:
    assert [d.id for d in registry.by_site("north")] == ["b-1", "b-2"]
    assert [d.id for d in registry.by_site("south")] == ["b-3"]
    assert registry.by_site("mars") == []


def test_registry_update_moves_site_membership(registry: DeviceRegistry) -> None:
    version = registry.version
    updated = registry.update("b-1", site="south", firmware="3.0.0", vendor="new", colour="red")
    assert registry.version > version
    assert updated.site == "south"
    assert updated.firmware == "3.0.0"
    assert dict(updated.attrs) == {"vendor": "new", "colour": "red"}
    assert registry.get("b-1") is updated
    assert [d.id for d in registry.by_site("north")] == ["b-2"]
    assert [d.id for d in registry.by_site("south")] == ["b-1", "b-3"]
    assert registry.attributes("b-1")["colour"] == "red"
    assert [d.id for d in registry.select(lambda a: a["site"] == "south")] == ["b-1", "b-3"]


def test_registry_update_without_extras_keeps_attrs(registry: DeviceRegistry) -> None:
    updated = registry.update("b-2", group="line-9")
    assert updated.group == "line-9"
    assert dict(updated.attrs) == {"vendor": "other"}


def test_registry_update_refuses_id_and_unknown_devices(registry: DeviceRegistry) -> None:
    with pytest.raises(ValueError, match="cannot update id"):
        registry.update("b-1", id="b-9")
    with pytest.raises(ValueError, match="attrs"):
        registry.update("b-1", attrs={})
    with pytest.raises(KeyError):
        registry.update("nope", site="x")


def test_empty_registry() -> None:
    registry = DeviceRegistry()
    assert len(registry) == 0
    assert list(registry) == []
    assert registry.version == 0
