"""Plain data with attribute access: what system_info(), runtime() and plan() return."""
from __future__ import annotations

import copy
import json


def _wrap(value):
    if isinstance(value, dict):
        return Info(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Info:
    """A JSON object with attribute access (`info.facts.cpu.physical_cores`), item access
    (`info["facts"]`) and `.to_dict()` (a deep copy of the plain JSON data)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name):
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r} "
                                 f"(fields: {', '.join(sorted(self._data))})") from None

    def __setattr__(self, name, value):
        raise AttributeError("inferenceutils.Info is read-only")

    def __getitem__(self, key):
        return _wrap(self._data[key])

    def __contains__(self, key):
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __dir__(self):
        return sorted(set(self._data) | {"to_dict", "to_json", "get", "keys"})

    def get(self, key, default=None):
        return _wrap(self._data.get(key, default))

    def keys(self):
        return self._data.keys()

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def to_json(self, indent=2) -> str:
        return json.dumps(self._data, indent=indent)

    def __eq__(self, other):
        if isinstance(other, Info):
            return self._data == other._data
        if isinstance(other, dict):
            return self._data == other
        return NotImplemented

    def __repr__(self):
        return f"Info({json.dumps(self._data, indent=2)})"
