"""Attack suite for snnTorch networks wrapped by ``snncertify.certify``."""
