"""A safe file format for fitted estimators: JSON description plus tensor-only weights.

Pickle (``joblib.dump``, ``pickle.dump``) runs code when a file is loaded, so a pickled
model is only as trustworthy as its sender. The format here never unpickles anything and
never runs code the caller did not allow:

- the file is a zip archive of two members: ``skneuralode.json`` (format version,
  estimator class, constructor arguments, the model's data-free specification and the
  fitted attributes that are not derived from the model) and ``weights.pt`` (the
  module's ``state_dict``, read back with ``torch.load(weights_only=True)``);
- values are decoded by :mod:`~skneuralode._codec`, which builds only plain data, numeric
  arrays and a fixed list of records, and trusts callables as objects defined in an
  allowed module, never as strings;
- the constructor arguments pass the same validation as ``fit``; the specification is
  checked against the library's bounds, and its parameter count against the size of the
  stored weights, *before* the model is built, so a small file cannot make the loader
  allocate much more than it holds;
- the model is rebuilt from the specification by the same constructor ``fit`` uses
  (:class:`~skneuralode._vector_fields.ODEModel`), without calling any user code, and
  takes the stored weights, whose names and shapes must match exactly;
- only the fitted attributes an estimator class declares are read; the others
  (``y0_``, ``t0_``, ``params_``...) are derived from the model again.

Format versions: a reader accepts every version up to :data:`FORMAT_VERSION` (version 1
files are migrated by :mod:`~skneuralode._format1`; the flat solver and stage settings
of versions 1 and 2 become today's settings objects in :mod:`~skneuralode._flat_settings`);
a newer file is refused clearly. Constructor arguments that an older file lacks take
their defaults. Version 3 stores the settings objects (:class:`~skneuralode.Solver`,
:class:`~skneuralode.Collocation`, ...) by their parameters.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import uuid
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._codec import Decoder, ImportPolicy, Unstorable, collect_imports, encode, import_path
from ._device import check_device_name
from ._hybrid_spec import HybridFieldSpec
from ._scaling import Scaling
from ._settings import SETTINGS_CLASSES
from ._solve import SolverSettings
from ._spec import ModelSpec
from ._stiff.detection import StiffnessProbe
from ._threads import seeded_global_rng
from ._training import StageResult
from ._vector_fields import NeuralFieldSpec, ODEModel

FORMAT_NAME = "skneuralode-model"
FORMAT_VERSION = 3  # 3: settings objects; 2: flat settings; 1: skneuralode 0.1.0
CONFIG_MEMBER = "skneuralode.json"
WEIGHTS_MEMBER = "weights.pt"
MAX_CONFIG_BYTES = 64 * 2**20
_WEIGHTS_OVERHEAD_BYTES = 2**16  # torch.save's zip structure, per file ...
_TENSOR_OVERHEAD_BYTES = 2**11  # ... and per tensor
_MAX_WEIGHT_TENSORS = 100_000

# The only records the decoder builds besides plain data (name in the file -> class).
RECORDS: dict[str, type] = {
    record.__name__: record
    for record in (
        ModelSpec,
        Scaling,
        SolverSettings,
        NeuralFieldSpec,
        HybridFieldSpec,
        StageResult,
        *SETTINGS_CLASSES.values(),
    )
}
# Constructor arguments that only matter while training: dropped (with a warning) when
# they cannot be stored, instead of refusing to save.
_TRAINING_ONLY = frozenset({"callbacks"})


# ------------------------------------------------------------------------- writing
def _encode_params(estimator: Any) -> dict[str, Any]:
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        try:
            params[name] = encode(value, RECORDS)
        except Unstorable as error:
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


def _encode_fitted(estimator: Any) -> dict[str, Any]:
    cls = type(estimator)
    kept = cls._recorded_attributes | cls._derived_attributes
    skipped = sorted(
        name
        for name in vars(estimator)
        if name.endswith("_") and not name.startswith("__") and name not in kept
    )
    if skipped:
        warnings.warn(
            f"Fitted attributes {skipped} are not saved (recompute them after loading).",
            UserWarning,
            stacklevel=4,
        )
    try:
        attributes = {
            name: encode(getattr(estimator, name), RECORDS)
            for name in sorted(cls._recorded_attributes)
            if hasattr(estimator, name)
        }
        spec = encode(estimator.module_.spec, RECORDS)
    except Unstorable as error:
        raise ValueError(f"Cannot save {cls.__name__}: {error}.") from None
    fitted: dict[str, Any] = {"spec": spec, "attributes": attributes}
    if StiffnessProbe.remembers(estimator.module_.field):
        fitted["stiff"] = True  # solver="auto" switched to the stiff method for good
    return fitted


def save_estimator(estimator: Any, path: str | os.PathLike[str]) -> None:
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
        "fitted": _encode_fitted(estimator) if fitted else None,
    }
    weights = b""
    if fitted:
        # clone: a view would store its whole storage
        state = {
            name: tensor.detach().cpu().clone()
            for name, tensor in estimator.module_.state_dict().items()
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        weights = buffer.getvalue()
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


def _own_estimator_classes() -> dict[str, type]:
    """skneuralode's public estimators by import path: loadable without permission."""
    from . import NeuralODERegressor, UniversalODERegressor

    return {
        f"{cls.__module__}:{cls.__qualname__}": cls
        for cls in (NeuralODERegressor, UniversalODERegressor)
    }


def _class_path(cls: type) -> str:
    path = f"{cls.__module__}:{cls.__qualname__}"
    if _own_estimator_classes().get(path) is cls:
        return path
    return import_path(cls)


# ------------------------------------------------------------------------- reading
def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    """A member's bytes, never more than ``limit`` of them (a lying header is caught)."""
    if info.file_size > limit:
        raise ValueError(
            f"Malformed model file: the {what} would take {info.file_size} bytes, more than "
            f"the {limit} the model description allows."
        )
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"Malformed model file: the {what} are larger than declared.")
    return data


def _open_archive(path: str | os.PathLike[str]) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    name = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise ValueError(f"{name!r} is not a valid skneuralode model file ({error}).") from None
    members = {info.filename: info for info in archive.infolist()}
    if CONFIG_MEMBER not in members or set(members) - {CONFIG_MEMBER, WEIGHTS_MEMBER}:
        archive.close()
        raise ValueError(f"{name!r} is not a skneuralode model file.")
    try:
        text = _read_member(archive, members[CONFIG_MEMBER], MAX_CONFIG_BYTES, "configuration")
        config = json.loads(text)
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        archive.close()
        raise ValueError(f"Malformed model file: unreadable configuration ({error}).") from None
    except RecursionError:
        archive.close()
        raise ValueError("Malformed model file: the configuration is nested too deeply.") from None
    except BaseException:
        archive.close()
        raise
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        archive.close()
        raise ValueError(f"{name!r} is not a skneuralode model file.")
    return archive, config


def _check_version(config: dict[str, Any]) -> int:
    from . import __version__

    version = config.get("format_version")
    if type(version) is not int or version < 1:
        raise ValueError(f"Malformed model file: format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"This model file has format version {version} (written by skneuralode "
            f"{config.get('skneuralode_version', '?')}); skneuralode {__version__} reads "
            f"format versions up to {FORMAT_VERSION}. Upgrade skneuralode to load it."
        )
    return version


def read_weights(archive: zipfile.ZipFile, limit: int) -> dict[str, torch.Tensor]:
    """The stored tensors, at most ``limit`` bytes of them, without unpickling anything."""
    info = next((i for i in archive.infolist() if i.filename == WEIGHTS_MEMBER), None)
    if info is None:
        raise ValueError("Malformed model file: fitted attributes without weights.")
    try:
        data = _read_member(archive, info, limit, "weights")
        inner = zipfile.ZipFile(io.BytesIO(data))  # torch.save's own zip: stored records
        records = inner.infolist()
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as error:
        raise ValueError(
            f"The model file's weights could not be read; the file is damaged or was "
            f"tampered with ({error})."
        ) from None
    if (
        len(records) > _MAX_WEIGHT_TENSORS
        or any(record.compress_type != zipfile.ZIP_STORED for record in records)
        or sum(record.file_size for record in records) > len(data)
    ):
        raise ValueError("Malformed model file: the weights were tampered with.")
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


def weights_limit(spec: ModelSpec) -> int:
    """Most bytes the weights of ``spec`` can take in a file."""
    n_tensors = 4 * (len(getattr(spec.field, "hidden_layer_sizes", ())) + 8)
    return 8 * spec.n_parameters() + _TENSOR_OVERHEAD_BYTES * n_tensors + _WEIGHTS_OVERHEAD_BYTES


def build_model(spec: ModelSpec, state: dict[str, torch.Tensor]) -> ODEModel:
    """The model of ``spec`` with the stored weights (names and shapes must match)."""
    with seeded_global_rng(0):  # every learned value is overwritten below
        model = ODEModel(spec)
    expected = model.state_dict()
    if set(state) != set(expected) or any(
        tuple(state[name].shape) != tuple(tensor.shape) for name, tensor in expected.items()
    ):
        raise ValueError(
            "The stored weights do not fit the model the file describes; the file is damaged "
            "or was tampered with."
        )
    if not all(
        bool(torch.isfinite(tensor).all())
        for tensor in state.values()
        if tensor.is_floating_point()
    ):
        raise ValueError("Malformed model file: the weights hold NaN or inf.")
    model.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()})
    return model


def _estimator_class(class_path: Any, policy: ImportPolicy) -> type:
    if not isinstance(class_path, str):
        raise ValueError("Malformed model file: no estimator description.")
    cls = _own_estimator_classes().get(class_path)
    if cls is None:
        cls = policy.resolve(class_path, "the estimator class")
        if not (isinstance(cls, type) and getattr(cls, "_skneuralode_estimator", False) is True):
            raise ValueError(f"{class_path!r} is not a skneuralode estimator class.")
    return cls


def _validated_estimator(cls: type, arguments: dict[str, Any]) -> Any:
    """``cls(**arguments)`` after the checks ``fit`` makes of its arguments."""
    unknown = sorted(set(arguments) - set(cls().get_params(deep=False)))
    if unknown:
        raise ValueError(
            f"The model file sets {unknown}, which {cls.__name__} of this skneuralode version "
            "does not have; load it with the version that wrote it."
        )
    estimator = cls(**arguments)
    try:
        estimator._check_arguments()
        check_device_name(estimator.device)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The model file's settings are invalid: {error}") from None
    return estimator


def _set_recorded_attributes(estimator: Any, attributes: Any, decoder: Decoder) -> None:
    if not isinstance(attributes, dict):
        raise ValueError("Malformed model file: bad fitted attributes.")
    allowed = type(estimator)._recorded_attributes
    for name, value in attributes.items():
        if name not in allowed:
            raise ValueError(f"Malformed model file: {name!r} is not a fitted attribute.")
        decoded = decoder.decode(value, name)
        check_recorded_attribute(name, decoded)
        setattr(estimator, name, decoded)


def check_recorded_attribute(name: str, value: Any) -> None:
    """Fitted attributes a file stores must have the types a fit gives them."""
    valid = {
        "n_iter_": type(value) is int and value >= 0,
        "loss_": isinstance(value, float),
        "history_": isinstance(value, list)
        and all(
            isinstance(record, dict)
            and all(type(item) in (str, int, float) for item in record.values())
            for record in value
        ),
        "stage_results_": isinstance(value, list)
        and all(isinstance(result, StageResult) for result in value),
    }.get(name)
    if valid is None:  # a subclass's own: plain finite float arrays only
        valid = isinstance(value, np.ndarray) and value.dtype.kind == "f"
        valid = valid and bool(np.all(np.isfinite(value)))
    if not valid:
        raise ValueError(f"Malformed model file: bad value of {name}.")


def load(path: str | os.PathLike[str], *, allow_imports: bool | str | Iterable[str] = ()) -> Any:
    """Load an estimator saved with :meth:`~skneuralode.NeuralODERegressor.save`.

    Loading never unpickles, never calls the model's own functions and never imports
    anything the caller did not allow; a damaged, tampered or implausible file raises
    ``ValueError`` before anything large is allocated.

    Parameters
    ----------
    path : str or path-like
        A file written by ``save``.
    allow_imports : bool, str or iterable of str, default=()
        Code the file may import: its ``known``, ``feature_map`` and callbacks (and an
        estimator class outside skneuralode) are stored by import path, and importing
        runs the module's code. Give the modules you trust (e.g. ``["mylab.physics"]``,
        which also trusts its submodules) or single objects (``["mylab.physics.spring"]``),
        or True to allow any. Only functions and classes *defined* in a trusted module
        load, never what it imports from elsewhere. By default nothing is imported, and a
        file that needs an import is refused with the list of what to allow.

    Returns
    -------
    estimator : NeuralODERegressor, UniversalODERegressor or another skneuralode estimator
        Fitted if it was fitted when saved; it predicts on the CPU when the saving
        device (e.g. CUDA) is not available here.

    Raises
    ------
    ValueError
        If the file is not a skneuralode model, is damaged or tampered with, describes
        settings or sizes a fit would refuse, needs an import that was not allowed, or
        has a format version newer than this release reads.

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
    policy = ImportPolicy(allow_imports)
    archive, config = _open_archive(path)
    try:
        with archive:
            return _load(archive, config, policy)
    except RecursionError:  # absurdly nested JSON
        raise ValueError("Malformed model file: the configuration is nested too deeply.") from None
    except (OverflowError, MemoryError, KeyError, IndexError, AttributeError, TypeError) as error:
        raise ValueError(f"Malformed model file ({type(error).__name__}: {error}).") from None


def _load(archive: zipfile.ZipFile, config: dict[str, Any], policy: ImportPolicy) -> Any:
    version = _check_version(config)
    params, fitted = config.get("params"), config.get("fitted")
    if not isinstance(params, dict) or not (fitted is None or isinstance(fitted, dict)):
        raise ValueError("Malformed model file: no estimator description.")
    needed: dict[str, str] = {}
    if config.get("estimator") not in _own_estimator_classes():
        needed["the estimator class"] = config.get("estimator")  # type: ignore[assignment]
    collect_imports(params, "params", needed)
    collect_imports(fitted, "fitted", needed)
    policy.check(needed)  # refuse before importing anything
    cls = _estimator_class(config.get("estimator"), policy)
    decoder = Decoder(policy, RECORDS)
    arguments = {name: decoder.decode(value, f"params[{name!r}]") for name, value in params.items()}
    if version < 3:  # flat solver and stage settings, before the settings objects
        from ._flat_settings import settings_from_flat

        arguments = settings_from_flat(cls, arguments)
    estimator = _validated_estimator(cls, arguments)
    if fitted is None:
        return estimator
    if version == 1:
        from ._format1 import read_format_1

        spec, state, attributes = read_format_1(estimator, fitted, config.get("module"), archive)
    else:
        if set(fitted) - {"stiff"} != {"spec", "attributes"} or fitted.get("stiff") not in (
            None,
            True,
        ):
            raise ValueError("Malformed model file: bad fitted description.")
        spec = decoder.decode(fitted["spec"], "fitted.spec")
        if not isinstance(spec, ModelSpec):
            raise ValueError("Malformed model file: the model description is missing.")
        try:
            spec.check()
        except ValueError as error:
            raise ValueError(f"Malformed model file: {error}") from None
        state = read_weights(archive, weights_limit(spec))
        attributes = fitted["attributes"]
    if spec.n_parameters() > sum(tensor.numel() for tensor in state.values()):
        raise ValueError("The stored weights are fewer than the model the file describes.")
    if not estimator._describes(spec):
        raise ValueError(
            "The model file's settings (hidden_layer_sizes, activation, feature_map, "
            "augment_dim, the physics) do not describe the model it holds; the file is "
            "damaged or was tampered with."
        )
    module = build_model(spec, state)
    if version != 1 and fitted.get("stiff") is True:
        StiffnessProbe.remember(module.field)
    _set_recorded_attributes(estimator, attributes, decoder)
    estimator.module_ = module
    estimator._derive_fitted_attributes()
    return estimator
