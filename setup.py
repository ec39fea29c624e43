"""Build hooks for nea; everything else about the package lives in pyproject.toml.

The meter's optional C extension is added here by the meter work ([2/5]).
"""

from setuptools import setup

setup()
