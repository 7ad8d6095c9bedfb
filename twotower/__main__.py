"""`python -m twotower` runs the command line."""

import sys

from twotower.cli import main

sys.exit(main())
