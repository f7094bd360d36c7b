"""Fixtures shared across the suite. moto's state is global to a process, so there is one
EC2 emulator per test process (reset for each test); the OpenStack peer (keystone + mimic)
likewise starts once, on first use."""

pytest_plugins = ["tests.support.ec2", "tests.support.openstack", "tests.support.cluster"]
