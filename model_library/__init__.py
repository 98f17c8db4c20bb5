"""Compile models with TVM into Model Library Format archives, and read them back."""
