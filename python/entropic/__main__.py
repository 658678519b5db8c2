"""``python -m entropic``: the same command line as the ``entropic`` script."""

import sys

from entropic.cli import main

sys.exit(main())
