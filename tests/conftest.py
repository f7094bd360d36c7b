"""Fixtures shared across the suite: the OpenStack peer (keystone + mimic) is started once
per process on first use and stopped after its last user."""

pytest_plugins = ["tests.support.openstack"]
