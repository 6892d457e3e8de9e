import os
from pathlib import Path

import pytest

# No test may reach the network: the hub client fails fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real face photos shipped inside scikit-image and insightface."""
    import insightface
    import skimage

    images = Path(insightface.__file__).parent / "data" / "images"
    return {
        "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "group": images / "t1.jpg",  # six people
        "tom_hanks": images / "Tom_Hanks_54745.png",  # an aligned 112×112 crop
        "no_face": images / "mask_white.jpg",  # a face mask on a white background
    }


@pytest.fixture(scope="session")
def analyzer():
    from facegen.face.analyzer import FaceAnalyzer

    return FaceAnalyzer()


@pytest.fixture(scope="session")
def tiny_pipe():
    from facegen import DreamIdentityPipeline

    pipe = DreamIdentityPipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe
