"""In-process fakes of the external services aftercare talks to (used by the tests only)."""
