"""The exception types of the data layer.

Every reader, layout and label map raises `DataError` with a message that names the offending file or
setting and says what was expected, so a researcher can fix the data without reading a traceback.
It subclasses ValueError so generic callers that catch ValueError keep working. `LoaderWorkerError` is not bad
data but a DataLoader worker process that died (the out-of-memory killer, most often), said in one line.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data; message names the file/setting and what was expected."""


class LoaderWorkerError(RuntimeError):
    """A DataLoader worker process died while loading training batches; message names data.loader.num_workers."""


# How PyTorch's DataLoader reports a worker that died (torch/utils/data/dataloader.py, _utils/signal_handling.py):
# "DataLoader worker (pid 123) is killed by signal: Killed." or "DataLoader worker (pid(s) 123) exited unexpectedly".
WORKER_DIED_PREFIX = "DataLoader worker (pid"


def worker_died(error: BaseException, num_workers: int, where: str) -> LoaderWorkerError | None:
    """PyTorch's error for a dead loader worker, as one line that says what to change; None for other errors.

    ``where``: the point of training, e.g. ``"epoch 2, 6 steps done"``."""
    message = str(error)
    if not isinstance(error, RuntimeError) or not message.startswith(WORKER_DIED_PREFIX):
        return None
    what = message.strip().split(". ")[0].rstrip(".")  # PyTorch's first sentence: which pid, which signal
    return LoaderWorkerError(
        f"{what} ({where}, data.loader.num_workers={num_workers}); most often the out-of-memory killer: set fewer "
        "workers (data.loader.num_workers=0 loads in the training process) or give the run more memory (shared "
        "memory /dev/shm too), then rerun the same command: it resumes from the last checkpoint"
    )
