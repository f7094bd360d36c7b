"""``python -m cloudpilot`` is the same as the ``cloudpilot`` console script."""

from cloudpilot.cli import main

raise SystemExit(main())
