"""Ridge regression: the ``ridge`` decoder (:mod:`.decoder`), its grouped-CV solver
(:mod:`.cv`, on the operations of :mod:`.backends` and the factorisations of
:mod:`.linalg`) and a scikit-learn estimator over the same solver (:mod:`.estimator`,
imported on its own so that scikit-learn is needed only there)."""

from fmri2img.models.ridge.decoder import Ridge, RidgeConfig, default_alphas

__all__ = ["Ridge", "RidgeConfig", "default_alphas"]
