"""`fastdiff generate`: many images from a model, as EDM's generate.py (to be written)."""


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help="generate images from a model to files (PNG or .npz)")
    p.set_defaults(run=lambda args: 1)
