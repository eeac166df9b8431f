"""shiftq run: classify one image on a board running the whole-network accelerator."""
NAME = "run"
HELP = "send an image over the UART to a board flashed with the accelerator and print the class"


def add_arguments(p):
    p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--image", required=True,
                   help=".npy image [C,H,W] (float: normalised like the data loader; integer: input ints), "
                        "or an export's vectors.npz (with --index)")
    p.add_argument("--index", type=int, default=0, help="image index in a .npz / batched .npy")
    p.add_argument("--build", default=None, help="export directory (default build/digitnet)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")


def load_image(path, ir, index=0):
    """Input integers [C, H, W] from a .npy / .npz file (floats are quantised by the IR's rule)."""
    from pathlib import Path

    import numpy as np

    from hw.golden import quantize_input
    from shiftq.errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(f"no image file {path}")
    shape = list(ir.graph["input"]["shape"])
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                key = "node:input" if "node:input" in z.files else ("x" if "x" in z.files else z.files[0])
                a = z[key]
        else:
            a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{path} is not a NumPy .npy / .npz file ({type(e).__name__})") from None
    a = np.asarray(a)
    if a.ndim == len(shape) + 1:
        if not 0 <= index < len(a):
            raise UserError(f"{path} holds {len(a)} images; --index {index} is out of range")
        a = a[index]
    if list(a.shape) != shape:
        raise UserError(f"{path}: image shape {list(a.shape)}, the network's input is {shape}")
    if np.issubdtype(a.dtype, np.integer):
        q = (1 << (ir.graph["input"]["bits"] - 1)) - 1
        if a.min() < -q or a.max() > q:
            raise UserError(f"{path}: integer input outside [-{q}, {q}]")
        return a.astype(np.int64)
    return quantize_input(ir, a[None])[0]


def classify(client, net, x):
    """(class, logits, cycles) from the board (or a simulated one) for input ints `x`."""
    from shiftq.errors import UserError

    info = client.identify()
    if info.design_id != net.info.design_id or not info.same_shape(net.info):
        raise UserError(f"the board runs design {info.design_id:#010x}, this export's accelerator is "
                        f"{net.info.design_id:#010x}: flash it first (make bitstream / make flash)")
    cycles, out = client.run([int(v) for v in x.reshape(-1)])
    return int(out[-1]), [int(v) for v in out[:-1]], int(cycles)


def run(args):
    from pathlib import Path

    from boards.accel_top import network_from_build
    from boards.host import Client, SerialTransport
    from hw.synth import get_board

    board = get_board(args.board)
    build = Path(args.build or "build/digitnet")
    net = network_from_build(build, board.name)
    x = load_image(args.image, net.ir, args.index)
    client = Client(SerialTransport(args.port, args.baud), timeout_s=args.timeout)
    klass, logits, cycles = classify(client, net, x)
    want = net.golden(x)
    print(f"class {klass}")
    print(f"logits {logits}")
    print(f"cycles {cycles}; golden model: class {int(want[-1])}"
          f"{'' if list(want[:-1]) == logits else ' (LOGITS DIFFER from the golden model)'}")
    return 0 if list(want[:-1]) == logits and int(want[-1]) == klass else 1
