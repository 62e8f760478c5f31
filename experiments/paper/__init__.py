"""Reproduction of Rieck et al. (ICLR 2019) with neural-persistence, on data that ships with packages."""
