"""Errors a user can act on: each message names the key or file and the fix."""


class RepurifyError(Exception):
    """Base class for every error a stage reports without a traceback."""


class ParamsError(RepurifyError):
    """params.yaml is missing a key, has a wrong type or an invalid value."""


class DataUnavailableError(RepurifyError):
    """A dataset's files are absent and cannot be downloaded."""


class CheckpointError(RepurifyError):
    """A checkpoint is missing, corrupt or was built with other params."""
