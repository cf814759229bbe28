"""``python -m daemon run|start|stop|status`` — the same as ``wanlora daemon ...`` without the CLI package."""

import sys

from daemon.service import main

sys.exit(main())
