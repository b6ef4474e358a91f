"""What an error met while reading or writing a run's files means: a storage fault (full,
read-only, failing storage), damaged files, or neither (a read that may succeed later).
Judged by errno and by TensorStore's status codes, not by the English of a message."""

import errno
import json
import os
import re
from collections.abc import Iterator

# Storage faults a run cannot save through, by errno: full, read-only, forbidden, over
# quota, failing hardware.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO})


def fault(error: BaseException | None) -> str | None:
  """What the storage fault behind `error` (or its causes) is, by its errno: an OSError's,
  or the `os_error_code` TensorStore writes into the errors Orbax raises; None for any
  other error."""
  for cause in causes(error):
    code = cause.errno if isinstance(cause, OSError) else None
    if code is None and (found := re.search(r"os_error_code='(\d+)'", str(cause))):
      code = int(found[1])
    if code in STORAGE_ERRNOS:
      return os.strerror(code)
  return None


# TensorStore's status codes (leading the errors Orbax raises) that show a checkpoint's
# files damaged, as opposed to a read that failed this time.
DAMAGE_STATUSES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND")


def damaged(error: BaseException) -> bool:
  """Whether `error` (or a cause of it) shows a checkpoint's files damaged: unparsable
  metadata, a missing file, or a TensorStore status of damage (truncated data, a corrupt
  or missing chunk), rather than a read that may succeed another time."""
  for cause in causes(error):
    if isinstance(cause, (json.JSONDecodeError, FileNotFoundError)):
      return True
    if re.match(rf"({'|'.join(DAMAGE_STATUSES)}): ", str(cause)):
      return True
  return False


def causes(error: BaseException | None) -> Iterator[BaseException]:
  """`error`, then its causes and contexts."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__
