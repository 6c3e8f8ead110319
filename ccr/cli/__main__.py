"""``python -m ccr.cli``: the same as the ``ccr-client`` command."""

import sys

from ccr.cli import main

sys.exit(main())
