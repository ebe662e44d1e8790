"""Domain exceptions: the library raises these, only cli.py turns them into exit status 2."""


class NnprobeError(Exception):
    """A problem the user can fix; its message is one paragraph meant for them."""


class ConfigError(NnprobeError):
    """The config file (or a --set override) is unreadable or invalid."""


class DataError(NnprobeError):
    """The data source could not be generated or loaded."""


class RunDirError(NnprobeError):
    """A run directory is missing, already used, or its files are unreadable."""


class UserCodeError(NnprobeError):
    """A user-supplied activation could not be loaded or is wrong."""


class RecorderError(NnprobeError):
    """nnprobe.Recorder was used in a way it cannot record: its message says what was given and what to do."""
