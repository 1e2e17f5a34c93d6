"""Installs qieemo_sb, the library behind the Qieemo SpeechBrain recipes."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "qieemo_sb" / "__init__.py").read_text(),
    re.M,
).group(1)
ONNX = ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"]

setup(
    name="qieemo-sb",
    version=VERSION,
    description=(
        "Qieemo speech emotion recognition on a pretrained conformer ASR "
        "encoder: SpeechBrain recipes and library"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["qieemo_sb", "qieemo_sb.*"]),
    package_data={"qieemo_sb": ["hparams/**/*.yaml"]},
    install_requires=[
        # torchaudio's compiled library loads only against the torch it was
        # built with: the two pins move together.
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "speechbrain==1.1.2",
        "hyperpyyaml>=1.2",
        "sentencepiece>=0.2",
        "soundfile>=0.12",
        "numpy>=1.24",
        "espeakng-loader==0.2.4",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        # The tests cover backbone 3 (Whisper) and ONNX export.
        "dev": ["pytest>=8", "transformers>=5.0", *ONNX],
        # Backbone 3: a pretrained Whisper encoder from transformers.
        "whisper": ["transformers>=5.0"],
        # The speed reference of benchmarks/: wav2vec2-base from transformers.
        "bench": ["transformers>=5.0", *ONNX],
        # qieemo export --onnx (torch.onnx's exporter needs onnxscript) and
        # qieemo predict --onnx (onnxruntime only).
        "onnx": ONNX,
    },
    entry_points={"console_scripts": ["qieemo=qieemo_sb.cli:main"]},
)
