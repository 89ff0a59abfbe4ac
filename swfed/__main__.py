"""``python -m swfed``: the same as the ``swfed`` command."""

import sys

from swfed.cli import main

sys.exit(main())
