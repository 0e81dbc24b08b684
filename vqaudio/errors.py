"""The one exception type users see: a problem with their input, shown as one line, exit code 2."""


class VQAudioError(Exception):
    """Bad input or a request that cannot be met; the message says which file, what, and what to do."""


class TrainingInterrupted(Exception):
    """Raised inside the training loop when the user presses Ctrl-C or the job gets SIGTERM."""


class SweepStopped(TrainingInterrupted):
    """SIGTERM or Ctrl-C reached a sweep; the trial it stopped goes back in the queue, to continue from its checkpoint."""
