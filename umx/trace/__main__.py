"""``python -m umx.trace summary run.json`` and ``python -m umx.trace plot run.json -o timeline.png``."""

from __future__ import annotations

import argparse
import sys

from . import load
from .plot import plot
from .summary import format_summary, summarize


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m umx.trace", description="Read a trace of mx.trace.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="print a per-stream table: busy and idle time, ops, bytes copied")
    p.add_argument("file")
    p.add_argument("--top", type=int, default=3, help="longest ops listed per lane (default 3)")
    p = sub.add_parser("plot", help="draw the timeline (needs matplotlib: pip install 'umx[plot]')")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="timeline.png", help="the image file (default timeline.png)")
    p.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    data = load(args.file)
    if args.command == "summary":
        print(format_summary(summarize(data, top=args.top)))
        return 0

    try:
        plot(data, args.output, title=args.title)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
