"""How fast the NumPy trainer trains and infers, next to PyTorch CPU and the matmul bound.

Run by hand (the result goes to docs/trainer-speed.md):

    python bench/trainer_speed.py [--repeats 5] [--inference-batch 1000] [--json PATH] [--quick]

Two networks, each trained for one epoch on the 60,000 Fashion-MNIST training images with
Adam (lr 1e-3), one thread, float32:

    a   784-[100]x6-10, batch norm and ReLU in every hidden block, dropout 0.2, batch 100
    b   784-512-512-10, ReLU, dropout 0.2, batch 128

For each repeat, three measurements per network run back to back (their order rotates from
repeat to repeat, so a burst of load from other processes does not always hit the same side):

    ours    `trainer.fit` for one epoch on a freshly built network (He init, seed = repeat)
    torch   the same network in PyTorch (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
            nn.CrossEntropyLoss, default torch.optim.Adam), starting from the very same initial
            weights, the same batch order (a permutation per epoch, whole batches, x[rows]
            gathered per step), and the same per-step bookkeeping (loss and hits summed)
    bound   the epoch's matrix products alone: for every step, the (batch, fan_in) @
            (fan_in, fan_out) forward product, the x.T @ dout weight gradient and (except for
            the first layer) the dout @ W.T input gradient, each with np.matmul and out= on
            preallocated float32 arrays. bound / ours is the share of our epoch that is the
            unavoidable BLAS work; the rest is elementwise work and Python overhead.
    adam    (after the three, for scale) the epoch's `optimizer.step()` calls alone on the
            network's parameters: bound / (bound + adam) caps the fraction of the bound that
            any trainer with this NumPy Adam can reach
    overhead  the same epoch of the net shrunk to 8 inputs and 4 units a layer: the fixed
            cost of the NumPy calls and the Python around them
    torch adam  torch.optim.Adam's steps alone on the same network, default and fused=True,
            for scale: what Adam costs when it is not one NumPy call per operation

Before and after the repeats, the machine's peak float32 matrix-multiply rate on one thread
(a 2048^3 product, NumPy and torch). The matrix products of the bound and of inference are
reported in GFLOP/s next to it, with the rate that 1.3x PyTorch's inference would need.

Then inference on the 10,000 test images for each trained network: `trainer.evaluate` (loss
and accuracy) against the torch model in eval mode under torch.inference_mode(), both in
batches of --inference-batch rows.

Reported: the best time of each side over the repeats (samples per second from it), and the
paired ratios torch / ours of each repeat (min, median, max). NumPy's BLAS is held to one
thread with threadpoolctl and torch with torch.set_num_threads(1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trainer  # noqa: E402

DATA_DIR = os.environ.get("HPO_DATA_DIR", "/work/shared/data")


@dataclass(frozen=True)
class Net:
    key: str
    label: str
    hidden: tuple[int, ...]
    batch_norm: bool
    batch: int
    vs_torch: float  # target: torch time / our time
    of_bound: float  # target: bound time / our time

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths, input to output."""
        return (784, *self.hidden, 10)

    def config(self, seed: int) -> trainer.TrainConfig:
        return trainer.TrainConfig(input_size=784, hidden_sizes=self.hidden, output_size=10, activation="relu",
                                   init="he", batch_norm=self.batch_norm, dropout=0.2, optimizer="adam", lr=1e-3,
                                   epochs=1, batch_size=self.batch, dtype="float32", seed=seed)


NETS = (
    Net("a", "784-[100]x6-10, BN, dropout 0.2, batch 100", (100,) * 6, True, 100, vs_torch=2.5, of_bound=0.6),
    Net("b", "784-512-512-10, dropout 0.2, batch 128", (512, 512), False, 128, vs_torch=1.2, of_bound=0.8),
)
INFERENCE_TARGET = 1.3  # torch time / our time, for each network


# ---- PyTorch, the reference ---------------------------------------------------------------

def torch_model(network: trainer.Network, net: Net) -> nn.Sequential:
    """The network as nn modules, holding the same initial weights as our `network`."""
    modules: list[nn.Module] = []
    affines = [layer for layer in network.layers if isinstance(layer, trainer.Affine)]
    for i, affine in enumerate(affines):
        fan_in, fan_out = affine.weight.shape
        linear = nn.Linear(fan_in, fan_out, bias=affine.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(affine.weight.value.T.copy()))  # torch keeps (fan_out, fan_in)
            if affine.bias is not None:
                linear.bias.copy_(torch.from_numpy(affine.bias.value))
        modules.append(linear)
        if i < len(affines) - 1:
            if net.batch_norm:
                modules.append(nn.BatchNorm1d(fan_out, eps=1e-5, momentum=0.1))  # our momentum 0.9 = torch's 0.1
            modules += [nn.ReLU(), nn.Dropout(0.2)]
    return nn.Sequential(*modules)


def torch_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                order: np.ndarray, batch: int) -> tuple[float, float]:
    """One epoch as `trainer.fit` runs it: whole batches in `order`, running loss and accuracy."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    order_t = torch.from_numpy(order)
    steps = len(order) // batch
    loss_sum, hits = 0.0, 0
    for step in range(steps):
        rows = order_t[step * batch : (step + 1) * batch]
        xb, yb = x[rows], y[rows]
        scores = model(xb)
        loss = loss_fn(scores, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()
        hits += int((scores.argmax(dim=1) == yb).sum())
    return loss_sum / steps, hits / (steps * batch)


def torch_evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """As `trainer.evaluate`: mean cross-entropy and accuracy in inference mode, batch by batch."""
    model.eval()
    loss_sum, hits = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(y), batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            scores = model(xb)
            loss_sum += float(nn.functional.cross_entropy(scores, yb, reduction="sum"))
            hits += int((scores.argmax(dim=1) == yb).sum())
    return loss_sum / len(y), hits / len(y)


# ---- the matrix-multiply bound ------------------------------------------------------------

class GemmBound:
    """The matrix products of one training epoch of a network, and nothing else."""

    def __init__(self, net: Net, n: int, rng: np.random.Generator):
        self.steps = n // net.batch
        sizes = net.sizes
        self.layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            def array(*shape):
                return (0.1 * rng.standard_normal(shape)).astype(np.float32)
            x, w, dout = array(net.batch, fan_in), array(fan_in, fan_out), array(net.batch, fan_out)
            out, dw = np.empty((net.batch, fan_out), np.float32), np.empty((fan_in, fan_out), np.float32)
            dx = np.empty((net.batch, fan_in), np.float32) if i > 0 else None
            self.layers.append((x, w, dout, out, dw, dx))

    def epoch(self) -> float:
        matmul, layers = np.matmul, self.layers
        started = time.perf_counter()
        for _ in range(self.steps):
            for x, w, _, out, _, _ in layers:
                matmul(x, w, out=out)  # (batch, fan_in) @ (fan_in, fan_out)
            for x, w, dout, _, dw, dx in reversed(layers):
                matmul(x.T, dout, out=dw)  # (fan_in, batch) @ (batch, fan_out)
                if dx is not None:
                    matmul(dout, w.T, out=dx)  # (batch, fan_out) @ (fan_out, fan_in)
        return time.perf_counter() - started


def adam_epoch(net: Net, n: int) -> float:
    """Seconds of the epoch's Adam updates alone (`optimizer.step()` once per step), for scale."""
    network = trainer.build_network(net.config(seed=0))
    optimizer = trainer.make_optimizer(net.config(seed=0), network.parameters())
    network.flat.grads[...] = 1e-3 * np.random.default_rng(0).standard_normal(network.flat.size)
    started = time.perf_counter()
    for _ in range(n // net.batch):
        optimizer.step()
    return time.perf_counter() - started


def torch_adam_epoch(net: Net, n: int, fused: bool) -> float:
    """Seconds of the epoch's torch.optim.Adam steps alone on the same network, for scale.

    fused=False is torch's default (the multi-tensor "foreach" implementation); fused=True is
    its single-pass C++ kernel: what an Adam written outside NumPy's one-operation-per-call
    model costs on this machine.
    """
    model = torch_model(trainer.build_network(net.config(seed=0)), net)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    generator = torch.Generator().manual_seed(0)
    for parameter in model.parameters():
        parameter.grad = 1e-3 * torch.randn(parameter.shape, generator=generator)
    started = time.perf_counter()
    for _ in range(n // net.batch):
        optimizer.step()
    return time.perf_counter() - started


def peak_gflops() -> dict[str, float]:
    """The machine's float32 matrix-multiply rate on one thread: a 2048^3 product, best of 5.

    Nothing that does an epoch's or an inference's arithmetic densely can run faster than
    this; it turns "x times PyTorch" targets into GFLOP/s that can be checked against it.
    """
    size = 2048
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    a_t, out_t = torch.from_numpy(a), torch.from_numpy(out.copy())
    rates = {}
    for side, product in (("numpy", lambda: np.matmul(a, a, out=out)), ("torch", lambda: torch.mm(a_t, a_t, out=out_t))):
        best = min(timed(product)[0] for _ in range(5))
        rates[side] = 2 * size**3 / best / 1e9
    return rates


def inference_flops(net: Net, n: int) -> float:
    """Floating-point operations of the matrix products of one inference pass over n rows."""
    sizes = net.sizes
    return 2.0 * n * sum(a * b for a, b in zip(sizes, sizes[1:]))


def epoch_flops(net: Net, n: int) -> float:
    """Floating-point operations of the matrix products of one training epoch (what `bound` times)."""
    sizes = net.sizes
    rows = (n // net.batch) * net.batch
    per_row = sum((3 if i > 0 else 2) * a * b for i, (a, b) in enumerate(zip(sizes, sizes[1:])))
    return 2.0 * rows * per_row


def overhead_epoch(net: Net, pool: trainer.Dataset) -> float:
    """Seconds of one `fit` epoch of the same net shrunk to 8 inputs and 4 units a hidden layer.

    Every NumPy call still happens once per step, on tiny arrays: what is left is the fixed
    cost of the calls and of the Python around them, which no arithmetic saving reduces.
    """
    config = net.config(seed=0).replace(input_size=8, hidden_sizes=(4,) * len(net.hidden))
    tiny = trainer.Dataset(np.ascontiguousarray(pool.x[:, :8]), pool.y)
    started = time.perf_counter()
    trainer.fit(config, tiny)
    return time.perf_counter() - started


# ---- measuring ----------------------------------------------------------------------------

def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def summary(ours: list[float], theirs: list[float]) -> dict:
    """Best of each side and the paired ratios theirs / ours."""
    ratios = sorted(t / o for o, t in zip(ours, theirs))
    return {"best": min(ours), "best_other": min(theirs), "best_ratio": min(theirs) / min(ours),
            "paired_min": ratios[0], "paired_median": statistics.median(ratios), "paired_max": ratios[-1]}


def machine() -> dict:
    def run(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    blas = [{k: i.get(k) for k in ("internal_api", "prefix", "architecture", "version")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": run("nproc"), "cpu": run("lscpu | grep 'Model name'").split(":", 1)[-1].strip(),
            "load_average": os.getloadavg(), "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "numpy_blas": blas,
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per measurement (default 5)")
    parser.add_argument("--inference-batch", type=int, default=1000, help="rows per inference pass, both sides")
    parser.add_argument("--quick", action="store_true", help="6,000 training and 2,000 test images: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    pool = trainer.load_training_pool("fashion-mnist", data_dir=DATA_DIR)
    test = trainer.load_test_split("fashion-mnist", data_dir=DATA_DIR)
    if args.quick:
        pool = trainer.Dataset(pool.x[:6000], pool.y[:6000])
        test = trainer.Dataset(test.x[:2000], test.y[:2000])
    n, n_test = len(pool.y), len(test.y)
    # torch gets its own copies: the Dataset arrays are read-only, which torch.from_numpy warns about
    x_t, y_t = torch.tensor(pool.x), torch.tensor(pool.y)
    xtest_t, ytest_t = torch.tensor(test.x), torch.tensor(test.y)

    times = {net.key: {"ours": [], "torch": [], "bound": [], "adam": [], "torch_adam": [], "torch_adam_fused": [],
                       "overhead": []} for net in NETS}
    infer = {net.key: {"ours": [], "torch": []} for net in NETS}
    bounds = {net.key: GemmBound(net, n, np.random.default_rng(0)) for net in NETS}
    accuracy = {}
    with threadpool_limits(1):
        peaks = [peak_gflops()]
        for net in NETS:  # warm-up, untimed: first calls load kernels and fill allocator caches
            few = net.batch * 20
            network = trainer.build_network(net.config(seed=0))
            model = torch_model(network, net)
            trainer.fit(net.config(seed=0), trainer.Dataset(pool.x[:few], pool.y[:few]), network=network)
            torch_epoch(model, torch.optim.Adam(model.parameters(), lr=1e-3), x_t, y_t, np.arange(few), net.batch)
            trainer.evaluate(network, test, batch_size=args.inference_batch)
            torch_evaluate(model, xtest_t, ytest_t, args.inference_batch)
        for r in range(args.repeats):
            for net in NETS:
                config = net.config(seed=r)
                network = trainer.build_network(config)
                model = torch_model(network, net)  # copies the initial weights before we train ours
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                order = np.random.default_rng(trainer.seed_streams(r)[2]).permutation(n)  # fit's first order

                def ours():
                    history = trainer.fit(config, pool, network=network).history
                    return history.epochs[0].train_accuracy

                def theirs():
                    return torch_epoch(model, optimizer, x_t, y_t, order, net.batch)[1]

                runs = [("ours", ours), ("torch", theirs), ("bound", bounds[net.key].epoch)]
                shift = r % 3
                for side, fn in runs[shift:] + runs[:shift]:
                    seconds, result = timed(fn)
                    times[net.key][side].append(seconds if side != "bound" else result)
                    if side != "bound":
                        accuracy.setdefault(net.key, {})[f"{side}_train"] = result
                times[net.key]["adam"].append(adam_epoch(net, n))
                times[net.key]["torch_adam"].append(torch_adam_epoch(net, n, fused=False))
                times[net.key]["torch_adam_fused"].append(torch_adam_epoch(net, n, fused=True))
                times[net.key]["overhead"].append(overhead_epoch(net, pool))

                # inference with the trained networks, interleaved, several passes
                for i in range(3):
                    pair = [("ours", lambda: trainer.evaluate(network, test, batch_size=args.inference_batch)),
                            ("torch", lambda: torch_evaluate(model, xtest_t, ytest_t, args.inference_batch))]
                    for side, fn in pair if (r + i) % 2 == 0 else pair[::-1]:
                        seconds, (_, acc) = timed(fn)
                        infer[net.key][side].append(seconds)
                        accuracy[net.key][f"{side}_test"] = acc
            print(f"repeat {r + 1}/{args.repeats}: " + "  ".join(
                f"{k} ours {times[k]['ours'][-1]:.3f}s torch {times[k]['torch'][-1]:.3f}s "
                f"bound {times[k]['bound'][-1]:.3f}s" for k in times), flush=True)
        peaks.append(peak_gflops())
    peak = {side: max(p[side] for p in peaks) for side in ("numpy", "torch")}
    top = max(peak.values())
    results = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "train_samples": n, "test_samples": n_test, "inference_batch": args.inference_batch,
               "repeats": args.repeats, "peak_gflops": peak, "nets": {}}
    print(f"\nOne thread, float32. Training: one epoch on {n:,} images; inference: {n_test:,} test images "
          f"in batches of {args.inference_batch}. Best of {args.repeats} per side (inference: of "
          f"{3 * args.repeats}); ratio = torch time / our time.\n")
    header = f"{'net':<4}{'what':<11}{'ours s':>8}{'torch s':>9}{'ours/s':>10}{'torch/s':>10}" \
             f"{'best ratio':>12}{'paired min/med/max':>22}{'target':>8}{'met':>5}"
    print(header)
    print("-" * len(header))
    for net in NETS:
        t, inf = times[net.key], infer[net.key]
        train = summary(t["ours"], t["torch"])
        bound = summary(t["ours"], t["bound"])
        inference = summary(inf["ours"], inf["torch"])
        steps_samples = (n // net.batch) * net.batch
        train_met = train["paired_median"] >= net.vs_torch
        bound_met = bound["best_ratio"] >= net.of_bound
        inference_met = inference["paired_median"] >= INFERENCE_TARGET
        results["nets"][net.key] = {
            "label": net.label, "train_seconds": t, "inference_seconds": inf,
            "train": {**train, "samples_per_second": steps_samples / train["best"],
                      "torch_samples_per_second": steps_samples / train["best_other"],
                      "target": net.vs_torch, "met": train_met},
            "bound": {"best_bound_seconds": bound["best_other"], "fraction_best": bound["best_ratio"],
                      "fraction_paired_min": bound["paired_min"], "fraction_paired_median": bound["paired_median"],
                      "fraction_paired_max": bound["paired_max"], "target": net.of_bound, "met": bound_met},
            "inference": {**inference, "samples_per_second": n_test / inference["best"],
                          "torch_samples_per_second": n_test / inference["best_other"],
                          "target": INFERENCE_TARGET, "met": inference_met},
            "adam_alone_best_seconds": min(t["adam"]),
            "torch_adam_alone_best_seconds": min(t["torch_adam"]),
            "torch_fused_adam_alone_best_seconds": min(t["torch_adam_fused"]),
            "bound_gflops": epoch_flops(net, n) / bound["best_other"] / 1e9,
            "inference_gflops": {"ours": inference_flops(net, n_test) / inference["best"] / 1e9,
                                 "torch": inference_flops(net, n_test) / inference["best_other"] / 1e9,
                                 "needed_for_target": INFERENCE_TARGET * inference_flops(net, n_test)
                                 / inference["best_other"] / 1e9},
            "fixed_overhead_best_seconds": min(t["overhead"]),
            "accuracy": accuracy[net.key],
        }

        def row(what, s, samples, target, met):
            paired = f"{s['paired_min']:.2f}/{s['paired_median']:.2f}/{s['paired_max']:.2f}"
            print(f"{net.key:<4}{what:<11}{s['best']:>8.3f}{s['best_other']:>9.3f}{samples / s['best']:>10,.0f}"
                  f"{samples / s['best_other']:>10,.0f}{s['best_ratio']:>11.2f}x{paired:>22}{target:>7.2f}x"
                  f"{'yes' if met else 'NO':>5}")

        row("train", train, steps_samples, net.vs_torch, train_met)
        row("inference", inference, n_test, INFERENCE_TARGET, inference_met)
        print(f"{'':<4}{'bound':<11}{bound['best_other']:>8.3f}s of matmuls; fraction of our epoch: best "
              f"{bound['best_ratio']:.2f}, paired {bound['paired_min']:.2f}/{bound['paired_median']:.2f}/"
              f"{bound['paired_max']:.2f} (target {net.of_bound:.2f}: {'yes' if bound_met else 'NO'})")
        adam = min(t["adam"])
        print(f"{'':<4}{'adam':<11}{adam:>8.3f}s of Adam updates alone; bound / (bound + Adam) = "
              f"{bound['best_other'] / (bound['best_other'] + adam):.2f}")
        torch_adam, fused = min(t["torch_adam"]), min(t["torch_adam_fused"])
        print(f"{'':<4}{'':<11}{torch_adam:>8.3f}s torch Adam (default), {fused:.3f}s torch Adam(fused=True); "
              f"bound / (bound + fused) = {bound['best_other'] / (bound['best_other'] + fused):.2f}")
        overhead = min(t["overhead"])
        print(f"{'':<4}{'overhead':<11}{overhead:>8.3f}s for the same epoch on tiny arrays (call overhead); "
              f"bound / (bound + overhead) = {bound['best_other'] / (bound['best_other'] + overhead):.2f}")
        rates = results["nets"][net.key]["inference_gflops"]
        print(f"{'':<4}{'GFLOP/s':<11}matmuls of the bound {results['nets'][net.key]['bound_gflops']:.1f}; inference: "
              f"ours {rates['ours']:.1f}, torch {rates['torch']:.1f}; {INFERENCE_TARGET}x torch needs "
              f"{rates['needed_for_target']:.1f} = {rates['needed_for_target'] / top:.2f} of the peak")
    print(f"\nPeak float32 matmul rate, one thread (2048^3, best): NumPy {peak['numpy']:.1f} GFLOP/s, "
          f"torch {peak['torch']:.1f} GFLOP/s.")
    print("Targets are judged on the paired median (torch) and on best/best (bound).")
    acc = {k: {s: round(v, 4) for s, v in a.items()} for k, a in accuracy.items()}
    print(f"Accuracy after the last epoch measured (a sanity check, not a comparison): {acc}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
