"""The one error contextualisation raises."""

from __future__ import annotations

from cloudpilot.models.queues import ConfigError


class UserDataError(ConfigError):
    """User data that must not be sent: a broken template, output that is not cloud-config,
    or a payload too big for the cloud even after gzip.

    A :class:`ConfigError`, so the reconciler reports it as a configuration problem (status
    condition and event) and creates no VM. The message names the template and line, or the
    size and the limit; it never quotes secret material (the pilot wrapper, the proxy).
    """


class MissingPilotExecutableError(UserDataError):
    """The template starts the pilot executable but the queue names none: the VM would boot
    a stub that fails at once, and be replaced, over and over."""
