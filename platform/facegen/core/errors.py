"""User-facing errors.

Everything a user can get wrong (a bad photo, a photo with no face, a prompt without S*, an unknown config key, a
model that is not there) raises a subclass of `FacegenError`. The CLI prints its message on one line and exits
non-zero; the HTTP service maps `code` to a 4xx status. Anything else is a bug and keeps its traceback.
"""


class FacegenError(Exception):
    code = "error"


class InvalidImage(FacegenError):
    code = "invalid_image"


class ImageTooLarge(InvalidImage):
    code = "too_large"


class NoFaceFound(FacegenError):
    code = "no_face"


class BadPrompt(FacegenError):
    code = "bad_prompt"


class BadSampling(FacegenError):
    """A sampling value (steps, guidance, size, number of images) outside what any caller may ask for."""

    code = "validation"


class BadControl(FacegenError):
    """Scene-switch inputs that do not hold (a head box off the canvas, a pose photo without a box, a box and a
    control image together, a strength or window out of bounds), or control asked of a method with no ControlNet."""

    code = "validation"


class ConfigError(FacegenError):
    code = "validation"


class ModelNotFound(FacegenError):
    code = "model_not_found"


class GenerationFailed(FacegenError):
    """The model failed on a request (e.g. out of GPU memory) even when drawn alone: the service answers 503."""

    code = "generation_failed"
