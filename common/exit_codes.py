"""Process exit codes, defined once for every command (docs/cli.md).

They follow Kubeflow's TFJob `restartPolicy: ExitCode` and the CronJob's
`podFailurePolicy`: 1 and 2 are permanent (the job fails, retrying cannot help); 130,
137, 138 and 143 are retried.
"""

OK = 0
BAD_INPUT = 1  # bad input or config: the message names the file, line or key
RETRYABLE = 138  # a lost peer, a storage or runner failure: retry the pod
INTERRUPTED = 130  # Ctrl-C
SIGKILL = 137  # set by the kernel, never returned by us
SIGTERM = 143  # preemption: the default SIGTERM handler ends the process with it

# TensorFlow errors of a lost peer or an aborted collective (tf.errors.*), by name so
# that this module does not import TensorFlow.
_RETRYABLE_TF_ERRORS = {
    "UnavailableError",
    "DeadlineExceededError",
    "AbortedError",
    "CancelledError",
}


class RetryableError(RuntimeError):
    """An expected failure that a retry can fix (another export holds the lock, a backend
    is unreachable): exit 138, reported in one line without a traceback."""


def exit_code(error: BaseException) -> int:
    """The exit code for an error that ended a command.

    Bad input or config (ValueError and its subclasses: ConfigError, DataError; missing or
    existing files; other TensorFlow errors such as a corrupt record) is permanent: 1.
    A lost peer is retryable (138), Ctrl-C is 130. Anything else is unexpected and may be
    transient (a storage or runner failure): 138, so the job retries a bounded number
    of times (its backoff limit).
    """
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, RetryableError):
        return RETRYABLE
    name = type(error).__name__
    if type(error).__module__.startswith("tensorflow"):
        return RETRYABLE if name in _RETRYABLE_TF_ERRORS else BAD_INPUT
    if isinstance(error, ValueError | FileNotFoundError | FileExistsError | NotADirectoryError):
        return BAD_INPUT
    return RETRYABLE
