"""`python -m app.cli`: the `vlm-playground` command."""

import sys

from app.cli.main import main

sys.exit(main())
