"""``python -m permwatch.cli``."""

from permwatch.cli import main

raise SystemExit(main())
