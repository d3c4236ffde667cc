"""The toolkit's own errors: what run_control.run_main reports as one line
(naming the file or flag and what is wrong) with exit status 1. Anything
else is a bug and keeps its traceback."""


class UsageError(Exception):
  """A flag value or a request that cannot be carried out."""


class NanLossError(Exception):
  """The loss became NaN or infinite."""


class DataSetError(Exception):
  """A data set that is missing, cannot be fetched, or is malformed."""


class FlagError(UsageError):
  """A flag's value (or what it reads, such as Slurm's variables) that is
  wrong: exit status 2, as a flag error found while parsing."""
