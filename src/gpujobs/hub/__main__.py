"""``python -m gpujobs.hub [HOME]``: put the init notebook and the examples into a home folder.

For spawners where the hub cannot reach the user's home (Kubernetes, containers): run it in the
user's server as it starts (a postStart lifecycle hook, or the image's start script).  Like the hub's
pre-spawn hook, it never overwrites a copy the user has edited.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .integration import deploy_user_files


def main(argv: list[str]) -> int:
    home = Path(argv[1]) if len(argv) > 1 else Path.home()
    for path in deploy_user_files(home):
        print(f"gpujobs: deployed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
