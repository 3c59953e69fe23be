"""Pinned runtimes: virtual environments that layer a few pinned packages over the app's own.

A runtime is a plain venv under `<data_dir>/runtimes/<name>` whose site-packages holds a `.pth`
line `import site; site.addsitedir(<app site-packages>)`: `sys.path` is runtime → app
environment → base, so the pins installed in the runtime shadow the app's packages while torch
(and the editable `app` package, whose own `.pth` files `addsitedir` processes) are shared.
`--system-site-packages` would inherit the base interpreter instead, and PYTHONPATH would put the
app environment first and shadow the pins. A runtime is built in `<name>.partial` and renamed
when complete; `runtime.json` records its requirements and versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import venv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.pool.environment import worker_environment

if TYPE_CHECKING:
    from app.core.catalog import RuntimeSpec

DEFAULT = "default"
MARKER = "runtime.json"
PTH_NAME = "_vlm_playground_app_env.pth"
PIP_ECHOED = ("Collecting ", "Installing collected packages", "Successfully installed", "ERROR:")
# pip lines that are not the error: the resolver's note that the app env wants transformers 5, and pointers.
PIP_NOISE = ("dependency resolver does not currently take into account", "for help visit")
Progress = Callable[[str], None]

# Run inside a new runtime: what it imports, and from where.
_PROBE = """
import importlib.metadata as md, importlib.util as iu, json, sys, transformers
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({
    "python": sys.version.split()[0], "transformers": transformers.__version__,
    "transformers_file": transformers.__file__, "torch": version("torch"),
    "torch_file": iu.find_spec("torch").origin if iu.find_spec("torch") else None,
    "tokenizers": version("tokenizers"), "huggingface_hub": version("huggingface_hub"),
    "app_worker": iu.find_spec("app.worker").origin if iu.find_spec("app") else None,
}))
"""


class RuntimePrepareError(RuntimeError):
    """A runtime that could not be created; the message names it and pip's last error line."""

    def __init__(self, runtime: str, reason: str) -> None:
        super().__init__(f"runtime '{runtime}': {reason}")
        self.runtime = runtime
        self.reason = reason


def app_site_packages() -> list[str]:
    """The running (app) environment's site-packages directories, purelib first."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def venv_python(path: Path) -> Path:
    """The interpreter of the venv at `path`."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _site_packages(path: Path) -> Path:
    """The venv's own site-packages (the layout of the interpreter running the app)."""
    relative = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return path / relative


def _clean_env() -> dict[str, str]:
    """The environment for runtime subprocesses (pip runs packages' build code): no PYTHONPATH/PYTHONHOME to
    reorder sys.path, and none of the playground's secrets."""
    env = {k: v for k, v in worker_environment(os.environ).items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    return env


def _dir_size_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return round(total / 2**20, 1)


def _requirement_name(requirement: str) -> str:
    """'Torch[extra]>=2; python_version>"3"' → 'torch'."""
    return re.split(r"[\s<>=!~;\[@(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _is_noise(line: str) -> bool:
    return any(noise in line for noise in PIP_NOISE)


def _last_error_line(output: str) -> str:
    """pip's last `ERROR:` line, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not _is_noise(line)]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


class RuntimeManager:
    """Creates pinned runtimes on first use and says where their Python is."""

    def __init__(self, runtimes: dict[str, RuntimeSpec], root: str | Path) -> None:
        self.runtimes = dict(runtimes)
        self.root = Path(root)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._building: set[str] = set()
        self._errors: dict[str, str] = {}

    # --- paths and markers ---------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.root / name

    def _spec(self, name: str) -> RuntimeSpec:
        try:
            return self.runtimes[name]
        except KeyError:
            known = ", ".join([DEFAULT, *self.runtimes])
            raise RuntimePrepareError(name, f"unknown runtime (known: {known})") from None

    def marker(self, name: str) -> dict[str, Any] | None:
        """The runtime's `runtime.json`, or None when it has none (or an unreadable one)."""
        try:
            return json.loads((self.path(name) / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_ready(self, name: str) -> bool:
        """Built, for the catalogue's current requirements and this app environment."""
        marker = self.marker(name)
        return (marker is not None and marker.get("requirements") == list(self._spec(name).requirements)
                and marker.get("app_site_packages") == app_site_packages()
                and venv_python(self.path(name)).exists())

    # --- creation ------------------------------------------------------------------------------

    def python_for(self, name: str, progress: Progress | None = None) -> str:
        """The Python to start `name`'s workers with, creating the runtime on first use."""
        if name == DEFAULT:
            return sys.executable
        self._spec(name)
        if not self.is_ready(name):
            with self._thread_lock(name), self._file_lock(name):
                if not self.is_ready(name):  # someone else may have built it while we waited
                    self._create(name, progress or (lambda _line: None))
        return str(venv_python(self.path(name)))

    def _thread_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @contextlib.contextmanager
    def _file_lock(self, name: str) -> Iterator[None]:
        """Serialise creation across processes sharing the data directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _create(self, name: str, progress: Progress) -> None:
        spec = self._spec(name)
        started = time.perf_counter()
        partial = self.root / f"{name}.partial"
        self._building.add(name)
        self._errors.pop(name, None)
        try:
            shutil.rmtree(partial, ignore_errors=True)
            progress(f"creating venv for runtime '{name}'")
            self._make_venv(partial)
            progress(f"installing {' '.join(spec.requirements)} …")
            self._pip_install(name, partial, list(spec.requirements), progress)
            info = self._probe(name, partial)
            self._write_marker(partial, spec, info, time.perf_counter() - started)
            self._swap_in(name, partial)
            progress(f"runtime '{name}' ready: transformers {info['transformers']} "
                     f"(done in {time.perf_counter() - started:.1f} s)")
        except RuntimePrepareError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            self._errors[name] = exc.reason
            raise
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            self._errors[name] = f"{type(exc).__name__}: {exc}"
            raise RuntimePrepareError(name, self._errors[name]) from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            self._building.discard(name)

    def _make_venv(self, path: Path) -> None:
        """A venv without pip (pip comes from the app environment) and with the app-environment `.pth`."""
        with_pip = importlib.util.find_spec("pip") is None
        venv.EnvBuilder(with_pip=with_pip, symlinks=os.name != "nt").create(path)
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in app_site_packages())
        site_packages = _site_packages(path)
        site_packages.mkdir(parents=True, exist_ok=True)
        (site_packages / PTH_NAME).write_text(lines, encoding="utf-8")

    def _pip_install(self, name: str, path: Path, requirements: list[str], progress: Progress) -> None:
        """Install the pins with the runtime's Python; torch is constrained to the shared version."""
        constraints = path / "constraints.txt"
        pins = "".join(f"{package}=={version}\n" for package, version in self._shared_pins().items())
        constraints.write_text(pins, encoding="utf-8")
        command = [str(venv_python(path)), "-m", "pip", "install", "--no-warn-script-location",
                   "--progress-bar", "off", "-c", str(constraints), *requirements]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=_clean_env(), cwd=path)
        output: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith(PIP_ECHOED) and not _is_noise(line):
                progress(line.rstrip())
        if process.wait() != 0:
            reason = f"pip install {' '.join(requirements)} failed: {_last_error_line(''.join(output))}"
            named = {_requirement_name(r) for r in requirements}
            shared = [f"{p}=={v}" for p, v in self._shared_pins().items() if p in named]
            if shared:
                reason += f" ({', '.join(shared)} is shared with the app environment and cannot be pinned)"
            raise RuntimePrepareError(name, reason)

    @staticmethod
    def _shared_pins() -> dict[str, str]:
        """Packages a runtime must share with the app environment, never reinstall."""
        pins = {}
        for package in ("torch", "torchvision"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                pins[package] = importlib.metadata.version(package)
        return pins

    def _probe(self, name: str, path: Path) -> dict[str, Any]:
        """Import transformers in the runtime and check that torch and `app` come from the app env."""
        result = subprocess.run([str(venv_python(path)), "-c", _PROBE], capture_output=True, text=True,
                                env=_clean_env(), cwd=path, timeout=120)
        if result.returncode != 0:
            raise RuntimePrepareError(name, "the new environment does not import transformers: "
                                            f"{_last_error_line(result.stderr)}")
        info = json.loads(result.stdout.strip().splitlines()[-1])
        if not info.get("app_worker"):
            raise RuntimePrepareError(name, "the app package is not importable in it")
        return info

    @staticmethod
    def _write_marker(path: Path, spec: RuntimeSpec, info: dict[str, Any], seconds: float) -> None:
        marker = {"requirements": list(spec.requirements), "app_site_packages": app_site_packages(),
                  "versions": {k: info.get(k) for k in ("python", "transformers", "tokenizers",
                                                         "huggingface_hub", "torch")},
                  "torch_file": info.get("torch_file"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "create_s": round(seconds, 1)}
        (path / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")

    def _swap_in(self, name: str, partial: Path) -> None:
        """Replace any older runtime with the finished one and repoint its scripts' shebangs."""
        final = self.path(name)
        old = self.root / f"{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        _repoint_scripts(final, partial)

    # --- status --------------------------------------------------------------------------------

    def state(self, name: str) -> str:
        """'ready', 'not created', 'creating', 'outdated' (requirements changed) or 'failed: …'."""
        if name == DEFAULT:
            return "ready"
        if name in self._building or self._locked_elsewhere(name):
            return "creating"
        if name in self._errors:
            return f"failed: {self._errors[name]}"
        if self.is_ready(name):
            return "ready"
        return "outdated" if self.marker(name) else "not created"

    def _locked_elsewhere(self, name: str) -> bool:
        """Whether another process holds this runtime's creation lock."""
        lock = self.root / f"{name}.lock"
        if not lock.exists():
            return False
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def status(self) -> list[dict[str, Any]]:
        """One row per runtime, `default` first."""
        rows: list[dict[str, Any]] = [{"name": DEFAULT, "requirements": [], "description": "the app's own environment",
                 "state": "ready", "path": sys.prefix, "transformers": _installed("transformers"),
                 "size_mb": None}]
        for name, spec in self.runtimes.items():
            marker = self.marker(name) or {}
            exists = self.path(name).is_dir()
            rows.append({"name": name, "requirements": list(spec.requirements),
                         "description": spec.description, "state": self.state(name),
                         "path": str(self.path(name)),
                         "transformers": marker.get("versions", {}).get("transformers"),
                         "size_mb": _dir_size_mb(self.path(name)) if exists else None})
        return rows


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _repoint_scripts(venv_dir: Path, built_at: Path) -> None:
    """Scripts pip wrote name the build directory in their first line; point them at the final one."""
    bin_dir = venv_python(venv_dir).parent
    old, new = f"#!{venv_python(built_at)}", f"#!{venv_python(venv_dir)}"
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = script.read_text(encoding="utf-8")
            if text.startswith(old):
                script.write_text(new + text[len(old):], encoding="utf-8")
