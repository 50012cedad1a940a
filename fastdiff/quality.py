"""Image quality without downloads: the shipped digits classifier, FD-digits, class accuracy; `fastdiff eval`
(to be written)."""


def add_parser(commands) -> None:
    p = commands.add_parser("eval", help="FD-digits and class accuracy of generated images")
    p.set_defaults(run=lambda args: 1)
