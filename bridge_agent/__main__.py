"""`python -m bridge_agent` runs the command line."""

from bridge_agent.cli import main

raise SystemExit(main())
