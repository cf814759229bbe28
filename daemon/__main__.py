"""``python -m wanlora.daemon run|start|stop|status`` — the same as ``wanlora daemon ...`` without the CLI package."""

import sys

from wanlora.daemon.service import main

sys.exit(main())
