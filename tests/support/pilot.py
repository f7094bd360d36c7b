"""A realistic fake DIRAC pilot wrapper, for sizing and checking user data.

DIRAC's SiteDirector hands a Cloud CE a bash script that runs the system python on a script
embedded in a here-document. Pilot files travel inside it as base64 of bz2 (one very long
line each), and the pilot proxy is bundled with them. The seed measured 12.4 KB for a real
wrapper with its proxy; this one is about 12.5 KB and has the same texture: ordinary Python,
a long base64 line that barely compresses, and a PEM proxy (here as a
``-----BEGIN CERTIFICATE-----`` block the script writes out), so that gzip ratios, YAML
quoting and secret masking are exercised as they would be with the real thing.

Everything is deterministic (seeded), and nothing in it is a real key or certificate.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import random
import subprocess
import tempfile
import textwrap
from functools import cache
from pathlib import Path

import yaml

_WORDS = (
    "pilot",
    "job",
    "queue",
    "site",
    "proxy",
    "token",
    "cvmfs",
    "payload",
    "matcher",
    "agent",
    "watchdog",
    "cpu",
    "wallclock",
    "logger",
    "status",
    "command",
    "install",
    "configure",
    "check",
    "platform",
    "architecture",
    "release",
    "project",
    "timeleft",
    "slots",
    "memory",
    "environment",
    "setup",
    "extension",
    "version",
    "directory",
    "server",
)


def _pem(kind: str, rng: random.Random, size: int) -> str:
    body = base64.b64encode(rng.randbytes(size)).decode()
    lines = textwrap.wrap(body, 64)
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])


def fake_proxy_pem(seed: int = 3) -> str:
    """A proxy as DIRAC writes it: proxy certificate, its private key, the user certificate."""
    rng = random.Random(seed)
    return (
        "\n".join(
            [
                _pem("CERTIFICATE", rng, 820),
                _pem("RSA PRIVATE KEY", rng, 1190),
                _pem("CERTIFICATE", rng, 1010),
            ]
        )
        + "\n"
    )


def _pilot_files_blob(rng: random.Random, size: int) -> str:
    """base64(bz2(...)) of pseudo pilot files, as the wrapper embeds them."""
    words = [rng.choice(_WORDS) for _ in range(size)]
    text = "\n".join(
        f"def {a}_{b}(self, {c}):\n    return self.{d}.{e}({c}, {rng.randint(0, 99999)})"
        for a, b, c, d, e in zip(*(iter(words),) * 5, strict=False)
    )
    return base64.b64encode(bz2.compress(text.encode(), 9)).decode()


_PRELUDE = r"""#!/bin/bash
# Fake DIRAC pilot wrapper, generated for CloudPilot's tests: same shape as the real one.
# Reduce the open file descriptor limit: some package managers hang with huge limits.
current_limit=$(ulimit -n)
new_limit=1048575
if [ "${current_limit}" = "unlimited" ] || [ "${current_limit}" -gt "${new_limit}" ]; then
    ulimit -n "${new_limit}"
fi
if command -v python3 &> /dev/null; then
  py='python3'
elif command -v python &> /dev/null; then
  py='python'
fi
/usr/bin/env $py << EOF

# imports
import base64
import bz2
import hashlib
import io
import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from uuid import uuid1

try:
    from urllib.request import urlopen
    from urllib.error import URLError
except ImportError:
    from urllib2 import urlopen, URLError


class UTCFormatter(logging.Formatter):
    '''Log time stamps in UTC with microseconds, as the pilot logging service expects.'''

    def formatTime(self, record, datefmt=None):
        ct = self.converter(record.created)
        t = time.strftime("%Y-%m-%dT%H:%M:%S", ct)
        return "%s,%06dZ" % (t, (record.created - int(record.created)) * 1e6)


formatter = UTCFormatter('%(asctime)s %(levelname)-8s [%(name)s] %(message)s')
logging.Formatter.converter = time.gmtime
screen_handler = logging.StreamHandler(stream=sys.stdout)
screen_handler.setFormatter(formatter)
logger = logging.getLogger('pilotLogger')
logger.setLevel(logging.DEBUG)
logger.addHandler(screen_handler)

logger.debug('===========================================================')
logger.debug('Environment of execution host')
for key, val in sorted(os.environ.items()):
    logger.debug(key + '=' + val)
logger.debug('===========================================================')
logger.debug(sys.version)

# the pilot works in a directory of its own
pilotExecDir = os.getcwd()
pilotWorkingDirectory = tempfile.mkdtemp(suffix='pilot', prefix='DIRAC_', dir=pilotExecDir)
pilotWorkingDirectory = os.path.realpath(pilotWorkingDirectory)
os.chdir(pilotWorkingDirectory)
logger.info("Launching dirac-pilot script from %s" % os.getcwd())


def unpack(name, encoded):
    '''Write one bundled file: base64 of bz2, as the SiteDirector packed it.'''
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with io.open(fd, 'wb') as out:
            out.write(bz2.decompress(base64.b64decode(encoded)))
        os.chmod(name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR)
    except Exception as x:
        print(x, file=sys.stderr)
        logger.error(x)
        shutil.rmtree(pilotWorkingDirectory)
        sys.exit(3)


def fetch(locations, names):
    '''Download the pilot files from the first location that answers.'''
    for loc in locations:
        try:
            for fileName in names:
                remote = urlopen(os.path.join(loc, fileName), timeout=10)
                with open(fileName, 'wb') as local:
                    local.write(remote.read())
            return loc
        except (URLError, Exception) as e:
            logger.error('%s unreachable (this is normal!)' % loc)
            logger.exception(e)
    return None


def check_sums(path):
    '''Compare each downloaded file with its published sha512.'''
    with open(path) as sums:
        for line in sums.read().split('\n'):
            if not line.strip():
                continue
            expected, fileName = line.split('  ', 1)
            if not os.path.exists(fileName):
                continue
            found = hashlib.sha512(open(fileName, 'rb').read()).hexdigest()
            if found != expected:
                logger.error('Checksum mismatch for file %r' % fileName)
                sys.exit(-1)


# unpacking lines
logger.info("But first unpacking pilot files")
"""

_LAUNCH = r"""
# the bundled proxy
with open('proxy', 'w') as out:
    out.write('''{proxy}''')
os.chmod('proxy', stat.S_IRUSR | stat.S_IWUSR)
os.environ['X509_USER_PROXY'] = os.path.join(pilotWorkingDirectory, 'proxy')

# Getting the pilot files
locations = ['https://lbcertifdirac70.cern.ch:8443/pilot', 'file:/cvmfs/dirac.egi.eu/pilot']
if fetch(locations, ['checksums.sha512', 'pilot.json', 'pilot.tar']) is None:
    logger.error("None of the locations of the pilot files is reachable")
    sys.exit(-1)
if os.path.exists('checksums.sha512'):
    check_sums('checksums.sha512')

# now finally launching the pilot script
opt = "-S DIRAC-Certification -N {ce} -Q {queue} -n LCG.Cloud.cern -l DIRAC --pythonVersion=3"
UUID = os.environ.get('DIRAC_PILOT_STAMP')
if UUID is None:
    UUID = str(uuid1())
opt = opt + " --pilotUUID " + UUID
logger.info("dirac-pilot.py will be called with %s" % opt)
proc = subprocess.Popen(shlex.split(sys.executable + " dirac-pilot.py " + opt), bufsize=1,
                        stdout=sys.stdout, stderr=sys.stderr, universal_newlines=True)
proc.communicate()
ret = proc.returncode
shutil.rmtree(pilotWorkingDirectory)
if ret:
    sys.exit(1)

EOF
"""


@cache
def pilot_wrapper(ce: str = "cloud.example.org", queue: str = "default", seed: int = 7) -> str:
    """The fake wrapper: about 12.5 KB, like DIRAC's with a bundled proxy."""
    rng = random.Random(seed)
    blob = _pilot_files_blob(rng, 1100)
    unpack = f"unpack('pilot.json', b'{blob}')\n"
    launch = _LAUNCH.format(proxy=fake_proxy_pem(), ce=ce, queue=queue)
    return _PRELUDE + unpack + launch


PILOT_WRAPPER = pilot_wrapper()
FAKE_PROXY_PEM = fake_proxy_pem()


# -- what a VM does with its user data (for end-to-end tests) ----------------------------------

STAMP_BEGIN = "# --- CloudPilot pilot stamp"
STAMP_END = "# --- end of pilot stamp"
BOOT_SCRIPT = "/var/lib/cloudpilot/boot.sh"


def decode_user_data(payload: bytes) -> str:
    """User data as cloud-init reads it: gunzipped when it is gzip."""
    return (gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload).decode()


def boot_script(payload: bytes) -> str:
    """The boot script a built-in template writes (``/var/lib/cloudpilot/boot.sh``)."""
    config = yaml.safe_load(decode_user_data(payload))
    return next(f["content"] for f in config["write_files"] if f["path"] == BOOT_SCRIPT)


def stamp_on_vm(payload: bytes, instance_id: str) -> tuple[str, str]:
    """Run the stamp code carried by ``payload`` as the VM with ``instance_id`` would at
    boot (bash, with a fake ``cloud-init query`` answering the id) and return the
    ``(PILOT_UUID, DIRAC_PILOT_STAMP)`` the pilot gets.

    For the end-to-end test: the user data an emulated VM carries (``describe_user_data``)
    must give that VM the stamp the operator records (``naming.pilot_stamp(vm.id)``).
    """
    script = boot_script(payload)
    start, end = script.index(STAMP_BEGIN), script.index(STAMP_END)
    functions = script[start:end]
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "cloud-init"
        fake.write_text(
            '#!/bin/sh\n[ "$1 $2" = "query v1.instance_id" ] || exit 2\n'
            'printf "%s\\n" "$FAKE_INSTANCE_ID"\n'
        )
        fake.chmod(0o755)
        result = subprocess.run(
            [
                "bash",
                "-c",
                functions + "\nid=$(cloudpilot_instance_id)\n"
                'printf "cloud://%s\\n" "$id"\ncloudpilot_pilot_stamp "$id"\n',
            ],
            env={
                "PATH": f"{tmp}:/usr/bin:/bin",
                "FAKE_INSTANCE_ID": instance_id,
                "CLOUDPILOT_METADATA_URL": "http://127.0.0.1:9",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    uuid, stamp = result.stdout.split()
    return uuid, stamp
