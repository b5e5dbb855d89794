"""Maps the import package `crs` onto core/ and `crs.plugins` onto plugins/.

pyproject.toml cannot express "every sub-package of a renamed folder", so the
package list is computed here; all other metadata lives in pyproject.toml.
"""
from setuptools import find_packages, setup


def _mapped(folder: str, prefix: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(folder)]


setup(
    package_dir={"crs": "core", "crs.plugins": "plugins"},
    packages=_mapped("core", "crs") + _mapped("plugins", "crs.plugins"),
)
