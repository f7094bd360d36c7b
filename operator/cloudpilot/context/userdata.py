"""User data for a queue's VMs (the minimal core; templates come with contextualisation).

Rendered once per queue per reconcile: every VM of a batch gets the same bytes, and each
VM derives its own pilot stamp from its instance id at boot (see ``naming.pilot_stamp``).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from cloudpilot.models.queues import QueueConfig


@dataclass(frozen=True)
class UserDataInputs:
    queue: QueueConfig
    pilot_executable: str | None
    template_text: str | None = None


def render_user_data(inputs: UserDataInputs) -> bytes:
    queue = inputs.queue
    config: dict[str, object] = {
        "write_files": [
            {
                "path": "/mnt/dirac/pilot.sh",
                "permissions": "0700",
                "content": inputs.pilot_executable or "#!/bin/sh\necho no pilot executable\n",
            }
        ],
        "packages": list(queue.ext_packages),
        "runcmd": [["sh", "/mnt/dirac/pilot.sh"], ["poweroff"]],
    }
    return ("#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)).encode()
