"""Forward operators as pytrees with exact adjoints."""
from jsgp.operators.base import (Composed, Identity, LinearOperator, operator_norm_squared,
                                 sum_squares, vdot_real)
from jsgp.operators.blur import GaussianBlur, gaussian_blur
from jsgp.operators.fourier import (PATTERNS, PartialFourier, cartesian_lines_pattern,
                                    fourier_pattern, radial_pattern, uniform_pattern,
                                    variable_density_pattern)
from jsgp.operators.mask import PixelMask, random_pixel_mask
from jsgp.operators.radon import ParallelBeamProjector, filtered_back_projection, parallel_beam
from jsgp.operators.wavelet import WaveletSynthesis

__all__ = [
    "Composed", "Identity", "LinearOperator", "operator_norm_squared", "sum_squares", "vdot_real",
    "GaussianBlur", "gaussian_blur", "PartialFourier", "variable_density_pattern", "PATTERNS",
    "uniform_pattern", "cartesian_lines_pattern", "radial_pattern", "fourier_pattern", "PixelMask",
    "random_pixel_mask", "WaveletSynthesis", "ParallelBeamProjector", "filtered_back_projection",
    "parallel_beam",
]
