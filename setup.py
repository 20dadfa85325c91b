"""Packages: kernels/ and pipelines/ install only as evo2lite.kernels and evo2lite.pipelines (DESIGN.md §1),
because `kernels` and `pipelines` are names of unrelated PyPI distributions."""

from setuptools import find_packages, setup

mapped = {"evo2lite.kernels": "kernels", "evo2lite.pipelines": "pipelines"}
packages = find_packages(include=["evo2lite", "evo2lite.*"])
package_dir = {"evo2lite": "evo2lite"}
for name, folder in mapped.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    package_dir[name] = folder
# evo2's reference sequences for `evo2lite selftest` (data/evo2_selftest/README.md), installed as package data
packages.append("evo2lite.selftest_data")
package_dir["evo2lite.selftest_data"] = "data/evo2_selftest"

setup(packages=packages, package_dir=package_dir)
