"""Contextualisation: the cloud-init user data that turns a bare image into a pilot VM.

The reconciler calls :func:`build_user_data` once per queue per reconcile; the CLI
(``cloudpilot render``) and tests use the synchronous pieces. Modules:

- ``templating``: sandboxed Jinja2 rendering, filters, errors with template and line;
- ``variables``: the template context of a queue (documented variables, the stamp rule);
- ``validation``: the output must be cloud-config or a MIME multipart;
- ``limits``: per-provider size limits and the gzip decision;
- ``userdata``: the pipeline and its cache.
"""

from cloudpilot.context.errors import UserDataError
from cloudpilot.context.limits import LIMITS, Provider, SizeLimit, fit, provider_for, size_limit
from cloudpilot.context.templating import TemplateSource, builtin, render, site_template
from cloudpilot.context.userdata import (
    RenderedUserData,
    build_user_data,
    builtin_for,
    prepare_user_data,
)
from cloudpilot.context.validation import check_user_data
from cloudpilot.context.variables import template_variables

__all__ = [
    "LIMITS",
    "Provider",
    "RenderedUserData",
    "SizeLimit",
    "TemplateSource",
    "UserDataError",
    "build_user_data",
    "builtin",
    "builtin_for",
    "check_user_data",
    "fit",
    "prepare_user_data",
    "provider_for",
    "render",
    "site_template",
    "size_limit",
    "template_variables",
]
