"""`make demo`: portraits of the people in the photos that ship with scikit-image and insightface, drawn through
the real command line (`python -m facegen generate`) on the tiny preset. Pictures land in out/demo/."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from facegen.__main__ import main as cli


def shipped_photos() -> dict[str, Path]:
    import insightface
    import skimage

    return {
        "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "group": Path(insightface.__file__).parent / "data" / "images" / "t1.jpg",
        "tom_hanks": Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png",
    }


PROMPTS = {"chef": "S* as a chef, looking at the camera", "painting": "oil painting style, S* face"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.time()
    written = []
    photos = shipped_photos()
    cli(["faces", *map(str, photos.values())])
    for name, photo in photos.items():
        for tag, prompt in PROMPTS.items():
            target = out / f"dreamidentity_{name}_{tag}.png"
            rc = cli(["generate", "--preset", args.preset, "--method", "dreamidentity", "--face", str(photo),
                      "--prompt", prompt, "--out", str(target), "--seed", "0"])
            if rc != 0:
                return rc
            written.append(target)
        target = out / f"faceclip_{name}_chef.png"
        rc = cli(["generate", "--preset", args.preset, "--method", "faceclip", "--face", str(photo),
                  "--prompt", "a chef in a kitchen, looking at the camera", "--out", str(target), "--seed", "0"])
        if rc != 0:
            return rc
        written.append(target)
    print(f"\ndemo done in {time.time() - start:.0f}s: {len(written)} pictures in {out}/")
    print("the tiny preset's diffusion models are random, so the pictures are noise-like: the point is the chain;")
    print("see README 'Real weights' for the real presets.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
