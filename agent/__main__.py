"""`python -m agent` is the `edge-agent` command."""

import sys

from agent.cli.main import main

sys.exit(main())
