"""Check ``spec.driver`` and ``createOptions`` keys against what the driver really accepts.

libcloud drivers take ``**kwargs`` in their constructors and drop what they do not know, so
``driver: {regoin: us-east-1}`` would silently mean the default region; ``create_node``
has no ``**kwargs`` on most drivers, so an unknown ``createOptions`` key is a ``TypeError``
at create time, which looks like any other failure. Both are refused here, before any
driver is built or any call sent, with the accepted names in the message.

Accepted driver options: the named parameters of ``__init__`` (and ``__new__``) of every
class in the driver's MRO and in its connection class's MRO (drivers pass options on to
their connection). Accepted create options: the named parameters of ``create_node`` of the
concrete driver class (walking the MRO while a ``create_node`` passes ``**kwargs`` on).
Everything here is a pure function of classes and dicts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cloudpilot.models.queues import RESERVED_CREATE_OPTIONS, ConfigError, QueueConfig

POSITIONAL_CREDENTIALS = frozenset({"self", "key", "secret", "user_id", "cls"})
"""Parameters the operator fills from the credentials Secret: never a driver option."""
MAX_NAMES_SHOWN = 40


def _named(fn: Callable[..., Any] | None) -> tuple[set[str], bool]:
    """The named parameters of ``fn`` and whether it takes ``**kwargs``."""
    if fn is None or fn in (object.__init__, object.__new__):
        return set(), False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _mro_parameters(cls: type, method: str) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        found, _ = _named(vars(klass).get(method))
        names |= found
    return names


@functools.cache
def accepted_driver_options(cls: type) -> frozenset[str]:
    """Keyword options a driver class (and its connection class) does something with."""
    names = _mro_parameters(cls, "__init__") | _mro_parameters(cls, "__new__")
    connection = getattr(cls, "connectionCls", None)
    if isinstance(connection, type):
        names |= _mro_parameters(connection, "__init__")
    return frozenset(names - POSITIONAL_CREDENTIALS)


@functools.cache
def accepted_create_options(cls: type) -> frozenset[str]:
    """``create_node`` keywords of ``cls`` that ``createOptions`` may set."""
    names: set[str] = set()
    for klass in cls.__mro__:
        method = vars(klass).get("create_node")
        if method is None:
            continue
        found, passes_on = _named(method)
        names |= found
        if not passes_on:
            break
    return frozenset(names - {"self"} - RESERVED_CREATE_OPTIONS)


def concrete_class(cls: type, options: Mapping[str, Any]) -> type:
    """The class a construction with ``options`` really makes: some drivers pick a
    subclass in ``__new__`` (OpenStack by ``api_version``). Nothing is initialised."""
    # As an object: typeshed's overloaded object.__new__ makes mypy call the test always false.
    new: object = cls.__new__
    if new is object.__new__:
        return cls
    try:
        made = cls.__new__(cls, "key", **options)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"driver options rejected by {cls.__name__}: {exc}") from None
    return type(made)


def unknown(given: Iterable[str], accepted: frozenset[str]) -> list[str]:
    return sorted(set(given) - accepted)


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:MAX_NAMES_SHOWN])
    more = len(ordered) - MAX_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def driver_option_problem(cls: type, options: Mapping[str, Any]) -> str | None:
    """Why ``options`` cannot be given to ``cls``, or None when every key is known."""
    bad = unknown(options, accepted_driver_options(cls))
    if not bad:
        return None
    credentials = sorted(set(bad) & POSITIONAL_CREDENTIALS)
    if credentials:
        return (
            f"spec.driver: {', '.join(credentials)} come(s) from the credentials Secret, "
            "not from driver options"
        )
    return (
        f"spec.driver: unknown option(s) {', '.join(bad)} for {cls.__name__} "
        f"(the driver would ignore them); accepted: {_listing(accepted_driver_options(cls))}"
    )


def create_option_problem(cls: type, queue: str, options: Mapping[str, Any]) -> str | None:
    """Why ``createOptions`` cannot go to ``cls.create_node``, or None."""
    bad = unknown(options, accepted_create_options(cls))
    if not bad:
        return None
    return (
        f"queue {queue}: instance.createOptions: unknown option(s) {', '.join(bad)} for "
        f"{cls.__name__}.create_node; accepted: {_listing(accepted_create_options(cls))}"
    )


def check_queues(
    queues: Sequence[QueueConfig], resolve: Callable[[str], type] | None = None
) -> None:
    """Raise :class:`ConfigError` for the first unknown driver or create option.

    ``resolve`` maps ``cloudType`` to a driver class (``drivers.driver_class`` by default;
    its own ConfigError for an unknown cloudType goes through unchanged).
    """
    if resolve is None:
        from cloudpilot.cloud.drivers import driver_class

        resolve = driver_class
    for queue in queues:
        options = queue.account.options
        cls = resolve(queue.account.cloud_type)
        problem = driver_option_problem(cls, options)
        if problem is None:
            problem = create_option_problem(
                concrete_class(cls, options), queue.name, queue.create_options
            )
        if problem is not None:
            raise ConfigError(problem)
