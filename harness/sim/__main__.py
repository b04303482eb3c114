"""``python -m harness.sim --profile vllm --port 0``: run the simulator (see ``cli``)."""

import sys

from .cli import main

sys.exit(main())
