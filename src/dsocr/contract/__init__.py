"""Layer 1: the facts that capture and analysis must agree on (names, layout, exit codes)."""
