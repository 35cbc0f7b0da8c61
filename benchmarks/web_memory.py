"""What an upload costs the web server (issue 26, finding 5).

A lossless WebP of ``--side`` x ``--side`` pixels (a few KB whatever the size) is
uploaded ``--uploads`` times at once, in a fresh process, after one warm-up upload;
the figure is the growth of the process's peak resident memory (``/proc/self``),
and what it still holds afterwards (the kept uploads, and what the allocator keeps).

    python benchmarks/web_memory.py --side 6000 --uploads 1
    MALLOC_ARENA_MAX=1 python benchmarks/web_memory.py --side 6000 --uploads 4
"""

from __future__ import annotations

import argparse
import io
import json
import threading


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=6000, help="width and height of the upload [default: 6000, 36 MP]")
    ap.add_argument("--uploads", type=int, default=1, help="uploads at the same time [default: 1]")
    args = ap.parse_args()
    import torch
    from fastapi.testclient import TestClient
    from PIL import Image

    from patchlens.models import CallableClassifier
    from patchlens.web import create_app

    Image.MAX_IMAGE_PIXELS = None
    buf = io.BytesIO()
    Image.new("RGBA", (args.side, args.side), (10, 200, 30, 128)).save(buf, "WEBP", lossless=True)
    data = buf.getvalue()
    clf = CallableClassifier(lambda x: torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1), input_size=32)
    client = TestClient(create_app(clf), base_url="http://127.0.0.1")

    def status(field: str) -> float:
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024  # MiB
        raise KeyError(field)

    def send(codes: list[int]) -> None:
        codes.append(client.post("/api/images", files={"file": ("w.webp", data, "image/webp")}).status_code)

    send([])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    codes: list[int] = []
    threads = [threading.Thread(target=send, args=(codes,)) for _ in range(args.uploads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"upload_bytes": len(data), "pixels": args.side**2, "uploads": args.uploads, "codes": codes,
                      "peak_growth_MiB": round(status("VmHWM") - before), "held_MiB": round(status("VmRSS") - before)}))


if __name__ == "__main__":
    main()
