"""``python -m svc``: the consumer service (see svc.service)."""

import sys

from .service import main

sys.exit(main())
