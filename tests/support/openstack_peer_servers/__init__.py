"""Scripts that run INSIDE the OpenStack peer's own virtualenv, never in CloudPilot's.

keystone and mimic pin libraries that would break CloudPilot's environment, so they live in
a separate venv (created by ``.ci/setup-openstack-peer.sh``). The modules here are started
by :mod:`tests.support.openstack_peer` as ``<peer python> <script path> ...``; they
import only the standard library plus keystone / mimic / Twisted / Werkzeug, and nothing
from ``cloudpilot``. Test machinery: they live under tests/, out of the product.
"""
