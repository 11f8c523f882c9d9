"""``python -m chatserver``: the same command as ``chatserver``."""

from chatserver.cli import main

raise SystemExit(main())
