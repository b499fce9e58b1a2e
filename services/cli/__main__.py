"""``python -m services.cli``: what tests, `berth run` and the container start services with."""

import sys

from services.cli import main

sys.exit(main())
