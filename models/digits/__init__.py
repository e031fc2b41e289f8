"""The digits reference model: a small MLP on scikit-learn's bundled 8x8 digits."""
