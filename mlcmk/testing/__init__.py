"""Test harness for mlcmk layers and models."""

from mlcmk.testing.test_case import TestCase, two_cpu_strategy
