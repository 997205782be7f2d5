"""Programs the multi-process tests start as separate OS processes (``python -m tests.processes.X``)."""
