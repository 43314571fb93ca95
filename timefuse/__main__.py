from __future__ import annotations

import sys

from timefuse.entrypoints.cli import main

sys.exit(main())
