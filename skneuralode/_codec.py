"""Values of the safe file format: tagged JSON in, plain data and trusted objects out.

The encoder writes plain data (None, bool, int, float, str, lists, string-keyed dicts),
tuples, numpy arrays of numeric dtypes, numpy random states, a fixed list of
skneuralode records (dataclasses, by their fields, and settings objects with
scikit-learn's ``get_params``, by their parameters) and callables by import path. The
decoder builds nothing else.

Callables are trusted as objects, not as strings. ``allow_imports`` names modules (or
objects) the caller trusts; a stored path ``"module:qualified.name"`` is imported only if
its module is trusted, and the object it names must be *defined* there: its
``__module__`` must be that module and every step of the name must be a class of that
module, so ``"mylab:os.system"`` never reaches ``os.system`` through ``mylab``'s imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

_ARRAY_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64"}
)
MAX_ARRAY_ELEMENTS = 10_000_000  # arrays in the JSON part (scaling, statistics, spans)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^({_NAME}(?:\.{_NAME})*):({_NAME}(?:\.{_NAME})*)$")


class Unstorable(ValueError):
    """A value the format cannot represent without pickle."""


# ------------------------------------------------------------------------- imports
def _split_path(path: str) -> tuple[str, str]:
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:name'.")
    module_name, qualname = match.groups()
    if any(part.startswith("__") for part in qualname.split(".")):
        raise ValueError(f"{path!r} names a special attribute; only functions and classes load.")
    return module_name, qualname


def resolve_defined(path: str) -> Any:
    """Import ``"module:qualified.name"`` and return the object defined there.

    Every step of ``qualified.name`` but the last must be a class defined in ``module``,
    and the object itself must be defined in ``module`` (its ``__module__``): an
    attribute that ``module`` merely imported from elsewhere is refused.

    Raises
    ------
    ValueError
        If the path is malformed, cannot be imported or names an object defined elsewhere.
    """
    module_name, qualname = _split_path(path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{path!r} cannot be imported here ({error}).") from None
    parts = qualname.split(".")
    for index, part in enumerate(parts):
        obj = getattr(obj, part, None)
        last = index == len(parts) - 1
        if (
            obj is None
            or isinstance(obj, types.ModuleType)
            or (not last and not isinstance(obj, type))
        ):
            raise ValueError(
                f"{path!r} does not name a function or class of {module_name!r} "
                f"({'.'.join(parts[: index + 1])} is not one)."
            )
    defined_in = getattr(obj, "__module__", None)
    if defined_in != module_name:
        raise ValueError(
            f"{path!r} is not defined in {module_name!r} (it comes from {defined_in!r}); only "
            "what an allowed module defines is trusted, never what it imports."
        )
    return obj


def import_path(obj: Any) -> str:
    """``"module:qualified.name"`` under which ``obj`` is found again by :func:`resolve_defined`.

    Raises
    ------
    Unstorable
        If that path does not give ``obj`` back (lambdas, closures, objects defined inside
        functions, instances of callable classes, objects re-exported under another name).
    """
    module = getattr(obj, "__module__", None)
    names = [getattr(obj, "__qualname__", None), getattr(obj, "__name__", None)]
    for name in dict.fromkeys(name for name in names if isinstance(name, str)):
        path = f"{module}:{name}"
        try:
            if resolve_defined(path) is obj:
                return path
        except ValueError:
            continue
    raise Unstorable(
        f"{obj!r} cannot be imported back by name (a lambda, a closure, an instance or "
        "an object defined inside a function); define it as a function at module level"
    )


class ImportPolicy:
    """What the caller trusts: ``True`` (anything) or dotted module or object names."""

    def __init__(self, allow_imports: bool | str | Iterable[str]) -> None:
        if isinstance(allow_imports, str):
            allow_imports = [allow_imports]
        self.allow_all = allow_imports is True
        entries = () if isinstance(allow_imports, bool) else tuple(allow_imports)
        for entry in entries:
            if not isinstance(entry, str) or not re.fullmatch(rf"{_NAME}(\.{_NAME})*", entry):
                raise ValueError(f"allow_imports entries must be dotted names, got {entry!r}.")
        self.entries = entries

    def allows(self, path: str) -> bool:
        """Whether the module of ``path`` (or the object itself) is trusted."""
        if self.allow_all:
            return True
        module_name, qualname = _split_path(path)
        dotted = f"{module_name}.{qualname}"
        return any(
            name == entry or name.startswith(entry + ".")
            for entry in self.entries
            for name in (module_name, dotted)
        )

    def check(self, paths: Mapping[str, str]) -> None:
        """Refuse, naming every path not trusted, before importing any."""
        refused = {where: path for where, path in paths.items() if not self.allows(path)}
        if not refused:
            return
        listed = ", ".join(f"{where} -> {path!r}" for where, path in refused.items())
        suggested = sorted({_suggestion(path) for path in refused.values()})
        raise ValueError(
            f"This model file refers to code by import path ({listed}). Importing runs "
            "that module's code, so it is done only if you trust the file and allow it: "
            f"skneuralode.load(path, allow_imports={suggested!r})."
        )

    def resolve(self, path: str, where: str) -> Any:
        self.check({where: path})
        try:
            return resolve_defined(path)
        except ValueError as error:
            raise ValueError(f"The model file's {where}: {error}") from None


def _suggestion(path: str) -> str:
    """What to allow for ``path``: the object, or its module if the name is nested."""
    try:
        module_name, qualname = _split_path(path)
    except ValueError:
        return path
    return module_name if "." in qualname else f"{module_name}.{qualname}"


# ------------------------------------------------------------------- encode / decode
def record_fields(record_type: type) -> list[str]:
    """The stored fields of a record: its dataclass fields without a leading underscore."""
    return [
        field.name for field in dataclasses.fields(record_type) if not field.name.startswith("_")
    ]


def _is_settings_type(record_type: type) -> bool:
    """A settings object (``get_params``, built from its parameters), not a dataclass."""
    return not dataclasses.is_dataclass(record_type) and hasattr(record_type, "get_params")


def encode(value: Any, records: Mapping[str, type]) -> Any:
    """A JSON value with type tags; every JSON object is ``{tag: payload}``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return encode(value.item(), records)
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _ARRAY_DTYPES:
            raise Unstorable(f"arrays of dtype {value.dtype} cannot be stored")
        payload = {"dtype": value.dtype.name, "shape": list(value.shape)}
        return {"__ndarray__": {**payload, "data": value.ravel().tolist()}}
    if isinstance(value, np.random.RandomState):
        return {"__random_state__": [encode(part, records) for part in value.get_state()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if records.get(name) is not type(value):
            raise Unstorable(f"{name} objects cannot be stored")
        fields = {
            field: encode(getattr(value, field), records) for field in record_fields(type(value))
        }
        return {"__record__": {"type": name, "fields": fields}}
    if _is_settings_type(type(value)) and records.get(type(value).__name__) is type(value):
        params = {key: encode(item, records) for key, item in value.get_params(deep=False).items()}
        return {"__settings__": {"type": type(value).__name__, "params": params}}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise Unstorable("mappings with keys that are not strings cannot be stored")
        return {"__dict__": {key: encode(item, records) for key, item in value.items()}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(item, records) for item in value]}
    if isinstance(value, list):
        return [encode(item, records) for item in value]
    if callable(value):
        return {"__import__": import_path(value)}
    raise Unstorable(f"{type(value).__name__} objects cannot be stored")


def collect_imports(value: Any, where: str, found: dict[str, str]) -> None:
    """Every ``__import__`` path inside the JSON ``value``, keyed by where it appears."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            collect_imports(item, f"{where}[{i}]", found)
    elif isinstance(value, dict):
        if set(value) == {"__import__"}:
            found[where] = value["__import__"]
            return
        for key, item in value.items():
            collect_imports(item, where if key.startswith("__") else f"{where}[{key!r}]", found)


def _decode_array(payload: Any, where: str) -> np.ndarray:
    if not isinstance(payload, dict):
        raise ValueError(f"Malformed model file: bad array at {where}.")
    dtype, shape, data = payload.get("dtype"), payload.get("shape"), payload.get("data")
    if (
        dtype not in _ARRAY_DTYPES
        or not isinstance(shape, list)
        or len(shape) > 32
        or not all(type(size) is int and 0 <= size <= MAX_ARRAY_ELEMENTS for size in shape)
        or math.prod(shape) > MAX_ARRAY_ELEMENTS
        or not isinstance(data, list)
        or len(data) != math.prod(shape)
        or not all(type(item) in (int, float, bool) for item in data)
    ):
        raise ValueError(f"Malformed model file: bad array at {where}.")
    try:
        return np.array(data, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"Malformed model file: bad array at {where}.") from None


class Decoder:
    """Turns tagged JSON back into values, importing only what ``policy`` trusts."""

    def __init__(self, policy: ImportPolicy, records: Mapping[str, type]) -> None:
        self.policy = policy
        self.records = records
        self._tags: dict[str, Callable[[Any, str], Any]] = {
            "__dict__": self._mapping,
            "__tuple__": self._tuple,
            "__ndarray__": _decode_array,
            "__record__": self._record,
            "__settings__": self._settings,
            "__random_state__": self._random_state,
            "__import__": self._import,
        }

    def decode(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"Malformed model file: unexpected value at {where}.")
        ((tag, payload),) = value.items()
        handler = self._tags.get(tag)
        if handler is None:
            raise ValueError(f"Malformed model file: unknown tag {tag!r} at {where}.")
        return handler(payload, where)

    def _mapping(self, payload: Any, where: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ValueError(f"Malformed model file: bad mapping at {where}.")
        return {key: self.decode(item, f"{where}[{key!r}]") for key, item in payload.items()}

    def _tuple(self, payload: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(payload, list):
            raise ValueError(f"Malformed model file: bad tuple at {where}.")
        return tuple(self.decode(item, f"{where}[{i}]") for i, item in enumerate(payload))

    def _record(self, payload: Any, where: str) -> Any:
        record = self.records.get(payload.get("type")) if isinstance(payload, dict) else None
        fields = payload.get("fields") if isinstance(payload, dict) else None
        if record is None or not dataclasses.is_dataclass(record) or not isinstance(fields, dict):
            raise ValueError(f"Malformed model file: unknown record at {where}.")
        unknown = set(fields) - set(record_fields(record))
        if unknown:
            raise ValueError(f"Malformed model file: {record.__name__} has no {sorted(unknown)}.")
        decoded = {name: self.decode(item, f"{where}.{name}") for name, item in fields.items()}
        try:
            return record(**decoded)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Malformed model file: bad record at {where} ({error}).") from None

    def _settings(self, payload: Any, where: str) -> Any:
        settings = self.records.get(payload.get("type")) if isinstance(payload, dict) else None
        params = payload.get("params") if isinstance(payload, dict) else None
        if settings is None or not _is_settings_type(settings) or not isinstance(params, dict):
            raise ValueError(f"Malformed model file: unknown settings at {where}.")
        unknown = set(params) - set(settings().get_params(deep=False))
        if unknown:
            raise ValueError(
                f"Malformed model file: {settings.__name__} has no {sorted(unknown)}; load it "
                "with the version that wrote it."
            )
        decoded = {name: self.decode(item, f"{where}.{name}") for name, item in params.items()}
        return settings(**decoded)  # validated with the estimator's arguments

    def _random_state(self, payload: Any, where: str) -> np.random.RandomState:
        if not isinstance(payload, list):
            raise ValueError(f"Malformed model file: bad random state at {where}.")
        state = tuple(self.decode(item, where) for item in payload)
        generator = np.random.RandomState()
        try:
            generator.set_state(state)
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"Malformed model file: bad random state at {where}.") from None
        return generator

    def _import(self, payload: Any, where: str) -> Any:
        if not isinstance(payload, str):
            raise ValueError(f"Malformed model file: bad import path at {where}.")
        return self.policy.resolve(payload, where)
