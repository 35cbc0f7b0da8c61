"""The README's recipes for serving a torch model with KServe and with MLServer, run as written, then explained.

The recipe files in docs/serving are the README's code blocks (checked
here), run in the test environments of tests/real_servers.py with a small
TorchScript model. The servers' environments borrow this environment's torch
(symbolic links on their path) instead of installing a second copy; a
``sitecustomize`` keeps them on 127.0.0.1 (KServe itself binds 0.0.0.0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import planted_image
from patchlens.cli import main
from real_servers import environment, free_port, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "serving"
SIZE = 64

LOOPBACK = '''
try:  # test set-up, not part of the recipe: servers under test listen on 127.0.0.1 only
    import uvicorn

    class _Loopback(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = _Loopback
except ImportError:
    pass
'''


class Planted(torch.nn.Module):
    """Logits of the planted model, summed in float64 so scores do not depend on the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, 8:32, 32:56].double().flatten(1).mean(1).float()
        return torch.stack([1 - inside, inside], dim=1) * 4


def test_the_readme_shows_the_recipe_files_as_they_are():
    readme = (ROOT / "README.md").read_text()
    for name in ("kserve_torch.py", "mlserver/runtime.py", "mlserver/model-settings.json"):
        body = (RECIPES / name).read_text().strip()
        shown = body.split('"""', 2)[2].strip() if body.startswith('"""') else body  # the README has the docstring as prose
        assert shown in readme, f"README.md does not show docs/serving/{name} as it is"


@pytest.fixture
def lent(tmp_path):
    """A folder for the servers' PYTHONPATH: this environment's torch, and the loopback guard."""
    folder = tmp_path / "lent"
    folder.mkdir()
    for package in ("torch", "torchgen"):
        source = Path(__import__(package).__file__).parent
        (folder / package).symlink_to(source)
    (folder / "sitecustomize.py").write_text(LOOPBACK)
    return folder


def _served(server: str, tmp_path: Path, lent: Path) -> tuple[subprocess.Popen, str, Path]:
    folder = environment(server)
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(Planted()), str(model))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(lent)}
    log = tmp_path / f"{server}.log"
    if server == "kserve":
        args = [str(folder / "bin" / "python"), str(RECIPES / "kserve_torch.py"), str(model), "mynet", str(SIZE), "--http_port", str(port)]
        cwd = tmp_path
    else:
        cwd = tmp_path / "mlserver"
        cwd.mkdir()
        shutil.copy(RECIPES / "mlserver" / "runtime.py", cwd / "runtime.py")
        settings = json.loads((RECIPES / "mlserver" / "model-settings.json").read_text())
        settings["parameters"]["uri"] = str(model)
        settings["inputs"][0]["shape"] = [-1, 3, SIZE, SIZE]
        settings["outputs"][0]["shape"] = [-1, 2]
        (cwd / "model-settings.json").write_text(json.dumps(settings))
        args = [str(folder / "bin" / "mlserver"), "start", "."]
        env.update(MLSERVER_HOST="127.0.0.1", MLSERVER_HTTP_PORT=str(port), MLSERVER_GRPC_PORT=str(free_port()),
                   MLSERVER_METRICS_ENDPOINT="", MLSERVER_PARALLEL_WORKERS="0")
    with open(log, "w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{base}/v2/models/mynet/ready", log, seconds=120)
    except BaseException:
        process.kill()
        raise
    return process, f"{base}/v2/models/mynet", model


@pytest.mark.parametrize("server", ["kserve", "mlserver"])
@pytest.mark.slow
def test_a_served_torch_model_explains_as_the_local_file_does(server, tmp_path, lent, capsys):
    process, url, model = _served(server, tmp_path, lent)
    image = tmp_path / "planted.png"
    Image.fromarray(planted_image()).save(image)
    args = ["explain", str(image), "--method", "rise", "--n-masks", "120", "--converge", "0", "--quiet", "--device", "cpu"]
    try:
        assert main([*args, "--model", url, "--request-batch", "32", "--out", str(tmp_path / "remote")]) == 0, capsys.readouterr().err
    finally:
        process.terminate()
        process.wait(20)
    # the file as the served model sees it: raw [0, 1] pixels at 64 px (a TorchScript file is otherwise taken as ImageNet-like)
    local = ["--model", f"torchscript:{model}", "--runtime", "torch", "--mean", "0,0,0", "--std", "1,1,1", "--input-size", str(SIZE)]
    assert main([*args, *local, "--out", str(tmp_path / "local")]) == 0
    remote = np.load(next((tmp_path / "remote").glob("*.npy")))
    local = np.load(next((tmp_path / "local").glob("*.npy")))
    assert np.array_equal(remote, local)
    record = json.loads(next((tmp_path / "remote").glob("*.json")).read_text())
    assert json.dumps(record).count(f'"server": "{server} ') == 1
