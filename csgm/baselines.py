"""Sparsity baselines of the reference that need no generator: OMP, and Lasso in the DCT basis.

- OMP: AshishBora/csgm ``src/mnist_estimators.py`` ``omp_estimator``: scikit-learn
  OrthogonalMatchingPursuit with ``omp_k`` non-zeros (default 80 in its ``compressed_sensing.py``)
  in the pixel basis, clipped to [0, 1].
- Lasso-DCT: the reference runs Lasso in the 2-D DCT basis for CelebA (``celebA_estimators.py``
  ``lasso_dct_estimator``); here the same on 28 x 28 digits: x = c Psi with Psi the orthonormal
  2-D DCT synthesis matrix, so y = c (Psi A) is a Lasso in c; x_hat = c_hat Psi, clipped.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from csgm.estimators import lasso_coefficients

SIDE = 28


@lru_cache(maxsize=1)
def dct_basis() -> np.ndarray:
    """Psi [784, 784]: row k is the k-th orthonormal 2-D DCT-II basis image, flattened."""
    from scipy.fft import idctn

    return idctn(np.eye(SIDE * SIDE).reshape(-1, SIDE, SIDE), axes=(1, 2), norm="ortho").reshape(SIDE * SIDE, -1)


def lasso_dct(a: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    psi = dct_basis()
    coefs = lasso_coefficients((psi @ a.astype(np.float64)).astype(np.float32), y, alpha)
    return np.clip(coefs @ psi, 0.0, 1.0).astype(np.float32)


def omp(a: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Orthogonal matching pursuit with at most k non-zeros (never more than m), clipped to [0, 1]."""
    from sklearn.linear_model import OrthogonalMatchingPursuit

    out = np.zeros((len(y), a.shape[0]), np.float32)
    # fit_intercept as the reference's scikit-learn default; its normalize=True no longer exists.
    solver = OrthogonalMatchingPursuit(n_nonzero_coefs=min(k, a.shape[1]))
    for i, y_i in enumerate(y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "ended prematurely": take what it has
            out[i] = solver.fit(a.T.astype(np.float64), y_i.astype(np.float64)).coef_
    return np.clip(out, 0.0, 1.0)
