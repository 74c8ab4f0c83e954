"""`python -m bench.agent_footprint`: run the footprint benchmark."""

from __future__ import annotations

import sys

from bench.agent_footprint.run import main

sys.exit(main())
