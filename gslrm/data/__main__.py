"""``python -m gslrm.data {check | import | record | rodent} ...``"""

import sys

USAGE = """usage: python -m gslrm.data COMMAND ...
  check ROOT [--json]                          validate a dataset and summarize its rig
  import {mammal,anipose,dannce} SRC --out ROOT [--frames A:B:S] [--views ..] [--scale S] [--split val=0.1,test=0.1]
                                               a rig's videos + calibration to the trainer's format
  record --out DIR [--formats ...] [--frames N] [--size WxH]
                                               a synthetic rodent recording in each rig format
  rodent --out DIR [--samples N] [--seed S]    the default (generated) dataset"""


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "import", "record", "rodent"):
        print(USAGE)
        return 2
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "check":
        from gslrm.data.check import main as check

        return check(argv)
    if command == "import":
        from gslrm.data.recordings.importer import main as import_main

        return import_main(argv)
    if command == "record":
        from gslrm.data.recordings.synthetic import main as record

        return record(argv)
    from gslrm.data.rodent import main as rodent

    rodent(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
