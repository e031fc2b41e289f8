"""``python -m agent.cli``: the same command line as ``edge-agent`` (the recipes use this form)."""

from agent.cli.main import main

raise SystemExit(main())
