"""``python -m edgec.compiler`` runs the CLI."""

import sys

from edgec.compiler.cli import main

sys.exit(main())
