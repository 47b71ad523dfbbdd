"""``python -m nirvana up | status | reset | down | lab | export``: the stack from a terminal (see README.md)."""

import argparse
import sys
from pathlib import Path

import nirvana
import svc

from . import export, replay, stack
from .errors import KitError, SettingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nirvana", description="Run the kit's local stack.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("up", "start every component that is not answering yet"),
                       ("status", "one row per component, and JupyterLab's; exit status 1 if a component is not healthy"),
                       ("down", "stop what the kit started, and only that")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("components", nargs="*", metavar="COMPONENT",
                         help=f"only these ({', '.join(c.name for c in stack.COMPONENTS)}); default all")
        if name == "up":
            sub.add_argument("--cluster", action="store_true",
                             help="etcd and RabbitMQ as clusters of three (kept until `down`)")
    commands.add_parser("reset", help="stop kit-started services, purge the kit's queues, delete its etcd "
                                      "keys and whisper files")
    lab = commands.add_parser("lab", help="start JupyterLab on a copy of notebooks/ (once) and print its URL")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser (headless machine)")
    lab.add_argument("--fresh", action="store_true",
                     help="copy every chapter again into state/present/ (drops what was saved into the copies)")
    handout = commands.add_parser("export", help="run the chapters and write each as a page, slides and a PDF "
                                                 "that open offline (state/export/)")
    handout.add_argument("chapters", nargs="*", metavar="CHAPTER", help="only these (01 or 01_consume_produce); default all")
    handout.add_argument("--out", metavar="FOLDER", help="where to write (default state/export)")
    args = parser.parse_args(argv)
    svc.install_patches()   # the kit's entry point: svc's patches to pika and etcd3, never at import
    if args.command == "export":
        try:
            export.resolve(args.chapters)
        except export.ExportError as exc:
            parser.error(str(exc))   # bad input: exit status 2
    unknown = [name for name in getattr(args, "components", []) if name not in stack.BY_NAME]
    if unknown:
        parser.error(f"unknown component {', '.join(unknown)}: choose from {', '.join(stack.BY_NAME)}")

    try:
        if args.command == "up":
            rows = stack.up(only=args.components, cluster=args.cluster)
            print(stack.render_status(rows))
            if any(row.name == "rabbitmq" and row.origin == "found running" for row in rows):
                limits = stack.rabbitmq_node().limits()   # what will not work for this user, said now
                if limits:
                    print(f"note: {limits}")
            return 0 if all(row.healthy for row in rows) else 1
        if args.command == "status":
            rows = stack.status(args.components, leaders=True)
            # JupyterLab (./kit present) is not part of the stack: listed, not counted in the exit status
            lab = [] if args.components else stack.status([stack.LAB.name])
            print(stack.render_status(rows + lab))
            if any(row.name == "rabbitmq" and row.state != "down" for row in rows):
                print(stack.rabbitmq_node().describe())
                print(replay.log_status(stack.rabbitmq_node().ctl()))
            return 0 if all(row.healthy for row in rows) else 1
        if args.command == "down":
            stack.down(only=args.components)
            return 0
        if args.command == "reset":
            nirvana.reset()
            return 0
        if args.command == "export":
            export.export(args.chapters, Path(args.out) if args.out else None)
            return 0
        if args.command == "lab":
            url = stack.lab(open_browser=not args.no_browser, fresh=args.fresh)
            print(f"JupyterLab: {url}")
            return 0
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SettingError) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
