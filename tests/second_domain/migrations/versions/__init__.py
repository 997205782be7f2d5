"""The lending library's revisions."""
