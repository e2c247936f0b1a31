"""The `videococa` command: argument parsing and printing only; every command calls the public API."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Sequence

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with one clear line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="model name (default: videococa-tiny if bundled)")
    g.add_argument("--pretrained", default=None, help="pretrained tag, hf-hub:org/repo, or a weights file")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--frames", type=int, default=8, help="frames sampled per video (default 8)")


def _load(args):
    import videococa

    name = args.model or _default_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning is printed by the caller
        return videococa.load_model(name, args.pretrained, device=args.device, precision=args.precision)


def _default_model() -> str:
    import videococa

    return "videococa-tiny" if "videococa-tiny" in videococa.list_models() else "coca_ViT-B-32"


# --------------------------------------------------------------------------- commands
def cmd_models(args) -> int:
    import videococa

    models = videococa.list_models()
    if args.json:
        print(json.dumps(models))
    else:
        width = max(map(len, models))
        for name, tags in models.items():
            print(f"{name:<{width}}  {', '.join(tags) if tags else '(no pretrained tags; local weights file)'}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="videococa",
        description="Zero-shot video-text tasks with image-text CoCa models (VideoCoCa).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list loadable models and pretrained tags",
                       description="List loadable models and their pretrained tags.\n\nexample:\n  videococa models",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="a short end-to-end tour on this machine",
                       description="Load a model, read a real sample video and show what the model does with it.\n\n"
                       "example:\n  videococa demo",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import VideoCoCaError

    try:
        return args.func(args)
    except VideoCoCaError as exc:
        print(f"videococa: error: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except ValueError as exc:
        print(f"videococa: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("videococa: interrupted", file=sys.stderr)
        return 130


def _elapsed(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f}s"
