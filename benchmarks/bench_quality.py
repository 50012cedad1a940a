"""Benchmark: image quality against network evaluations (NFE) for every solver of fastdiff.sample, on the shipped
digits model (EDM paper, figure 2 style), measured with fastdiff's own digits classifier (docs/quality.md).

For each solver at each NFE budget (the most steps whose NFE fits it, as bench_solvers chooses them), n
class-conditional samples (seeds 0..n-1, class seed % 10) and:

    FD          FD-digits: Frechet distance of their classifier features to the real digits' (lower is better)
    floor       FD-digits of n real digits, balanced over the classes like the samples (what exact sampling would
                score at this n; FD/floor near 1 is as good as this n can tell)
    accuracy    the share of samples the classifier puts in their requested class

Also: heun and euler with EDM's churn (S_churn, S_min 0.05, S_max 50, S_noise 1.003: the paper's ImageNet
settings), heun with classifier-free guidance at several weights w (at the middle budget), dpm_adaptive at a few
tolerances (its rows show the NFE it took), and throughput: images/s of every solver at one NFE, timed round-robin
in this run (ratios to heun, or to the first solver).

    python3 benchmarks/bench_quality.py                   # all solvers, NFE 8,16,32,64, 500 samples (~30 min, 2 cores)
    python3 benchmarks/bench_quality.py --quick           # NFE 8 and 16, 100 samples
    python3 benchmarks/bench_quality.py --solvers heun,dpmpp_2m --nfe 8,32 --num-samples 200 --model RUN_DIR

Prints the table and writes bench_quality.json, .csv, .md and .png (FD against NFE per series, log-log, the floor
dashed grey; the colour of each series is in the table) to benchmarks/results/ (or --out). Nothing here asserts.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import quality  # noqa: E402
from fastdiff.png import write_png  # noqa: E402
from fastdiff.sampling.plan import ADAPTIVE_SOLVERS, SOLVERS  # noqa: E402
from _harness import (common_arguments, make_parser, median_round_robin, run_meta, setup, write_csv,  # noqa: E402
                      write_json)

TWO_EVALUATIONS = ("heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde")  # 2N - 1 for N steps
CHURN = dict(S_min=0.05, S_max=50.0, S_noise=1.003)  # EDM's ImageNet-64 settings (Karras et al. 2022, table 5)
CHURN_SOLVERS = ("heun", "euler")
ADAPTIVE_RTOLS = (0.2, 0.05, 0.01)  # dpm_adaptive's settings, in place of budgets (--quick: the first two)
ADAPTIVE_ATOL = 0.0078  # k-diffusion's default for pixels in [-1, 1]
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (255, 215, 0),
           (0, 0, 128), (128, 0, 0), (0, 128, 128), (255, 0, 255), (128, 128, 0)]


def steps_for(solver: str, nfe: int) -> int:
    """The most steps whose NFE (schedule to 0) fits the budget."""
    return max((nfe + 1) // 2, 1) if solver in TWO_EVALUATIONS else nfe


class Counted(torch.nn.Module):
    """The net, counting its calls (one per evaluation of the whole batch; a guided evaluation is one call of 2B)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0
        for name in ("sigma_min", "sigma_max", "img_channels", "img_resolution", "label_dim"):
            setattr(self, name, getattr(net, name))

    def round_sigma(self, sigma):
        return self.net.round_sigma(sigma)

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.net(*args, **kwargs)


def measure(net: Counted, n: int, classifier, **settings) -> dict:
    """Sample n images in one batch with `settings`, score them; the NFE the sampler took."""
    net.calls = 0
    images, labels, _ = quality.sample_model(net, n, batch=n, **settings)
    nfe = net.calls
    result = quality.evaluate(images, labels, classifier)
    return dict(nfe=nfe, fd=result["fd_digits"], floor=result["fd_floor"], floor_std=result["fd_floor_std"],
                fd_over_floor=result["fd_digits"] / result["fd_floor"], accuracy=result["accuracy"])


# ----------------------------------------------------------------------------------------------------------
# The plot: drawn with torch, a 3x5 pixel font for the numbers
# ----------------------------------------------------------------------------------------------------------

GLYPHS = {"0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
          "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
          "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
          "e": "000111111100111", "N": "110101101101101", "F": "111100110100100", "E": "111100110100111",
          "D": "110101101101110", " ": "000000000000000"}


def draw_text(image: torch.Tensor, text: str, x: int, y: int, scale: int = 2, color=(0, 0, 0)) -> None:
    """`text` (digits, '.', '-', 'e', N, F, E, D) with its top-left corner at (x, y)."""
    for k, char in enumerate(text):
        bits = torch.tensor([int(b) for b in GLYPHS[char]], dtype=torch.bool).reshape(5, 3)
        block = bits.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        x0 = x + k * 4 * scale
        region = image[y:y + 5 * scale, x0:x0 + 3 * scale]
        if region.shape[:2] == block.shape:
            region[block] = torch.tensor(color, dtype=torch.uint8)


def draw_line(image: torch.Tensor, p, q, color, width: int = 2, dash: int = 0) -> None:
    """A line from p to q (x, y pixel coordinates), `width` pixels thick; dashed with dashes of `dash` pixels."""
    length = max(abs(q[0] - p[0]), abs(q[1] - p[1]), 1)
    t = torch.linspace(0, 1, int(length * 2) + 1)
    xs, ys = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
    if dash:
        keep = ((t * length) // dash) % 2 == 0
        xs, ys = xs[keep], ys[keep]
    height, width_px = image.shape[:2]
    for dx in range(width):
        for dy in range(width):
            cols = (xs.round().long() + dx - width // 2).clamp(0, width_px - 1)
            rows = (ys.round().long() + dy - width // 2).clamp(0, height - 1)
            image[rows, cols] = torch.tensor(color, dtype=torch.uint8)


def format_tick(value: float) -> str:
    return f"{value:g}" if 1e-3 <= value < 1e5 else f"{value:.0e}".replace("+", "")


def plot(series: dict, floor: float | None, path: Path, size=(720, 460)) -> None:
    """FD against NFE, log-log, one coloured line per series ({name: (colour, [(nfe, fd), ...])}), ticks labelled
    with the pixel font, the floor as a dashed grey line."""
    width, height = size
    left, right, top, bottom = 70, 20, 20, 50
    image = torch.full((height, width, 3), 255, dtype=torch.uint8)
    points = [pt for _, pts in series.values() for pt in pts if pt[1] > 0]
    if not points:
        write_png(path, image)
        return
    nfes = sorted({pt[0] for pt in points})
    values = [pt[1] for pt in points] + ([floor] if floor else [])
    x_lo, x_hi = math.log2(nfes[0]) - 0.25, math.log2(nfes[-1]) + 0.25
    y_lo, y_hi = math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1

    def to_px(nfe, fd):
        x = left + (math.log2(nfe) - x_lo) / (x_hi - x_lo) * (width - left - right)
        y = top + (y_hi - math.log10(fd)) / (y_hi - y_lo) * (height - top - bottom)
        return x, y

    black = (0, 0, 0)
    draw_line(image, (left, top), (left, height - bottom), black, 1)
    draw_line(image, (left, height - bottom), (width - right, height - bottom), black, 1)
    for nfe in (2 ** k for k in range(math.ceil(x_lo), math.floor(x_hi) + 1)):  # powers of two: labels never collide
        x, _ = to_px(nfe, 1)
        draw_line(image, (x, height - bottom), (x, height - bottom + 6), black, 1)
        label = str(nfe)
        draw_text(image, label, int(x) - len(label) * 4 + 1, height - bottom + 10)
    draw_text(image, "NFE", (left + width - right) // 2 - 12, height - 18)
    for exponent in range(math.floor(y_lo), math.ceil(y_hi) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0 ** exponent
            if y_lo <= math.log10(value) <= y_hi:
                _, y = to_px(nfes[0], value)
                draw_line(image, (left - 6, y), (left, y), black, 1)
                label = format_tick(value)
                draw_text(image, label, left - 10 - len(label) * 8, int(y) - 5)
    draw_text(image, "FD", 4, top)
    if floor:
        _, y = to_px(nfes[0], floor)
        draw_line(image, (left + 1, y), (width - right, y), (150, 150, 150), 1, dash=6)
    for colour, pts in series.values():
        pts = sorted(pt for pt in pts if pt[1] > 0)
        pixels = [to_px(*pt) for pt in pts]
        for p, q in zip(pixels, pixels[1:]):
            draw_line(image, p, q, colour, 2)
        for p in pixels:
            draw_line(image, (p[0] - 2, p[1]), (p[0] + 2, p[1]), colour, 5)
    write_png(path, image)


# ----------------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = make_parser(__doc__)
    common_arguments(parser, repeats=3, repeats_help="timed rounds of the throughput (default 3; --quick 1)",
                     quick="NFE 8 and 16, 100 samples, dpm_adaptive at two tolerances, one timed round")
    parser.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated solvers (default: all)")
    parser.add_argument("--nfe", default=None, help="comma-separated NFE budgets (default 8,16,32,64; --quick 8,16)")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per setting (default 500; --quick 100)")
    parser.add_argument("--model", default="digits", help="the model (a shipped name, model file, checkpoint or run "
                        "folder; default: the shipped digits model)")
    parser.add_argument("--churn", type=float, default=40.0, help="S_churn of the churn rows (0: none; default 40)")
    parser.add_argument("--guidance", default="1,1.5,2,3", help="guidance weights w of the guided rows ('' for none)")
    parser.add_argument("--throughput-nfe", type=int, default=16, help="NFE budget of the throughput timing")
    parser.add_argument("--throughput-batch", type=int, default=None, help="images per timed call (default "
                        "--num-samples)")
    a = parser.parse_args(argv)
    setup(a)
    solvers = [s.strip() for s in a.solvers.split(",") if s.strip()]
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown:
        parser.error(f"--solvers: unknown {unknown}; choose from {', '.join(SOLVERS)}")
    try:
        budgets = [int(s) for s in (a.nfe or ("8,16" if a.quick else "8,16,32,64")).split(",") if s.strip()]
        weights = [float(s) for s in a.guidance.split(",") if s.strip()]
    except ValueError as error:
        parser.error(f"--nfe / --guidance: expected comma-separated numbers ({error})")
    if not budgets or min(budgets) < 1:
        parser.error(f"--nfe: expected budgets >= 1, got {a.nfe}")
    n = a.num_samples or (100 if a.quick else 500)
    if n < 2:
        parser.error(f"--num-samples: expected >= 2 (FD-digits fits a covariance), got {n}")
    repeats = 1 if a.quick and a.repeats == 3 else a.repeats
    classifier = quality.load_classifier()
    net = Counted(fastdiff.load_model(a.model))
    rtols = ADAPTIVE_RTOLS[:2] if a.quick else ADAPTIVE_RTOLS

    print(f"fastdiff {fastdiff.__version__} bench_quality: {n} samples per setting of {net.net.source}; classifier "
          f"held-out accuracy {classifier.heldout_accuracy:.4f}")
    header = f"{'series':<22} {'NFE':>4} {'steps':>10} {'FD':>9} {'floor':>14} {'FD/floor':>9} {'accuracy':>8}"
    print(header)
    rows = []

    def add(series, steps, **settings):
        row = dict(series=series, solver=settings["solver"], steps=steps, **measure(net, n, classifier, **settings))
        row.update(S_churn=settings.get("S_churn", 0.0), guidance=settings.get("guidance"))
        rows.append(row)
        print(f"{series:<22} {row['nfe']:>4} {steps!s:>10} {row['fd']:>9.3f} {row['floor']:>7.3f} +-{row['floor_std']:>5.2f} "
              f"{row['fd_over_floor']:>9.2f} {row['accuracy']:>8.3f}", flush=True)

    for solver in solvers:
        if solver in ADAPTIVE_SOLVERS:
            for rtol in rtols:
                add(solver, f"rtol {rtol:g}", solver=solver,
                    adaptive=dict(rtol=rtol, atol=ADAPTIVE_ATOL))
            continue
        for budget in budgets:
            steps = steps_for(solver, budget)
            add(solver, steps, solver=solver, num_steps=steps)
    if a.churn > 0:
        for solver in [s for s in CHURN_SOLVERS if s in solvers]:
            for budget in budgets:
                steps = steps_for(solver, budget)
                add(f"{solver}+churn {a.churn:g}", steps, solver=solver, num_steps=steps, S_churn=a.churn,
                    **CHURN)
    if weights:
        middle = budgets[len(budgets) // 2]
        for w in weights:
            add(f"heun w={w:g}", steps_for("heun", middle), solver="heun",
                num_steps=steps_for("heun", middle), guidance=w)

    # throughput, side by side: every (non-adaptive) solver at one budget, timed round-robin
    batch = a.throughput_batch or n
    timed = [s for s in solvers if s not in ADAPTIVE_SOLVERS]
    calls = {s: (lambda s=s: quality.sample_model(net.net, batch, batch=batch, solver=s,
                                                  num_steps=steps_for(s, a.throughput_nfe))) for s in timed}
    seconds = median_round_robin(calls, repeats) if timed else {}
    base = "heun" if "heun" in seconds else (timed[0] if timed else None)
    throughput = [dict(solver=s, nfe_budget=a.throughput_nfe, steps=steps_for(s, a.throughput_nfe), batch=batch,
                       seconds=t, images_per_s=batch / t, ratio=seconds[base] / t) for s, t in seconds.items()]

    colours, series = {}, {}
    for row in rows:
        if row["guidance"] is None:
            colour = colours.setdefault(row["series"], PALETTE[len(colours) % len(PALETTE)])
            series.setdefault(row["series"], (colour, []))[1].append((row["nfe"], row["fd"]))
    for row in rows:
        colour = colours.get(row["series"])
        row["colour"] = "" if colour is None else "#%02x%02x%02x" % colour

    print()
    print(f"throughput at NFE budget {a.throughput_nfe}, {batch} images per call, median of {repeats} round(s):")
    print(f"{'solver':<22} {'steps':>5} {'images/s':>10} {'vs ' + str(base):>14}")
    for t in throughput:
        print(f"{t['solver']:<22} {t['steps']:>5} {t['images_per_s']:>10.1f} {t['ratio']:>14.2f}")
    print()
    print("plot colours: " + ", ".join(f"{name} {'#%02x%02x%02x' % c}" for name, c in colours.items()))

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    floor = rows[0]["floor"] if rows else None
    plot(series, floor, out / "bench_quality.png")
    write_csv(out / "bench_quality.csv", rows)
    columns = ["series", "solver", "nfe", "steps", "fd", "floor", "floor_std", "fd_over_floor", "accuracy", "colour"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Throughput at NFE budget {a.throughput_nfe} ({batch} images per call):", "",
              "| solver | steps | images/s | ratio to " + str(base) + " |", "|---|---|---|---|"]
    lines += [f"| {t['solver']} | {t['steps']} | {t['images_per_s']:.1f} | {t['ratio']:.2f} |" for t in throughput]
    (out / "bench_quality.md").write_text("\n".join(lines) + "\n")
    write_json(out / "bench_quality.json", dict(meta=run_meta(torch.device("cpu"), argv, num_samples=n,
                                                              model=net.net.source, budgets=budgets),
                                               rows=rows, throughput=throughput))
    print(f"wrote {out / 'bench_quality.json'}, .csv, .md and .png")


if __name__ == "__main__":
    main()
