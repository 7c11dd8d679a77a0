"""`python -m agent` is the `edge-agent` command."""

import sys

from agent.cli import main

sys.exit(main())
