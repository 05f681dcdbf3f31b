"""``python -m n2n_env``: the ``n2n`` command."""

import sys

from n2n_env.cli import main

sys.exit(main())
