"""The example ledger's use cases and its demo workload, on the kernel's ``UseCase``."""
