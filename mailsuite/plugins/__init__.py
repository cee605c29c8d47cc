"""mailsuite component, store backend and check plugins (found with twisted.plugin)."""
