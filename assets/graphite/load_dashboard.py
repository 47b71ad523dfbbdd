"""Write the kit's dashboard (dashboard.json beside this file) into graphite-web's database.

Run by `./kit up` with Debian's python3 and graphite-web's settings (nirvana/stack/graphite.py),
after the tables exist and before gunicorn starts: the dashboard ``nirvana`` is created, or
replaced by the file's version. Exit status 1 with one line on stderr when it cannot be written.
"""

import json
import sys
from pathlib import Path

import django

DASHBOARD = Path(__file__).with_name("dashboard.json")


def main() -> int:
    django.setup()
    from graphite.dashboard.models import Dashboard

    try:
        state = json.loads(DASHBOARD.read_text())["state"]
        Dashboard.objects.update_or_create(name=state["name"], defaults={"state": json.dumps(state)})
    except (OSError, ValueError, KeyError) as error:
        print(f"graphite-web: could not write the dashboard from {DASHBOARD}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
