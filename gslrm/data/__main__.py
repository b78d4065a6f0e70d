"""``python -m gslrm.data check ROOT [--json]`` and ``python -m gslrm.data rodent --out DIR``."""

import sys


def main() -> int:
    commands = {"check", "rodent"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python -m gslrm.data {check ROOT [--json] | rodent --out DIR [--samples N] [--seed S]}")
        return 2
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "check":
        from gslrm.data.check import main as check

        return check(argv)
    from gslrm.data.rodent import main as rodent

    rodent(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
