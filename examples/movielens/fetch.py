"""Fetches MovieLens-100k into examples/movielens/data/ml-100k/ (``make fetch-movielens``).

The GroupLens licence forbids redistributing the data, so the repository never holds it: this
downloads the ``recbole`` 1.2.1 wheel from PyPI (it ships recbole's atomic-file copy of
ml-100k), extracts the three files the project reads and checks their SHA-256. Idempotent:
files already there with the right checksum are kept.

Usage: python examples/movielens/fetch.py [--into DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/{}"
FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    wanted = [
        name
        for name, digest in FILES.items()
        if not (into / name).is_file() or _sha256(into / name) != digest
    ]
    if wanted:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"downloading {WHEEL} (PyPI) for MovieLens-100k ...", flush=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
                check=True,
            )
            wheel = next(Path(tmp).glob("recbole-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for name in wanted:
                    part = into / (name + ".part")
                    part.write_bytes(z.read(MEMBER.format(name)))
                    if _sha256(part) != FILES[name]:
                        part.unlink()
                        raise SystemExit(f"{name}: checksum mismatch in {wheel.name}; not using it")
                    part.replace(into / name)
    for name in FILES:
        print(f"  {into / name}  ok")
    return [into / name for name in FILES]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--into", type=Path, default=Path(__file__).resolve().parent / "data" / "ml-100k")
    fetch(ap.parse_args().into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
