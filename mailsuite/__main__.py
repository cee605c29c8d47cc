"""`python -m mailsuite` is the admin command."""

import sys

from mailsuite.cli import main

sys.exit(main())
