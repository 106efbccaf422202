"""The absl application behind the `mlcmk` command; the only package that reads flags."""
