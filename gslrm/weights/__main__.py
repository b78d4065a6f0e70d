"""``python -m gslrm.weights fetch [vgg19 vgg16 midas facelift vgg19_mat | all] [--cache DIR]`` downloads the
pretrained networks into the caches the trainer reads (run it on a login node with network, then copy the cache
to the compute nodes); ``python -m gslrm.weights status [--cache DIR]`` lists each: present or missing, path, size,
checksum."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ALL = ("vgg19", "vgg16", "midas", "facelift")  # what training, LPIPS and MiDaS load; vgg19_mat only when named
NAMES = {"midas": ("midas_repo", "midas")}  # one user-facing name, several files


def _use_cache(folder: Path) -> None:
    """Point every cache below ``folder``: TORCH_HOME (torch hub), HF_HOME (huggingface_hub), FaceLift's .mat."""
    os.environ["TORCH_HOME"] = str(folder / "torch")
    os.environ["HF_HOME"] = str(folder / "huggingface")
    os.environ["GSLRM_OPENFACELIFT_CACHE"] = str(folder / "openfacelift")


def _size(path: Path) -> str:
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        total = path.stat().st_size
    return f"{total / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gslrm.weights", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download into the caches (skips what is there)")
    fetch_parser.add_argument(
        "names", nargs="*", default=["all"], help=f"all | {' | '.join(ALL)} | vgg19_mat | hf://owner/repo/file"
    )
    status_parser = commands.add_parser("status", help="what is cached, where, and whether its checksum is right")
    for sub in (fetch_parser, status_parser):
        sub.add_argument(
            "--cache", type=Path, default=None, help="one folder for every cache (sets TORCH_HOME, HF_HOME)"
        )
    args = parser.parse_args(argv)
    if args.cache is not None:
        _use_cache(args.cache.resolve())

    from gslrm.weights import SOURCES, MissingWeightsError, fetch, verify
    from gslrm.weights.download import fetch_hf_url

    if args.command == "status":
        broken = 0
        for name in SOURCES:
            path, present, state = verify(name)
            size = _size(path) if present else "-"
            broken += "MISMATCH" in state
            print(f"{name:10s} {'present' if present else 'missing':8s} {size:>11s}  {state:45s} {path}")
        return 1 if broken else 0
    wanted = ALL if "all" in args.names else tuple(args.names)
    unknown = [n for n in wanted if n not in SOURCES and n not in NAMES and not n.startswith("hf://")]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}: choose from all, {', '.join(ALL)}, vgg19_mat")
    failed = 0
    for name in wanted:
        for file_name in NAMES.get(name, (name,)):
            try:
                path = fetch_hf_url(file_name) if file_name.startswith("hf://") else fetch(file_name)
                print(f"{file_name}: {path}")
            except MissingWeightsError as error:
                failed += 1
                print(f"{file_name}: FAILED: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
