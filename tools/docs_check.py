"""``make docs-check``: run every ``allseg`` command of README.md and docs/ for real.

Each command runs as written, in document order, in a scratch folder where the paths the
docs use as examples exist: ``ALL_IDB1``/``ALL_IDB2`` are synthetic folders in the exact
ALL-IDB layouts, ``BCCD/`` and ``Dataset 1/`` are the real datasets when ``../shared/data``
is beside the repository, image folders hold synthetic fields. Only three things change,
and the report says so: training commands get ``--epochs 1`` and a few steps (the docs'
recipes take up to an hour; the default recipe's centre threshold is tuned on 2 fields, not
40), servers get a free port and are stopped once they answer, and commands that need
several machines (``srun``, multi-node ``torchrun``) are skipped.
Exit code 1 if any command fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED = ROOT.parent / "shared" / "data"
TINY_TRAINING = ["--epochs", "1", "--set", "segmenter.steps_per_epoch=2", "--set",
                 "classifier.steps_per_epoch=2", "--set", "segmenter.batch_size=2", "--set",
                 "classifier.batch_size=8"]
ALLSEG = str(ROOT / ".venv" / "bin" / "allseg")


def command_lines() -> list[tuple[str, str]]:
    """(file name, command line) for every ``allseg`` call in a bash block, in order."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if re.search(r"(^|\s|/)allseg\s", line) and "make " not in line:
                    found.append((doc.name, line))
    return found


def prepare(sandbox: Path) -> dict[str, str]:
    """Create the example inputs; returns the path substitutions for command lines."""
    def synth(layout: str, n: int, out: Path) -> None:
        subprocess.run([ALLSEG, "synth", "--layout", layout, "--n", str(n), "--seed", "31",
                        "--out", str(out)], check=True, capture_output=True)

    synth("allidb1", 6, sandbox / "ALL_IDB1")
    _name_like_the_held_out_set(sandbox / "ALL_IDB1")
    synth("allidb2", 16, sandbox / "ALL_IDB2")
    synth("masks", 4, sandbox / "DATASET_DIR")
    for i, crop in enumerate(sorted((sandbox / "ALL_IDB2").glob("*.tif"))):  # class folders
        folder = sandbox / "my_cells" / ("blast" if crop.stem.endswith("_1") else "lymphocyte")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, folder / f"P{i % 4:02d}_{crop.name}")
    images = sandbox / "my_images"
    images.mkdir()
    for path in sorted((sandbox / "ALL_IDB1" / "im").glob("*"))[:2]:
        shutil.copy(path, images / path.name)
    shutil.copy(next(images.iterdir()), sandbox / "field.jpg")
    (sandbox / "configs").symlink_to(ROOT / "configs")
    (sandbox / "src").symlink_to(ROOT / "src")
    shared = sandbox.parent / "shared"  # the recipes name ../shared/data/...
    if SHARED.is_dir() and not shared.exists():
        shared.symlink_to(SHARED.parent)
    recipe = re.search(r"```toml\n(.*?)```", (ROOT / "docs" / "training.md").read_text(
        encoding="utf-8"), re.S).group(1)
    (sandbox / "my_allidb1.toml").write_text(recipe.replace("/data/ALL_IDB1", "ALL_IDB1"),
                                             encoding="utf-8")
    paths = {"/data/ALL_IDB2/img": "ALL_IDB2", "ALL_IDB2/img": "ALL_IDB2",
             "/data/ALL_IDB1": "ALL_IDB1", "ALL_IDB1/": "ALL_IDB1", "/data/my_lab": "ALL_IDB1",
             "path/to/images/": "my_images", "images/": "my_images", "/data/fields": "my_images",
             "BCCD/": str(SHARED / "bccd" / "BCCD"),
             "Dataset 1/": str(SHARED / "zheng_wbc" / "Dataset 1")}
    return paths


def _name_like_the_held_out_set(root: Path) -> None:
    """Give one synthetic image of each label a name of the ``allidb-test20`` split; the
    others stay for training (the docs' recipe excludes the held-out names)."""
    from allseg.evaluation.splits import ALLIDB_TEST20

    spare = {label: next(n for n in ALLIDB_TEST20 if n.endswith(label)) for label in ("_0", "_1")}
    for image in sorted((root / "im").glob("*.jpg")):
        new = spare.pop(image.stem[-2:], None)
        if new is None:
            continue
        for path in root.rglob(f"{image.stem}.*"):
            path.rename(path.with_name(new + path.suffix))


def adapt(args: list[str], paths: dict[str, str]) -> tuple[list[str] | None, str]:
    """The command to run (None to skip) and what was changed."""
    if args[0] in ("srun", "git") or "--nnodes" in args:
        return None, "needs several machines or a remote" if args[0] != "git" else "git clone"
    changes = []
    args = [paths.get(a, a) for a in args]
    if "train" in args:
        args += TINY_TRAINING
        if "configs/default.toml" in args:  # its centre threshold is tuned on 40 fields
            args += ["--set", "segmenter.centre_tuning.n=2"]
        changes.append("tiny training")
    if "serve" in args:
        if "--port" in args:
            args[args.index("--port") + 1] = str(free_port())
        else:
            args += ["--port", str(free_port())]
        changes.append("free port, stopped after answering")
    if "--devices" in args and args[0] != "torchrun":
        args[args.index("--devices") + 1] = "2"
        changes.append("--devices 2 (two CPU processes)")
    return args, ", ".join(changes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], cwd: Path) -> tuple[bool, str]:
    env = dict(os.environ)
    while args and re.match(r"^[A-Z_]+=", args[0]):
        key, _, value = args.pop(0).partition("=")
        env[key] = value
    args = [ALLSEG if a.endswith("bin/allseg") else a for a in args]
    if args[0] == "torchrun":
        args[0] = str(ROOT / ".venv" / "bin" / "torchrun")
    if "serve" in args:
        return _serve(args, cwd, env)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    return done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() \
        else ""


@contextlib.contextmanager
def serving(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Start ``allseg serve ... --port P``; yield its base URL once /healthz answers, stop
    it on leaving. RuntimeError (with the server's last stderr) if it never answers."""
    base = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
    server = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz"):
                    break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().strip()[-300:]) from None
                if time.time() > deadline:
                    raise RuntimeError("no answer in 120 s") from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _serve(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
    try:
        with serving(args, cwd, env):
            return True, "answered /healthz"
    except RuntimeError as exc:
        return False, str(exc)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="allseg-docs-check-"))
    sandbox = work / "sandbox"
    sandbox.mkdir()
    paths = prepare(sandbox)
    failed = 0
    for doc, line in command_lines():
        args, changes = adapt(shlex.split(line), paths)
        if args is None:
            print(f"SKIP {doc}: {line}  ({changes})")
            continue
        missing = [a for a in args if a.startswith(str(SHARED)) and not Path(a).exists()]
        if missing:
            print(f"SKIP {doc}: {line}  (no {missing[0]})")
            continue
        start = time.perf_counter()
        ok, detail = run(list(args), sandbox)
        failed += not ok
        note = f"; {changes}" if changes else ""
        print(f"{'ok  ' if ok else 'FAIL'} {doc}: {line}  ({time.perf_counter() - start:.0f} s"
              f"{note}){'' if ok else chr(10) + '     ' + detail}", flush=True)
    print(f"{failed} failed; scratch folder {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
