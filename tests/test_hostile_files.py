"""A battery of hostile and careless model files: each is refused with a ``ValueError``,
runs no code (a marker file never appears) and costs little memory to refuse.

The loads run in one child process, each in a fork of it, so that the peak resident
memory of a single load (its ``ru_maxrss`` over the RSS at the fork) can be measured.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skneuralode import UniversalODERegressor
from skneuralode._persistence import CONFIG_MEMBER, WEIGHTS_MEMBER

MAX_EXTRA_MB = 64

TRUSTED_LAB = """
import os
import subprocess
from os import system
import torch
from evil_helpers import touch_marker

def spring(t, y, p):
    return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)

class Tools:
    helper = staticmethod(touch_marker)

class NotAnEstimator:
    pass
"""
EVIL_HELPERS = """
import os
def touch_marker(*args, **kwargs):
    open(os.environ["SKNEURALODE_MARKER"], "w").close()
"""
EVIL_MODULE = """
import os
open(os.environ["SKNEURALODE_MARKER"], "w").close()
def run(*args, **kwargs):
    return None
"""

Config = dict[str, Any]
Members = dict[str, bytes]


@pytest.fixture(scope="module")
def laboratory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lab")
    (folder / "trusted_lab.py").write_text(TRUSTED_LAB)
    (folder / "evil_helpers.py").write_text(EVIL_HELPERS)
    (folder / "evil_module.py").write_text(EVIL_MODULE)
    return folder


@pytest.fixture(scope="module")
def base_members(laboratory: Path) -> Members:
    """A valid file of a small UDE whose physics lives in the trusted module."""
    sys.path.insert(0, str(laboratory))
    os.environ.setdefault("SKNEURALODE_MARKER", str(laboratory / "unused-marker"))
    try:
        import trusted_lab

        t = np.linspace(0.0, 4.0, 30)
        y = np.stack([np.cos(2.0 * t), -2.0 * np.sin(2.0 * t)], axis=1)
        estimator = UniversalODERegressor(
            known=trusted_lab.spring,
            params={"omega2": 3.0},
            network_outputs=[1],
            hidden_layer_sizes=(8,),
            max_iter=20,
            polish=False,
            random_state=0,
            device="cpu",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(t, y)
        path = laboratory / "base.skn"
        estimator.save(path)
    finally:
        sys.path.remove(str(laboratory))
        sys.modules.pop("trusted_lab", None)
        sys.modules.pop("evil_helpers", None)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _config(edit: Callable[[Config], Any]) -> Callable[[Members], Members]:
    def apply(members: Members) -> Members:
        config = json.loads(members[CONFIG_MEMBER])
        edit(config)
        return {**members, CONFIG_MEMBER: json.dumps(config).encode()}

    return apply


def _spec(edit: Callable[[Config], Any]) -> Callable[[Members], Members]:
    return _config(lambda c: edit(c["fitted"]["spec"]["__record__"]["fields"]))


def _field(edit: Callable[[Config], Any]) -> Callable[[Members], Members]:
    return _spec(lambda s: edit(s["field"]["__record__"]["fields"]))


def _weights(edit: Callable[[dict[str, torch.Tensor]], Any]) -> Callable[[Members], Members]:
    def apply(members: Members) -> Members:
        state = torch.load(io.BytesIO(members[WEIGHTS_MEMBER]), weights_only=True)
        edit(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return {**members, WEIGHTS_MEMBER: buffer.getvalue()}

    return apply


def _set(path: str, value: Any) -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        config[last] = value

    return edit


def _array(shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"__ndarray__": {"dtype": "float64", "shape": shape, "data": data}}


def _known(path: str) -> Callable[[Members], Members]:
    """``known`` replaced both in the arguments and in the model description."""
    as_import = {"__import__": path}
    arguments = _config(_set("params.known", as_import))
    return lambda members: _field(_set("known", as_import))(arguments(members))


def _raw(data: bytes) -> Callable[[Members], bytes]:
    return lambda members: data


def _bomb_weights(members: Members) -> Members:
    return {**members, WEIGHTS_MEMBER: b"\0" * (400 * 2**20)}


def _deflated_torch_records(members: Members) -> Members:
    inner = zipfile.ZipFile(io.BytesIO(members[WEIGHTS_MEMBER]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as rewritten:
        for info in inner.infolist():
            rewritten.writestr(info.filename, inner.read(info))
    return {**members, WEIGHTS_MEMBER: buffer.getvalue()}


def _config_bomb(members: Members) -> Members:
    config = members[CONFIG_MEMBER]
    return {**members, CONFIG_MEMBER: config[:-1] + b" " * (70 * 2**20) + config[-1:]}


LAB = ["trusted_lab"]
# name -> (transformation of the members, or of the whole file, and allow_imports)
CASES: dict[str, tuple[Callable[[Members], Any], Any]] = {
    # import tricks through trusted packages
    "import-of-untrusted-module": (
        _config(_set("params.known", {"__import__": "evil_module:run"})),
        LAB,
    ),
    "attribute-imported-from-elsewhere": (
        _config(_set("params.known", {"__import__": "trusted_lab:system"})),
        LAB,
    ),
    "module-reached-through-trusted": (
        _config(_set("params.known", {"__import__": "trusted_lab:os.system"})),
        LAB,
    ),
    "helper-reached-through-trusted": (
        _config(_set("params.known", {"__import__": "trusted_lab:touch_marker"})),
        LAB,
    ),
    "submodule-attribute-through-trusted": (
        _config(_set("params.known", {"__import__": "trusted_lab:subprocess.call"})),
        LAB,
    ),
    "class-attribute-from-elsewhere": (
        _config(_set("params.known", {"__import__": "trusted_lab:Tools.helper"})),
        LAB,
    ),
    "dunder-globals": (
        _config(_set("params.known", {"__import__": "trusted_lab:spring.__globals__"})),
        LAB,
    ),
    "dunder-builtins": (
        _config(_set("params.known", {"__import__": "trusted_lab:__builtins__"})),
        LAB,
    ),
    "malformed-import-path": (_config(_set("params.known", {"__import__": "trusted_lab"})), LAB),
    "prefix-is-not-a-package": (
        _config(_set("params.known", {"__import__": "trusted_lab:spring"})),
        ["trusted"],
    ),
    "os-system-even-if-os-allowed": (_known("os:system"), ["os"]),
    "callback-from-untrusted-module": (
        _config(_set("params.callbacks", [{"__import__": "evil_module:run"}])),
        LAB,
    ),
    "estimator-class-not-an-estimator": (
        _config(_set("estimator", "trusted_lab:NotAnEstimator")),
        LAB,
    ),
    "estimator-class-builtin-eval": (_config(_set("estimator", "builtins:eval")), True),
    "field-known-differs-from-params": (
        _field(_set("known", {"__import__": "trusted_lab:Tools"})),
        LAB,
    ),
    "observe-from-untrusted-module": (
        lambda members: _field(_set("observe", {"__import__": "evil_module:run"}))(
            _config(_set("params.observe", {"__import__": "evil_module:run"}))(members)
        ),
        LAB,
    ),
    "field-observe-differs-from-params": (
        _field(_set("observe", {"__import__": "trusted_lab:spring"})),
        LAB,
    ),
    "observation-scaling-without-observe": (
        _spec(
            _set(
                "observation_scaling",
                {
                    "__record__": {
                        "type": "Scaling",
                        "fields": {
                            "state_offset": _array([1], [0.0]),
                            "state_scale": _array([1], [1.0]),
                            "time_origin": 0.0,
                            "time_scale": 1.0,
                        },
                    }
                },
            )
        ),
        LAB,
    ),
    # attribute names
    "attribute-repr-mimebundle": (_config(_set("fitted.attributes._repr_mimebundle_", 1)), LAB),
    "attribute-repr-html": (_config(_set("fitted.attributes._repr_html_", "x")), LAB),
    "attribute-dunder-class": (_config(_set("fitted.attributes.__class__", 1)), LAB),
    "attribute-module": (_config(_set("fitted.attributes.module_", None)), LAB),
    "attribute-method-name": (_config(_set("fitted.attributes.predict", 1)), LAB),
    "attribute-wrong-type": (_config(_set("fitted.attributes.n_iter_", "many")), LAB),
    "unknown-constructor-argument": (_config(_set("params.__init__", 1)), LAB),
    "unknown-record-field": (_spec(_set("evil", 1)), LAB),
    "unknown-record-type": (_config(_set("fitted.spec.__record__.type", "Path")), LAB),
    # sizes and bombs
    "wide-layers-small-file": (
        _field(_set("hidden_layer_sizes", {"__tuple__": [8, 6000, 6000]})),
        LAB,
    ),
    "huge-layers": (_field(_set("hidden_layer_sizes", {"__tuple__": [8, 60000, 60000]})), LAB),
    "array-shape-2-to-64": (_spec(_set("initial_times", _array([2**64], []))), LAB),
    "array-shape-too-large": (_spec(_set("initial_times", _array([10**7, 10**7], []))), LAB),
    "array-data-mismatch": (_spec(_set("initial_times", _array([5], [0.0]))), LAB),
    "weights-zip-bomb": (_bomb_weights, LAB),
    "configuration-zip-bomb": (_config_bomb, LAB),
    "weights-deflated-records": (_deflated_torch_records, LAB),
    "weights-wrong-shape": (
        _weights(lambda s: s.update({"initial_states": torch.zeros(3, 2)})),
        LAB,
    ),
    "weights-nan": (_weights(lambda s: s["initial_states"].fill_(float("nan"))), LAB),
    "weights-missing-tensor": (_weights(lambda s: s.pop("initial_states")), LAB),
    # invalid settings
    "negative-rtol-argument": (_config(_set("params.rtol", -1.0)), LAB),
    "negative-rtol-in-model": (
        _spec(lambda s: s["solver"]["__record__"]["fields"].update(rtol=-1.0)),
        LAB,
    ),
    "nan-atol-in-model": (
        _spec(lambda s: s["solver"]["__record__"]["fields"].update(atol=float("nan"))),
        LAB,
    ),
    "solver-name-is-code": (_config(_set("params.solver", "os.system")), LAB),
    "solver-name-in-model": (
        _spec(lambda s: s["solver"]["__record__"]["fields"].update(method="os.system")),
        LAB,
    ),
    "max-num-steps-overflow": (
        _spec(lambda s: s["solver"]["__record__"]["fields"].update(max_num_steps=10**30)),
        LAB,
    ),
    "device-is-code": (_config(_set("params.device", "os.system")), LAB),
    "dtype-float16": (_spec(_set("dtype", "float16")), LAB),
    "zero-state-scale": (
        _spec(
            lambda s: s["scaling"]["__record__"]["fields"].update(
                state_scale=_array([2], [0.0, 1.0])
            )
        ),
        LAB,
    ),
    "penalty-negative": (_field(_set("penalty_weight", -1.0)), LAB),
    "format-version-string": (_config(_set("format_version", "2")), LAB),
    "format-version-future": (_config(_set("format_version", 99)), LAB),
    # truncation and path names
    "truncated": (lambda m: None, LAB),
    "empty-file": (_raw(b""), LAB),
    "member-path-traversal": (lambda m: {**m, "../../evil.py": b"import os"}, LAB),
}


def _write(members_or_bytes: Any, path: Path, base: Members) -> None:
    if members_or_bytes is None:  # truncated
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in base.items():
                archive.writestr(name, data)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif isinstance(members_or_bytes, bytes):
        path.write_bytes(members_or_bytes)
    else:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members_or_bytes.items():
                archive.writestr(name, data)


CHILD = textwrap.dedent(
    """
    import gc, json, os, sys
    import torch
    torch.set_num_threads(1)
    import skneuralode

    def status_kb(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the peak resident size (VmHWM) restarts from now

    cases = json.loads(open(sys.argv[1]).read())
    marker = os.environ["SKNEURALODE_MARKER"]
    results = {}
    for name, case in cases.items():
        gc.collect()
        reset_peak()
        before = status_kb("VmRSS")
        try:
            skneuralode.load(case["path"], allow_imports=case["allow"])
            kind, message = "loaded", ""
        except Exception as error:
            kind, message = type(error).__name__, str(error)[:300]
        extra_mb = (status_kb("VmHWM") - before) / 1024
        results[name] = {"kind": kind, "message": message, "extra_mb": extra_mb,
                         "marker": os.path.exists(marker)}
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def outcomes(laboratory: Path, base_members: Members) -> dict[str, Any]:
    folder = laboratory / "cases"
    folder.mkdir()
    cases: dict[str, Any] = {}
    control = folder / "control.skn"
    _write(base_members, control, base_members)
    cases["control"] = {"path": str(control), "allow": LAB}
    for name, (transform, allow) in CASES.items():
        path = folder / f"{name}.skn"
        _write(transform(copy.deepcopy(base_members)), path, base_members)
        cases[name] = {"path": str(path), "allow": allow}
    (folder / "cases.json").write_text(json.dumps(cases))
    marker = laboratory / "marker"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(laboratory), os.environ.get("PYTHONPATH", "")]),
        "SKNEURALODE_MARKER": str(marker),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder / "cases.json")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    results["marker-after-all"] = marker.exists()
    return results


def test_the_battery_has_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_the_unmodified_file_loads(outcomes: dict[str, Any]) -> None:
    assert outcomes["control"]["kind"] == "loaded", outcomes["control"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_refused_cleanly(outcomes: dict[str, Any], name: str) -> None:
    outcome = outcomes[name]
    assert outcome["kind"] == "ValueError", outcome
    assert not outcome["marker"], "code from the file ran"
    assert outcome["extra_mb"] < MAX_EXTRA_MB, outcome
    assert not outcomes["marker-after-all"]
