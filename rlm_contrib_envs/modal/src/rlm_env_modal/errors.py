"""Modal's failures as rlm errors that say what to do.

* No credentials at all -> :class:`ConfigurationError` naming ``MODAL_TOKEN_ID``,
  ``MODAL_TOKEN_SECRET`` and the login commands, before any request is made.
* Credentials the service refuses -> :class:`ConfigurationError` with the service's message.
* Everything else the provider says (quota, capacity, a network failure, an unknown app) ->
  :class:`RLMEnvironmentError` quoting the provider's own message and what was being done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError

LOGIN_HELP = ("Run `modal setup` (or `modal token new`) to log in, or set MODAL_TOKEN_ID and "
              "MODAL_TOKEN_SECRET in the environment")


def check_credentials(modal: Any) -> None:
    """Raise :class:`ConfigurationError` when no Modal token is configured anywhere."""
    config = modal.config.config
    token_id = config.get("token_id")
    token_secret = config.get("token_secret")
    if token_id and token_secret:
        return
    missing = [name for name, value in (("MODAL_TOKEN_ID", token_id),
                                        ("MODAL_TOKEN_SECRET", token_secret)) if not value]
    raise ConfigurationError(
        f"the 'modal' environment needs Modal credentials, and {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not set (nor in ~/.modal.toml). "
        f"{LOGIN_HELP}. Install the SDK's CLI with `uv pip install -e \".[modal]\"`.")


def describe(exc: BaseException) -> str:
    """The provider's message, with the exception's class when the message is empty."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def provider_errors(modal: Any, doing: str) -> Iterator[None]:
    """Translate what the Modal SDK raises while ``doing`` something (``"creating the sandbox"``)."""
    exc_mod = modal.exception
    try:
        yield
    except (ConfigurationError, RLMEnvironmentError):
        raise
    except exc_mod.AuthError as exc:
        raise ConfigurationError(
            f"Modal refused the credentials while {doing}: {describe(exc)}. {LOGIN_HELP} "
            "(a token from another workspace, or a revoked one, gives this error).") from exc
    except exc_mod.ResourceExhaustedError as exc:
        raise RLMEnvironmentError(
            f"Modal is out of capacity or your workspace hit a quota while {doing}: "
            f"{describe(exc)}. Retry later, lower cpu/memory, or raise the limit in Modal's "
            "dashboard.") from exc
    except (exc_mod.ConnectionError, ConnectionError, OSError) as exc:
        server = modal.config.config.get("server_url")
        raise RLMEnvironmentError(
            f"could not reach Modal ({server}) while {doing}: {describe(exc)}. Check the "
            "network (and MODAL_SERVER_URL if you set it).") from exc
    except exc_mod.ServiceError as exc:
        raise RLMEnvironmentError(
            f"Modal's service failed or could not be reached while {doing} (after the SDK's "
            f"retries): {describe(exc)}. This is usually transient: retry the run.") from exc
    except exc_mod.Error as exc:
        raise RLMEnvironmentError(f"Modal failed while {doing}: {describe(exc)}") from exc
