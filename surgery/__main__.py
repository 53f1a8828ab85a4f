"""``python -m surgery`` runs the command line."""

import sys

from surgery.cli import main

sys.exit(main())
