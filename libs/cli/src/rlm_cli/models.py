"""What installed backends offer, read from what they already declare; used by ``rlm models``
and by ``rlm run -o`` to check option names.

A backend factory (usually a class) may declare, all optional:

* ``sampling_options``: a mapping of the sampling-argument names it accepts (``temperature``,
  ``max_tokens``, ...) to a one-line description. ``rlm run -o KEY VALUE`` checks ``KEY``
  against it and lists the valid names when it is not there; a backend that does not declare
  it gets every option as given.
* ``default_prices`` (or a module-level ``PRICES``): USD per 1M tokens ``(input, output)`` by
  model name; ``default_context_windows`` (or a module-level ``CONTEXT_WINDOWS``): tokens by
  model name; a module-level ``DEFAULT_MODEL``; ``model_aliases``: alias -> model name.

Only what the factory's own module or class defines counts (a subclass that inherits OpenAI's
price table does not offer OpenAI's models). Reading imports the backend's module, never calls
a provider. Standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BackendModels", "ModelInfo", "backend_models", "sampling_options"]


@dataclass
class ModelInfo:
    name: str
    context_window: int | None = None
    price_in: float | None = None  # USD per 1M input tokens
    price_out: float | None = None
    aliases: list[str] = field(default_factory=list)
    default: bool = False


@dataclass
class BackendModels:
    backend: str
    aliases: list[str]
    distribution: str | None
    models: list[ModelInfo]
    options: list[str] | None  # None: the backend does not declare its sampling options
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _own(factory: Any, attr: str, module_attr: str) -> Any:
    """``attr`` when the factory class itself (or a base from the same module) defines it, else
    the factory module's ``module_attr``; inherited tables of other modules do not count."""
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    for klass in getattr(factory, "__mro__", ())[:-1]:
        if attr in vars(klass) and vars(klass)[attr] is not None:
            if klass is factory or klass.__module__ == factory.__module__:
                return vars(klass)[attr]
            break
    return getattr(module, module_attr, None) if module is not None else None


def sampling_options(factory: Any) -> dict[str, str] | None:
    """The sampling options a backend factory declares (name -> description), or None."""
    declared = getattr(factory, "sampling_options", None)
    if declared is None:
        return None
    if isinstance(declared, Mapping):
        return {str(k): str(v) for k, v in declared.items()}
    return {str(k): "" for k in declared}


def _probe(factory: Any) -> Any:
    """An instance built with no arguments (cheap for local backends), or None when that fails."""
    try:
        instance = factory()
    except Exception:  # noqa: BLE001 - a backend that needs a key or a URL: no instance
        return None
    return instance


def backend_models(entry: Any) -> BackendModels:
    """What the backend registered as ``entry`` offers."""
    out = BackendModels(entry.name, list(entry.aliases), entry.distribution, [], None)
    try:
        factory = entry.load()
    except Exception as exc:  # noqa: BLE001 - reported in the listing, never raised
        out.error = str(exc)
        return out
    opts = sampling_options(factory)
    out.options = sorted(opts) if opts is not None else None
    prices: Mapping[str, Any] = _own(factory, "default_prices", "PRICES") or {}
    windows: Mapping[str, int] = _own(factory, "default_context_windows", "CONTEXT_WINDOWS") or {}
    aliases: Mapping[str, str] = _own(factory, "model_aliases", "MODEL_ALIASES") or {}
    default = _own(factory, "default_model", "DEFAULT_MODEL")
    instance = None
    if not isinstance(default, str) and not prices and not windows:
        instance = _probe(factory)  # e.g. the embedded model: its name is known only to it
        default = getattr(instance, "model_name", None)
    names = list(dict.fromkeys([*([default] if isinstance(default, str) else []),
                                *sorted(set(prices) | set(windows))]))
    for name in names:
        price = prices.get(name)
        window = windows.get(name)
        if window is None and instance is not None:
            try:
                window = instance.context_window(name)
            except Exception:  # noqa: BLE001
                window = None
        out.models.append(ModelInfo(
            name, window, float(price[0]) if price else None, float(price[1]) if price else None,
            sorted(a for a, target in aliases.items() if target == name), name == default))
    if instance is not None:
        try:
            instance.close()
        except Exception:  # noqa: BLE001
            pass
    return out
