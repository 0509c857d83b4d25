"""The exceptions of the inferenceutils package. Each message names the path or thing involved
and the fix to try."""


class InferenceUtilsError(Exception):
    """Base class of the errors raised by inferenceutils."""


class LauncherError(InferenceUtilsError, RuntimeError):
    """The inferenceutils launcher could not be found or did not answer (outside the launcher)."""


class ModelError(InferenceUtilsError):
    """A model file that load() refuses before llama.cpp is asked to load it."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model file does not exist."""


class NotGGUFError(ModelError, ValueError):
    """The file is not a GGUF model (llama.cpp loads GGUF only)."""


class ModelTooLargeError(ModelError, MemoryError):
    """The model is larger than the memory this machine has for it."""
