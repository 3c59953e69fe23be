"""`python -m app.worker`: serve one model (see `app.worker.server`)."""

import sys

from app.worker.server import main

sys.exit(main())
