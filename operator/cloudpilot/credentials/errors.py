"""Errors of credential resolution: each names the Secret, key and section, never a value.

They are :class:`~cloudpilot.models.queues.ConfigError` subclasses, so the reconciler's
error classification files them as ``InvalidConfig`` (the pool stalls until a human fixes
the Secret, and nothing is created), while every other pool carries on. They are raised
``from None``: the exception they replace (configparser's, a ``UnicodeDecodeError``) often
quotes the offending line, which is exactly the secret, and a chained traceback in a log
would print it.
"""

from __future__ import annotations

from cloudpilot.models.queues import ConfigError


class CredentialsError(ConfigError):
    """Credentials that cannot be built from the Secret as it stands."""


class CloudAuthError(CredentialsError):
    """A ``cloud.auth`` ini that is malformed or lacks ``key``/``secret`` for the CE."""


class ProxyUnavailableError(CredentialsError):
    """``secret = PROXY``, but the pool has no pilot proxy to put in its place."""


class InvalidProxyError(CredentialsError):
    """``secret = PROXY``, but the pilot proxy is not a PEM certificate chain with its key:
    sent to the cloud it could only fail, or worse, look like rejected credentials."""


class ProxyFileError(OSError):
    """The private proxy file could not be written safely (an operator problem, not the
    pool's: an unsafe or unwritable directory). An ``OSError``, so it is retried."""
