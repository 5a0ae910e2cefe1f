"""CSGM: a VAE generator and compressed-sensing recovery with it (Bora et al., ICML 2017)."""
