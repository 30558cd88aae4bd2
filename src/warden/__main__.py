"""``python -m warden``: the ``warden`` command."""

from __future__ import annotations

from warden.supervisor.cli import main

raise SystemExit(main())
