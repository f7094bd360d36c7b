"""libcloud's EC2 driver, fixed for moto's one incompatibility.

Why this exists: CloudPilot's tests and demo run against moto (see
:mod:`cloudpilot_devtools.ec2_emulator`) and must exercise libcloud's *real* EC2 driver code
(request building, SigV4 signing, XML parsing), so that what passes here is what runs
against AWS. moto answers with the XML namespace ``http://ec2.amazonaws.com/doc/2016-11-15``
(no trailing slash), while libcloud looks elements up in
``http://ec2.amazonaws.com/doc/2016-11-15/``: every list (nodes, images, ...) then parses as
silently empty. This module only rewrites that namespace in responses, and strips it from
error bodies so that libcloud's error parser (which looks for un-namespaced
``Errors/Error``) puts the EC2 error code (``InvalidInstanceID.NotFound``,
``InvalidAMIID.Malformed``, ...) in the exception message. Nothing else is changed; the
driver defaults to SigV4, which moto needs to route requests to EC2 rather than S3.

Use it as a class (``MotoEC2NodeDriver(key, secret, host=, port=, secure=False)``), by its
dotted path ``"cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver"``, or through libcloud's
provider registry after :func:`register` (``get_driver(MOTO_EC2_PROVIDER)``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from libcloud.compute.drivers.ec2 import (
    NAMESPACE,
    EC2Connection,
    EC2NodeDriver,
    EC2Response,
)
from libcloud.compute.providers import DRIVERS, set_driver

__all__ = [
    "CLASS_PATH",
    "MOTO_EC2_PROVIDER",
    "MotoEC2Connection",
    "MotoEC2NodeDriver",
    "MotoEC2Response",
    "register",
]

#: The ``cloudType`` of pools on the emulator. Not allowed by default: the tests, the
#: benchmarks and the demo put it on their operator's ``allowed_driver_classes``.
CLASS_PATH: Final = "cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver"

#: Provider name under which :func:`register` puts the driver in libcloud's registry.
MOTO_EC2_PROVIDER: Final = "moto-ec2"

# Any EC2 API version, with or without the trailing slash.
_EC2_XMLNS = re.compile(r'xmlns="http://ec2\.amazonaws\.com/doc/\d{4}-\d{2}-\d{2}/?"')


class MotoEC2Response(EC2Response):
    """EC2 response whose body namespace is normalised before libcloud parses it."""

    def parse_body(self) -> Any:
        if self.body:
            self.body = _EC2_XMLNS.sub(f'xmlns="{NAMESPACE}"', self.body)
        return super().parse_body()  # type: ignore[no-untyped-call]  # unannotated in libcloud

    def parse_error(self) -> Any:
        if self.body:
            self.body = _EC2_XMLNS.sub("", self.body)
        return super().parse_error()  # type: ignore[no-untyped-call]  # unannotated in libcloud


class MotoEC2Connection(EC2Connection):
    responseCls = MotoEC2Response


class MotoEC2NodeDriver(EC2NodeDriver):
    """libcloud's ``EC2NodeDriver`` talking to moto: SigV4 by default, moto's namespace
    normalised. Accepts every ``EC2NodeDriver`` argument (``host``, ``port``, ``secure``,
    ``region``, ...)."""

    name = "Amazon EC2 (moto)"
    connectionCls = MotoEC2Connection

    def __init__(
        self,
        key: str,
        secret: str | None = None,
        secure: bool = False,
        host: str | None = None,
        port: int | None = None,
        region: str = "us-east-1",
        token: str | None = None,
        signature_version: str | None = "4",
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]  # unannotated in libcloud
            key,
            secret=secret,
            secure=secure,
            host=host,
            port=port,
            region=region,
            token=token,
            signature_version=signature_version or "4",
            **kwargs,
        )


def register(provider: str = MOTO_EC2_PROVIDER) -> str:
    """Register the driver in libcloud's compute registry (idempotent); returns the
    provider name to pass to ``libcloud.compute.providers.get_driver``."""
    if provider not in DRIVERS:
        # libcloud's type comment says module/class objects; its registry stores and
        # imports dotted names (the documented way to register out-of-tree drivers).
        set_driver(provider, __name__, MotoEC2NodeDriver.__name__)  # type: ignore[arg-type]
    return provider
