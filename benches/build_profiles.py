"""The release profile's options side by side: cold build time and engine speed.

Each profile is built cold (its own target directory, every crate compiled, crates already
downloaded) with cargo's profile overrides, timed (wall and CPU), and its extension copied beside a
copy of the Python package. Then ``vs_peers.py --engines ltrcore`` runs each build in turn, several
rounds, so that the machine's drift weighs on all of them alike; the best time per build is kept.

    python benches/build_profiles.py --rows 20M --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> cargo release-profile overrides
PROFILES = {
    "fat LTO, 1 codegen unit": {"LTO": "fat", "CODEGEN_UNITS": "1"},
    "thin LTO, 1 codegen unit": {"LTO": "thin", "CODEGEN_UNITS": "1"},
    "thin LTO, 4 codegen units": {"LTO": "thin", "CODEGEN_UNITS": "4"},
    "thin LTO, 16 codegen units": {"LTO": "thin", "CODEGEN_UNITS": "16"},
    "no LTO, 16 codegen units": {"LTO": "off", "CODEGEN_UNITS": "16"},
}


def build(name: str, overrides: dict[str, str], work: Path) -> tuple[Path, float, float]:
    """Builds the extension cold with ``overrides``; returns a package tree holding it, wall s, CPU s.
    A tree already in ``work`` (``--work`` kept from an earlier run) is reused, with its times."""
    slug = "-".join(f"{k.lower()}{v}" for k, v in overrides.items())
    tree, timing = work / f"pkg-{slug}", work / f"pkg-{slug}.json"
    if timing.exists():
        wall, cpu = json.loads(timing.read_text())
        print(f"{name}: reusing the build in {tree} ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
        return tree, wall, cpu
    target = work / f"target-{slug}"
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    env.update({f"CARGO_PROFILE_RELEASE_{k}": v for k, v in overrides.items()})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["cargo", "build", "--release", "-p", "ltrcore-python", "--quiet"], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.copytree(ROOT / "python", tree, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(target / "release" / "lib_core.so", tree / "ltrcore" / "_core.abi3.so")
    shutil.rmtree(target)  # a cold build each time; the trees are large
    timing.write_text(json.dumps([wall, cpu]))
    print(f"{name}: built in {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return tree, wall, cpu


def best_time(tree: Path, rows: str, repeat: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, PYTHONPATH=str(tree))
        subprocess.run(
            [sys.executable, str(ROOT / "benches" / "vs_peers.py"), "--rows", rows, "--engines", "ltrcore",
             "--repeat", str(repeat), "--json", out.name],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        results = json.loads(Path(out.name).read_text())["results"]
    return min(results["ltrcore"]["times"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="20M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated profile names (default: all)")
    parser.add_argument("--work", type=Path, default=None, help="keep the builds here, and reuse those already there")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(PROFILES)
    with tempfile.TemporaryDirectory(prefix="ltrcore-profiles-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        built = {name: build(name, PROFILES[name], work) for name in names}
        best = {name: float("inf") for name in names}
        for _ in range(args.rounds):
            for name in names:
                best[name] = min(best[name], best_time(built[name][0], args.rows, args.repeat))
        fastest = min(best.values())
        print(f"\n| profile | cold build, wall | CPU | best of {args.rounds}×{args.repeat} at {args.rows} rows | × the fastest |")
        print("|---|---|---|---|---|")
        for name in names:
            _, wall, cpu = built[name]
            print(f"| {name} | {wall:.0f} s | {cpu:.0f} s | {best[name]:.3f} s | {best[name] / fastest:.3f} |")


if __name__ == "__main__":
    main()
