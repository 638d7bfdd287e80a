"""Allows `python -m t2v_hub.cli ...` and `accelerate launch -m t2v_hub.cli ...`."""

import sys

from .main import main

sys.exit(main())
