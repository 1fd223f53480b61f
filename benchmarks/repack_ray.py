"""Repack the ray wheel without ``ray/jars/`` (Java; nothing autoembed uses needs it), dropping their RECORD lines,
so the wheels a GPU session carries fit its 64 MiB transfer (79 MB -> 47 MB for ray 2.60.0).

    python benchmarks/repack_ray.py ray-X.whl OUT/ray-X.whl
"""

from __future__ import annotations

import sys
import zipfile


def repack(src: str, dst: str) -> int:
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            name = info.filename
            if name.startswith("ray/jars/"):
                dropped += 1
                continue
            data = zin.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = [line for line in data.decode().splitlines() if not line.startswith("ray/jars/")]
                data = ("\n".join(lines) + "\n").encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return dropped


if __name__ == "__main__":
    print("dropped", repack(sys.argv[1], sys.argv[2]))
