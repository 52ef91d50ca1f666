"""Devices and the registry that holds them.

A :class:`Device` is an immutable record (id, type, site, group, position, firmware and extra attributes).
A :class:`DeviceRegistry` holds devices by id, answers selections (by predicate over attributes, by site) in id
order, and replaces a device on :meth:`DeviceRegistry.update` while keeping its site index in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

__all__ = ["Device", "DeviceRegistry", "FrozenAttributes", "CORE_ATTRIBUTES"]

#: The attribute names every device has; extra attributes may not reuse them.
CORE_ATTRIBUTES: tuple[str, ...] = ("id", "type", "site", "group", "lat", "lon", "firmware")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class FrozenAttributes(Mapping[str, Any]):
    """A read-only copy of a mapping of extra attributes (picklable and deep-copyable, unlike a mappingproxy)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenAttributes({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenAttributes], tuple[dict[str, Any]]]:
        return (FrozenAttributes, (self._data,))


@dataclass(frozen=True)
class Device:
    """One device: ``id``, ``type``, ``site``, ``group``, position (``lat``/``lon``), ``firmware``, extra ``attrs``.

    ``attrs`` is copied into a read-only :class:`FrozenAttributes`; its keys may not repeat a core attribute name
    (ValueError).
    """

    id: str
    type: str
    site: str
    group: str
    lat: float
    lon: float
    firmware: str
    attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"a device id must be a non-empty string, got {self.id!r}")
        clash = sorted(set(self.attrs) & set(CORE_ATTRIBUTES))
        if clash:
            raise ValueError(f"device {self.id!r}: extra attribute(s) {', '.join(clash)} repeat a core attribute name")
        object.__setattr__(self, "attrs", FrozenAttributes(self.attrs))

    @cached_property
    def _attributes(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "site": self.site,
            "group": self.group,
            "lat": self.lat,
            "lon": self.lon,
            "firmware": self.firmware,
            **self.attrs,
        }

    def as_attributes(self) -> dict[str, Any]:
        """Return ``{"id", "type", "site", "group", "lat", "lon", "firmware", **attrs}``.

        The dict is built on first use and shared between calls: treat it as read-only (copy it to change it).
        """
        return self._attributes


_FIELD_NAMES = frozenset(f.name for f in fields(Device)) - {"attrs"}


class DeviceRegistry:
    """Devices by id, with id-ordered iteration and selections and a site index that follows updates.

    ``version`` increases on every change (add, remove, update) so holders of derived data can tell when to
    refresh it.
    """

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        """Start with ``devices`` (any iterable; ids must be unique)."""
        self._devices: dict[str, Device] = {}
        self._by_site: dict[str, set[str]] = {}
        self._ordered: list[Device] | None = None
        self.version = 0
        for device in devices:
            self.add(device)

    def add(self, device: Device) -> None:
        """Register ``device``; raise ValueError if its id is already registered."""
        if device.id in self._devices:
            raise ValueError(f"device {device.id!r} is already registered")
        self._store(device)

    def remove(self, device_id: str) -> Device:
        """Unregister the device with ``device_id`` and return it; raise KeyError if it is unknown."""
        device = self._devices.pop(device_id, None)
        if device is None:
            raise KeyError(f"unknown device {device_id!r}")
        self._unindex(device)
        self._changed()
        return device

    def get(self, device_id: str) -> Device | None:
        """Return the device with ``device_id``, or None."""
        return self._devices.get(device_id)

    def attributes(self, device_id: str) -> Mapping[str, Any]:
        """Return the read-only attribute mapping of ``device_id`` (see :meth:`Device.as_attributes`), or ``{}``."""
        device = self._devices.get(device_id)
        if device is None:
            return _EMPTY
        return MappingProxyType(device.as_attributes())

    def select(self, predicate: Callable[[Mapping[str, Any]], bool]) -> list[Device]:
        """Return the devices whose attribute mapping satisfies ``predicate``, in id order."""
        return [device for device in self._sorted() if predicate(device.as_attributes())]

    def by_site(self, site: str) -> list[Device]:
        """Return the devices at ``site``, in id order (empty for an unknown site)."""
        ids = self._by_site.get(site, ())
        return [self._devices[device_id] for device_id in sorted(ids)]

    def sites(self) -> list[str]:
        """Return the sites that have at least one device, sorted."""
        return sorted(self._by_site)

    def update(self, device_id: str, **changes: Any) -> Device:
        """Replace the device ``device_id`` with a copy carrying ``changes`` and return the new device.

        Keywords naming a core attribute (``type``, ``site``, ``group``, ``lat``, ``lon``, ``firmware``) replace it;
        any other keyword sets an extra attribute. ``id`` and ``attrs`` cannot be changed this way (ValueError);
        an unknown device raises KeyError. Site membership follows the change.
        """
        device = self._devices.get(device_id)
        if device is None:
            raise KeyError(f"unknown device {device_id!r}")
        refused = sorted({"id", "attrs"} & set(changes))
        if refused:
            raise ValueError(
                f"device {device_id!r}: cannot update {', '.join(refused)} (pass extra attributes as keywords)"
            )
        core = {key: value for key, value in changes.items() if key in _FIELD_NAMES}
        extra = {key: value for key, value in changes.items() if key not in _FIELD_NAMES}
        attrs = {**device.attrs, **extra} if extra else device.attrs
        updated = replace(device, attrs=attrs, **core)
        self._unindex(device)
        self._store(updated)
        return updated

    def __iter__(self) -> Iterator[Device]:
        """Iterate over the devices in id order."""
        return iter(self._sorted())

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, item: object) -> bool:
        """True for a registered id, or for a :class:`Device` equal to the registered one with its id."""
        if isinstance(item, Device):
            return self._devices.get(item.id) == item
        return isinstance(item, str) and item in self._devices

    def __repr__(self) -> str:
        return f"DeviceRegistry({len(self)} devices, {len(self._by_site)} sites)"

    def _store(self, device: Device) -> None:
        self._devices[device.id] = device
        self._by_site.setdefault(device.site, set()).add(device.id)
        self._changed()

    def _unindex(self, device: Device) -> None:
        members = self._by_site[device.site]  # every stored device is indexed under its site
        members.discard(device.id)
        if not members:
            del self._by_site[device.site]

    def _changed(self) -> None:
        self._ordered = None
        self.version += 1

    def _sorted(self) -> list[Device]:
        if self._ordered is None:
            self._ordered = [self._devices[key] for key in sorted(self._devices)]
        return self._ordered
