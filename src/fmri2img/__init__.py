"""fmri2img: decode brain activity into image and text embedding spaces."""

from fmri2img.errors import DataError

__all__ = ["DataError", "__version__"]
__version__ = "0.1.0"
