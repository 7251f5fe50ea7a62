"""``python -m ganforge``: the command line.

``-m`` puts the current folder first on sys.path; it is taken off before anything else is
imported, so that a module lying in the folder one stands in (a run directory's ``nets.py``)
is never imported in place of an installed one.
"""

import os
import sys

if not getattr(sys.flags, "safe_path", False) and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import main  # noqa: E402

sys.exit(main())
