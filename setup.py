"""Package discovery only (metadata lives in pyproject.toml).

``cloudpilot`` lives under ``operator/``; its templates and CRDs live at the top level of the
repository, where site admins look for them, and are shipped inside the package as
``cloudpilot.templates`` and ``cloudpilot.crds``. ``packages.find`` cannot see mapped
directories, so the list is computed here. ``cloudpilot_devtools`` (emulators for the demo,
tests and benchmarks) is a top-level package of its own next to ``cloudpilot``; its
dependencies come with the ``demo`` extra.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(
            "operator",
            include=["cloudpilot", "cloudpilot.*", "cloudpilot_devtools", "cloudpilot_devtools.*"],
        ),
        "cloudpilot.templates",
        "cloudpilot.crds",
    ]
)
