"""`ncap zoo`: list or (re)build the self-pretrained candidate zoo used by the demo and the benchmark."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="list or build the demo/benchmark zoo of self-pretrained models",
                              description="ncap pretrains small timm models on MNIST-5k (offline) and caches "
                              "them under $NCAP_CACHE/zoo (default ~/.cache/ncap/zoo).")
    sub = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    ls = sub.add_parser("list", help="list zoo entries and whether they are cached")
    ls.set_defaults(func=_list)
    b = sub.add_parser("build", help="pretrain zoo entries (missing ones, or all with --rebuild)")
    b.add_argument("names", nargs="*", help="entries to build (default: all)")
    b.add_argument("--rebuild", action="store_true", help="retrain even if cached")
    b.set_defaults(func=_build)
    p.set_defaults(func=_list)


def _list(args) -> int:
    from ncap.models import zoo

    for name, e in zoo.ZOO.items():
        mark = "cached" if zoo.is_built(name) else "not built"
        demo = " (demo)" if name in zoo.DEMO_CANDIDATES else ""
        print(f"{name:20s} {e.arch:24s} {mark:10s} {e.description}{demo}")
    print(f"cache: {zoo.cache_dir()}")
    return 0


def _build(args) -> int:
    from ncap.models import zoo

    names = args.names or list(zoo.ZOO)
    for card in zoo.ensure(names, rebuild=args.rebuild):
        print(f"{card['name']:20s} source accuracy {100 * card['source_accuracy']:.1f}%  "
              f"({card['pretrain_seconds']:.0f} s)  {card['weights']}")
    return 0
