"""A safe file format for fitted estimators: JSON configuration plus tensor-only weights.

Pickle (``joblib.dump``, ``pickle.dump``) runs code when a file is loaded, so a pickled
model is only as trustworthy as its sender. The format here never unpickles anything:

- the file is a zip archive of two members: ``skneuralode.json`` (format version,
  estimator class, constructor arguments, fitted attributes, the torch module's plain
  attributes) and ``weights.pt`` (the module's ``state_dict``, read back with
  ``torch.load(weights_only=True)``, which only rebuilds tensors);
- values are written with explicit type tags and read back by a decoder that builds only
  plain data, numpy arrays of numeric dtypes and a fixed list of skneuralode records;
- callables (``known``, ``feature_map``, callbacks) and estimator classes outside
  skneuralode are stored by import path (``"package.module:function"``) and imported
  only when the caller allows it (``allow_imports``), because importing runs code;
- the torch module is rebuilt from the constructor arguments by the estimator's own
  ``_new_model`` (from a data-free skeleton of the training problem) and then takes the
  stored weights, so the format works for every :class:`BaseODERegressor` subclass.

Format versions: a reader accepts every version up to :data:`FORMAT_VERSION`; a file
from a newer version is refused with a clear error. Constructor arguments that an older
file lacks take their defaults, so later (patch) releases keep loading older files.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import pickle
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._base import BaseODERegressor
from ._optimisation import StageResult
from ._problem import Scaling, TrainingProblem
from ._threads import seeded_global_rng

FORMAT_NAME = "skneuralode-model"
FORMAT_VERSION = 1
CONFIG_MEMBER = "skneuralode.json"
WEIGHTS_MEMBER = "weights.pt"
_MAX_CONFIG_BYTES = 256 * 2**20

# The only records the decoder builds besides plain data (name in the file -> class).
_RECORDS: dict[str, type] = {"Scaling": Scaling, "StageResult": StageResult}
_ARRAY_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64"}
)
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
# Constructor arguments that only matter while training: dropped (with a warning) when
# they cannot be stored, instead of refusing to save.
_TRAINING_ONLY = frozenset({"callbacks"})


class _Unstorable(ValueError):
    """A value the format cannot represent without pickle."""


# ------------------------------------------------------------------------- encoding
def import_path(obj: Any) -> str:
    """``"module:qualified.name"`` under which ``obj`` can be imported back.

    Raises
    ------
    ValueError
        If importing that path does not give ``obj`` back (lambdas, closures, objects
        defined inside functions, instances of callable classes).
    """
    module = getattr(obj, "__module__", None)
    names = [getattr(obj, "__qualname__", None), getattr(obj, "__name__", None)]
    candidates = [f"{module}:{name}" for name in names if module and name and "<" not in name]
    for path in dict.fromkeys(candidates):  # e.g. torch.sin: its __qualname__ is internal
        try:
            if _resolve(path) is obj:
                return path
        except (ImportError, AttributeError):
            continue
    raise _Unstorable(
        f"{obj!r} cannot be imported back by name (a lambda, a closure, an instance or "
        "an object defined inside a function); define it as a function at module level"
    )


def _encode(value: Any) -> Any:
    """A JSON value with type tags; every JSON object is ``{tag: payload}``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item())
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _ARRAY_DTYPES:
            raise _Unstorable(f"arrays of dtype {value.dtype} cannot be stored")
        return {
            "__ndarray__": {
                "dtype": value.dtype.name,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
        }
    if isinstance(value, np.random.RandomState):
        return {"__random_state__": [_encode(part) for part in value.get_state()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _RECORDS.get(name) is not type(value):
            raise _Unstorable(f"{type(value).__name__} objects cannot be stored")
        fields = {
            field.name: _encode(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
        return {"__record__": {"type": name, "fields": fields}}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise _Unstorable("mappings with keys that are not strings cannot be stored")
        return {"__dict__": {key: _encode(item) for key, item in value.items()}}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if callable(value):
        return {"__import__": import_path(value)}
    raise _Unstorable(f"{type(value).__name__} objects cannot be stored")


def _encode_params(estimator: BaseODERegressor) -> dict[str, Any]:
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        try:
            params[name] = _encode(value)
        except _Unstorable as error:
            if name in _TRAINING_ONLY:
                warnings.warn(
                    f"{name} not saved ({error}); set it again before training further.",
                    UserWarning,
                    stacklevel=4,
                )
                params[name] = None
                continue
            raise ValueError(
                f"Cannot save {type(estimator).__name__}: {name}={value!r} cannot be stored "
                f"without pickle ({error}). Use joblib.dump for such models."
            ) from None
    return params


def _fitted_attributes(estimator: BaseODERegressor) -> dict[str, Any]:
    """Fitted attributes (names ending in ``_``) except the torch module."""
    encoded, skipped = {}, []
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("__") or name == "module_":
            continue
        try:
            encoded[name] = _encode(value)
        except _Unstorable:
            skipped.append(name)
    if skipped:
        warnings.warn(
            f"Fitted attributes {skipped} hold objects the safe format cannot store and are "
            "not saved (recompute them after loading, or use joblib.dump).",
            UserWarning,
            stacklevel=4,
        )
    return encoded


def _module_attributes(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Plain (int, float, bool, str, None) attributes of every submodule, by module path.

    Some settings live outside ``state_dict`` (e.g. the time scaling as Python floats);
    they are restored exactly after the module is rebuilt.
    """
    attributes: dict[str, dict[str, Any]] = {}
    for path, submodule in module.named_modules():
        plain = {
            name: value
            for name, value in vars(submodule).items()
            if not name.startswith("_")
            and name != "training"
            and (value is None or type(value) in (bool, int, float, str))
        }
        if plain:
            attributes[path] = plain
    return attributes


def save_estimator(estimator: BaseODERegressor, path: str | os.PathLike[str]) -> None:
    """Write ``estimator`` to ``path`` in the safe format (see the module docstring)."""
    from . import __version__

    fitted = hasattr(estimator, "module_")
    config: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skneuralode_version": __version__,
        "torch_version": torch.__version__,
        "estimator": _class_path(type(estimator)),
        "params": _encode_params(estimator),
        "fitted": _fitted_attributes(estimator) if fitted else None,
        "module": None,
    }
    weights = b""
    if fitted:
        module = estimator.module_
        # clone: a view would store its whole storage (e.g. all training times)
        state = {name: t.detach().cpu().clone() for name, t in module.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        weights = buffer.getvalue()
        config["module"] = {
            "dtype": str(module.initial_states.dtype).removeprefix("torch."),
            "attributes": _module_attributes(module),
        }
    text = json.dumps(config, allow_nan=True, separators=(",", ":"))
    target = Path(path)
    # A fresh file next to the target (mode 0o666 less the umask, unlike mkstemp's 0o600),
    # moved over it only when complete.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(stream, "w") as archive:
            archive.writestr(CONFIG_MEMBER, text, compress_type=zipfile.ZIP_DEFLATED)
            if fitted:
                archive.writestr(WEIGHTS_MEMBER, weights, compress_type=zipfile.ZIP_DEFLATED)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _class_path(cls: type) -> str:
    if _own_estimator_classes().get(f"{cls.__module__}:{cls.__qualname__}") is cls:
        return f"{cls.__module__}:{cls.__qualname__}"
    return import_path(cls)


# ------------------------------------------------------------------------- decoding
def _resolve(path: str) -> Any:
    """Import ``"module:qualified.name"`` and return the object."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _own_estimator_classes() -> dict[str, type]:
    """skneuralode's public estimators by import path: loadable without permission."""
    from . import NeuralODERegressor, UniversalODERegressor

    return {
        f"{cls.__module__}:{cls.__qualname__}": cls
        for cls in (NeuralODERegressor, UniversalODERegressor)
    }


class _Decoder:
    """Turns the tagged JSON back into values, importing only what is allowed."""

    def __init__(self, allow_imports: bool | Iterable[str]) -> None:
        if isinstance(allow_imports, str):
            allow_imports = [allow_imports]
        self.allow_all = allow_imports is True
        self.allowed = () if isinstance(allow_imports, bool) else tuple(allow_imports)

    def is_allowed(self, path: str) -> bool:
        if self.allow_all:
            return True
        dotted = path.replace(":", ".")
        return any(dotted == entry or dotted.startswith(entry + ".") for entry in self.allowed)

    def check_imports(self, paths: dict[str, str]) -> None:
        """Refuse, naming every path the caller has not allowed, before importing any."""
        refused = {where: path for where, path in paths.items() if not self.is_allowed(path)}
        if refused:
            listed = ", ".join(f"{where} -> {path!r}" for where, path in refused.items())
            names = sorted({path.replace(":", ".") for path in refused.values()})
            raise ValueError(
                f"This model file refers to code by import path ({listed}). Importing runs "
                "that module's code, so it is done only if you trust the file and allow it: "
                f"skneuralode.load(path, allow_imports={names!r})."
            )

    def decode(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"Malformed model file: unexpected value at {where}.")
        ((tag, payload),) = value.items()
        if tag == "__dict__" and isinstance(payload, dict):
            return {key: self.decode(item, f"{where}[{key!r}]") for key, item in payload.items()}
        if tag == "__tuple__" and isinstance(payload, list):
            return tuple(self.decode(item, f"{where}[{i}]") for i, item in enumerate(payload))
        if tag == "__ndarray__" and isinstance(payload, dict):
            return _decode_array(payload, where)
        if tag == "__record__" and isinstance(payload, dict):
            record = _RECORDS.get(payload.get("type"))  # type: ignore[arg-type]
            fields = payload.get("fields")
            if record is None or not isinstance(fields, dict):
                raise ValueError(f"Malformed model file: unknown record at {where}.")
            decoded = {name: self.decode(item, f"{where}.{name}") for name, item in fields.items()}
            try:
                return record(**decoded)
            except TypeError as error:
                raise ValueError(
                    f"Malformed model file: bad record at {where} ({error})."
                ) from None
        if tag == "__random_state__" and isinstance(payload, list):
            state = tuple(self.decode(item, where) for item in payload)
            generator = np.random.RandomState()
            try:
                generator.set_state(state)
            except (TypeError, ValueError) as error:
                raise ValueError(f"Malformed model file: bad random state at {where}.") from error
            return generator
        if tag == "__import__" and isinstance(payload, str):
            return self.resolve(payload, where)
        raise ValueError(f"Malformed model file: unknown tag {tag!r} at {where}.")

    def resolve(self, path: str, where: str) -> Any:
        if not self.is_allowed(path):  # check_imports ran first; this is a second guard
            self.check_imports({where: path})
        try:
            return _resolve(path)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f"The model file's {where} refers to {path!r}, which cannot be imported "
                f"here ({type(error).__name__}: {error})."
            ) from error


def _decode_array(payload: dict[str, Any], where: str) -> np.ndarray:
    dtype, shape, data = payload.get("dtype"), payload.get("shape"), payload.get("data")
    if (
        dtype not in _ARRAY_DTYPES
        or not isinstance(shape, list)
        or not all(isinstance(size, int) and size >= 0 for size in shape)
        or not isinstance(data, list)
        or len(data) != int(np.prod(shape, dtype=np.int64))
    ):
        raise ValueError(f"Malformed model file: bad array at {where}.")
    try:
        return np.array(data, dtype=dtype).reshape(shape)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Malformed model file: bad array at {where}.") from error


def _collect_imports(value: Any, where: str, found: dict[str, str]) -> None:
    """Every ``__import__`` path inside ``value``, keyed by where it appears."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _collect_imports(item, f"{where}[{i}]", found)
    elif isinstance(value, dict):
        if set(value) == {"__import__"} and isinstance(value["__import__"], str):
            found[where] = value["__import__"]
            return
        for key, item in value.items():
            _collect_imports(item, where if key.startswith("__") else f"{where}[{key!r}]", found)


def _read_archive(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if CONFIG_MEMBER not in members or set(members) - {CONFIG_MEMBER, WEIGHTS_MEMBER}:
                raise ValueError(f"{os.fspath(path)!r} is not a skneuralode model file.")
            if members[CONFIG_MEMBER].file_size > _MAX_CONFIG_BYTES:
                raise ValueError("Malformed model file: the configuration is implausibly large.")
            text = archive.read(CONFIG_MEMBER)
            weights = archive.read(WEIGHTS_MEMBER) if WEIGHTS_MEMBER in members else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not a valid skneuralode model file ({error})."
        ) from None
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Malformed model file: the configuration is not JSON ({error})."
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ValueError(f"{os.fspath(path)!r} is not a skneuralode model file.")
    return config, weights


def _check_version(config: dict[str, Any]) -> None:
    from . import __version__

    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"Malformed model file: format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"This model file has format version {version} (written by skneuralode "
            f"{config.get('skneuralode_version', '?')}); skneuralode {__version__} reads "
            f"format versions up to {FORMAT_VERSION}. Upgrade skneuralode to load it."
        )


def _read_weights(data: bytes) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch's remarks on odd pickles: noise here
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as error:
        raise ValueError(
            f"The model file's weights could not be read as plain tensors; the file is "
            f"damaged or was tampered with ({type(error).__name__}). Nothing was executed."
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in state.items()
    ):
        raise ValueError("Malformed model file: the weights are not a mapping of tensors.")
    return state


def _skeleton_problem(
    initial_states: torch.Tensor, initial_times: torch.Tensor, scaling: Scaling
) -> TrainingProblem:
    """A data-free stand-in for the training problem with the fitted shapes and scaling.

    ``_new_model`` reads shapes, scaling and reference states from the problem; every
    learned value is then overwritten by the stored weights.
    """
    n_traj, n_states = initial_states.shape
    times = torch.stack([initial_times, initial_times + 1.0], dim=1)  # (n_traj, 2)
    states = initial_states[:, None, :].expand(n_traj, 2, n_states).clone()
    ones = torch.ones_like(states)
    return TrainingProblem(
        times=times,
        observations=states,
        observed=ones,
        smoothed_states=states,
        smoothed_derivatives=torch.zeros_like(states),
        smoothing_weight=ones,
        lengths=np.full(n_traj, 2),
        shared_grid=bool(torch.all(times == times[:1])),
        noise_variance=0.0,
        scaling=scaling,
    )


def _rebuild_module(
    estimator: BaseODERegressor, state: dict[str, torch.Tensor], module_config: Any
) -> torch.nn.Module:
    if not isinstance(module_config, dict) or module_config.get("dtype") not in _TORCH_DTYPES:
        raise ValueError("Malformed model file: bad module description.")
    attributes = module_config.get("attributes")
    scaling = getattr(estimator, "_scaling_", None)
    n_states = getattr(estimator, "n_features_in_", None)
    if (
        not isinstance(scaling, Scaling)
        or not isinstance(n_states, int)
        or not isinstance(attributes, dict)
    ):
        raise ValueError("Malformed model file: fitted attributes are missing.")
    if "initial_states" not in state or "initial_times" not in state:
        raise ValueError("Malformed model file: the weights lack the initial states.")
    skeleton = _skeleton_problem(
        state["initial_states"][:, :n_states].to(torch.float64),
        state["initial_times"].to(torch.float64),
        scaling,
    )
    try:
        with seeded_global_rng(0):  # every learned value is overwritten below
            model = estimator._new_model(skeleton)
        model = model.to(dtype=_TORCH_DTYPES[module_config["dtype"]])
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as error:
        raise ValueError(
            f"The stored weights do not fit the {type(estimator).__name__} its arguments "
            f"describe; the file is damaged or tampered with ({error})."
        ) from None
    for path, values in attributes.items():
        try:
            submodule = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"Malformed model file: no submodule {path!r}.") from None
        if not isinstance(values, dict):
            raise ValueError(f"Malformed model file: bad attributes of {path!r}.")
        for name, value in values.items():
            if not hasattr(submodule, name) or not (
                value is None or type(value) in (bool, int, float, str)
            ):
                raise ValueError(f"Malformed model file: bad attribute {path}.{name}.")
            setattr(submodule, name, value)
    return model


def load(
    path: str | os.PathLike[str], *, allow_imports: bool | str | Iterable[str] = ()
) -> BaseODERegressor:
    """Load an estimator saved with :meth:`~skneuralode.NeuralODERegressor.save`.

    Loading never unpickles and never imports anything the caller did not allow; a
    damaged or tampered file raises ``ValueError``.

    Parameters
    ----------
    path : str or path-like
        A file written by ``save``.
    allow_imports : bool, str or iterable of str, default=()
        Code the file may import: its ``known``, ``feature_map`` and callbacks (and an
        estimator class outside skneuralode) are stored by import path, and importing
        runs the module's code. Give the dotted paths (or package prefixes, e.g.
        ``["mylab.physics"]``) you trust, or True to allow any. By default nothing is
        imported, and a file that needs an import is refused with the list of paths.

    Returns
    -------
    estimator : NeuralODERegressor, UniversalODERegressor or another BaseODERegressor
        Fitted if it was fitted when saved; it predicts on the CPU when the saving
        device (e.g. CUDA) is not available here.

    Raises
    ------
    ValueError
        If the file is not a skneuralode model, is damaged or tampered with, needs an
        import that was not allowed, or has a format version newer than this release
        reads.

    See Also
    --------
    joblib.load : Pickle-based loading (runs code from the file: trusted files only).

    Examples
    --------
    >>> import numpy as np, skneuralode, tempfile, pathlib
    >>> t = np.linspace(0, 2, 20)
    >>> est = skneuralode.NeuralODERegressor(hidden_layer_sizes=(8,), max_iter=30,
    ...                                      random_state=0, device="cpu")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "decay.skn"
    >>> est.fit(t, np.exp(-t)).save(path)
    >>> skneuralode.load(path).predict(np.array([0.0, 1.0])).shape
    (2,)
    """
    try:
        return _load(path, allow_imports)
    except RecursionError:  # absurdly nested JSON
        raise ValueError("Malformed model file: the configuration is nested too deeply.") from None


def _load(
    path: str | os.PathLike[str], allow_imports: bool | str | Iterable[str]
) -> BaseODERegressor:
    config, weights = _read_archive(path)
    _check_version(config)
    decoder = _Decoder(allow_imports)
    class_path = config.get("estimator")
    params, fitted = config.get("params"), config.get("fitted")
    if not isinstance(class_path, str) or not isinstance(params, dict):
        raise ValueError("Malformed model file: no estimator description.")
    cls = _own_estimator_classes().get(class_path)
    needed: dict[str, str] = {} if cls is not None else {"the estimator class": class_path}
    _collect_imports(params, "params", needed)
    _collect_imports(fitted, "fitted", needed)
    decoder.check_imports(needed)
    if cls is None:
        cls = decoder.resolve(class_path, "the estimator class")
        if not (isinstance(cls, type) and issubclass(cls, BaseODERegressor)):
            raise ValueError(f"{class_path!r} is not a skneuralode estimator class.")
    arguments = {name: decoder.decode(value, f"params[{name!r}]") for name, value in params.items()}
    unknown = sorted(set(arguments) - set(cls().get_params(deep=False)))
    if unknown:
        raise ValueError(
            f"The model file sets {unknown}, which {cls.__name__} of this skneuralode version "
            "does not have; load it with the version that wrote it."
        )
    estimator = cls(**arguments)
    if fitted is None:
        return estimator
    if not isinstance(fitted, dict) or weights is None:
        raise ValueError("Malformed model file: fitted attributes without weights.")
    for name, value in fitted.items():
        if (
            not (isinstance(name, str) and name.isidentifier() and name.endswith("_"))
            or name.startswith("__")
            or name in arguments
        ):
            raise ValueError(f"Malformed model file: bad fitted attribute {name!r}.")
        setattr(estimator, name, decoder.decode(value, name))
    estimator.module_ = _rebuild_module(estimator, _read_weights(weights), config.get("module"))
    return estimator
