"""Run a real DiracX (the PyPI routers, 0.7.0) on 127.0.0.1: run by DiracX's own venv.

Started by :mod:`tests.support.diracx_peer` with the peer venv's python; it imports
nothing of CloudPilot. Everything lives in the work directory given as the first argument:

* ``cs/``: a local configuration repository made with ``dirac internal generate-cs``,
  ``add-vo`` and ``add-user`` (DiracX's own CLI, as a site admin would);
* ``*.db``: one sqlite database per DiracX database, as DiracX's own tests run it;
* a moto S3 server on a loopback port for the sandbox store (DiracX checks the bucket at
  start-up);
* a JWK set with one Ed25519 signing key: tokens are minted with DiracX's own
  ``create_token``, so the server verifies them exactly as it would a real one.

When uvicorn listens, ``ready.json`` is written (atomically) with the port and the tokens;
the parent reads it and removes it. SIGTERM stops uvicorn and moto.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

VO = "testvo"
OPERATOR_SUB = "cloudpilot-operator"
USER_SUB = "job-submitter"


def run_cli(work: Path, *args: str) -> None:
    dirac = Path(sys.executable).with_name("dirac")
    subprocess.run([str(dirac), "internal", *args], check=True, cwd=work, stdout=subprocess.DEVNULL)


def make_config_repo(work: Path) -> str:
    repo = work / "cs"
    repo.mkdir()
    url = f"git+file://{repo}"
    run_cli(work, "generate-cs", url)
    run_cli(
        work,
        "add-vo",
        url,
        "--vo",
        VO,
        "--idp-url",
        "https://idp.invalid",
        "--idp-client-id",
        "cloudpilot-tests",
    )
    for sub, name in ((OPERATOR_SUB, "cloudpilot"), (USER_SUB, "submitter")):
        run_cli(work, "add-user", url, "--vo", VO, "--sub", sub, "--preferred-username", name)
    return url


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def main() -> None:
    work = Path(sys.argv[1])
    config_url = make_config_repo(work)

    from cryptography.fernet import Fernet
    from joserfc.jwk import KeySet, OKPKey
    from moto.server import ThreadedMotoServer

    s3_sock = free_socket()
    s3_port = s3_sock.getsockname()[1]
    s3_sock.close()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()

    key = OKPKey.generate_key(
        parameters={"key_ops": ["sign", "verify"], "alg": "Ed25519", "kid": uuid.uuid4().hex}
    )
    issuer = "http://127.0.0.1/cloudpilot-tests"
    env = {
        "DIRACX_CONFIG_BACKEND_URL": config_url,
        "DIRACX_SERVICE_RSS_ENABLED": "false",
        "DIRACX_SERVICE_AUTH_TOKEN_KEYSTORE": json.dumps(KeySet([key]).as_dict(private=True)),
        "DIRACX_SERVICE_AUTH_STATE_KEY": Fernet.generate_key().decode(),
        "DIRACX_SERVICE_AUTH_TOKEN_ISSUER": issuer,
        "DIRACX_SERVICE_AUTH_ALLOWED_REDIRECTS": '["http://127.0.0.1/docs/oauth2-redirect"]',
        "DIRACX_SANDBOX_STORE_BUCKET_NAME": "sandboxes",
        "DIRACX_SANDBOX_STORE_AUTO_CREATE_BUCKET": "true",
        "DIRACX_SANDBOX_STORE_S3_CLIENT_KWARGS": json.dumps(
            {
                "endpoint_url": f"http://127.0.0.1:{s3_port}",
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
            }
        ),
        "DIRACX_OS_DB_JOBPARAMETERSDB": json.dumps(
            {"sqlalchemy_dsn": f"sqlite+aiosqlite:///{work / 'jobparameters.db'}"}
        ),
    }
    for db in (
        "AUTHDB",
        "JOBDB",
        "JOBLOGGINGDB",
        "SANDBOXMETADATADB",
        "TASKQUEUEDB",
        "PILOTAGENTSDB",
    ):
        env[f"DIRACX_DB_URL_{db}"] = f"sqlite+aiosqlite:///{work / (db.lower() + '.db')}"
    os.environ.update(env)

    from diracx.core.models import AccessTokenPayload
    from diracx.core.settings import AuthSettings
    from diracx.logic.auth.token import create_token

    settings = AuthSettings()

    def token(sub: str, name: str, properties: list[str]) -> str:
        payload = AccessTokenPayload(
            jti=str(uuid.uuid4()),
            exp=datetime.now(UTC) + timedelta(days=1),
            dirac_policies={},
            sub=f"{VO}:{sub}",
            vo=VO,
            iss=issuer,
            dirac_properties=properties,
            preferred_username=name,
            dirac_group="user",
        )
        return create_token(payload, settings)

    import uvicorn
    from diracx.testing.routers import create_app

    sock = free_socket()
    port = sock.getsockname()[1]
    tokens = {
        # What a pilot factory needs: manage pilots, read the job queue of its VO.
        "operator": token(
            OPERATOR_SUB, "cloudpilot", ["ServiceAdministrator", "JobAdministrator", "NormalUser"]
        ),
        "user": token(USER_SUB, "submitter", ["NormalUser"]),
    }

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # keep uvicorn's SIGTERM handling
            super().install_signal_handlers()

        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            await super().startup(sockets=sockets)
            ready = work / "ready.json.tmp"
            ready.write_text(json.dumps({"port": port, "s3_port": s3_port, "tokens": tokens}))
            ready.rename(work / "ready.json")

    config = uvicorn.Config(
        create_app,
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    try:
        Server(config).run(sockets=[sock])
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
