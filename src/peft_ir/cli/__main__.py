"""`python -m peft_ir.cli` (what torchrun launches)."""

import sys

from peft_ir.cli import main

sys.exit(main())
