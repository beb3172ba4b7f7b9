"""A normal (non-editable) install: the wheel carries every zoo file and loads entries offline."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LIMIT = 50 * 2**20  # bytes of weight files in the package


def test_shipped_weight_files_stay_small_and_every_card_has_one():
    import zoo
    from zoo import hub

    files = {p.name: p.stat().st_size for p in hub.PACKAGE_DIR.glob("*.pt")}
    assert sum(files.values()) <= SHIPPED_LIMIT, f"{sum(files.values()) / 2**20:.1f} MB shipped"
    for name in zoo.list_entries():
        w = zoo.card(name)["weights"]
        assert w["file"] in files and files[w["file"]] == w["bytes"], name


def test_wheel_installs_and_loads_an_mnist_entry_offline(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "runs", "__pycache__", "*.egg-info", ".*_cache",
        ".hypothesis", "results"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("snncertify-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the test environment's packages (torch, snntorch, ...) behind the venv's own, without
    # processing its .pth files (so an editable install of this checkout stays invisible)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    Path(purelib, "test-env.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    check = (
        "import zoo, snncertify, torch\n"
        "from pathlib import Path\n"
        f"assert Path(zoo.__file__).is_relative_to({purelib!r}), zoo.__file__\n"
        f"assert Path(snncertify.__file__).is_relative_to({purelib!r}), snncertify.__file__\n"
        "bnet = zoo.load_bounded('mnist-fc-ibp')\n"
        "print(tuple(bnet(torch.zeros(2, 1, 28, 28)).shape))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"SNNCERTIFY_ZOO_CACHE": str(tmp_path / "empty-cache"),
            "SNNCERTIFY_ZOO_URL": "http://127.0.0.1:9/"}  # a closed port: no download happens
    res = subprocess.run([str(py), "-c", check], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "(2, 10)"
    assert not (tmp_path / "empty-cache").exists()
