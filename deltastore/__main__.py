"""``python -m deltastore`` is the ``deltastore`` command."""

import sys

from deltastore.cli.main import main

sys.exit(main())
