"""The golden model: executes the IR with NumPy integers. It is the specification.

RTL and HLS C simulation must equal this on every output bit. The results are the
integers of docs/ir.md, computed exactly; for speed, the arithmetic runs in float
wherever that is provably exact, and otherwise in int64:

- Floats represent every integer of magnitude <= 2^24 (float32) or <= 2^53 (float64),
  and IEEE 754 rounds every +, * and fused multiply-add correctly, so an operation on
  such integers whose exact result is again such an integer returns that result. A
  computation is therefore exact, in any evaluation order (BLAS blocking, pairwise
  sums, FMA), when every operand, product and partial sum is an integer within the
  limit. The bounds below are worst cases (sum |w| * max |value| and so on), so they
  cover every partial sum and not just the final one; they are computed from the
  weight arrays and the declared widths of the input tensors, which hold because every
  tensor is checked against its declared width where it is produced.
- Every value is checked against its declared width. Where a worst-case bound already
  proves that no value of a node can exceed its width, that proof is the check;
  otherwise the values themselves are checked (so an IR whose widths are wrong is
  caught exactly as before, with the same message: see `run`).

Internally feature maps are channel-major ([C, N, H, W], codes as small unsigned ints):
a convolution is then W^T @ X^T BLAS products with the pixels as the long dimension,
markedly faster than X @ W for the few channels of these networks. The batch is cut
into chunks that stay in cache and run on up to two threads (NumPy and BLAS release the
GIL). The interface is unchanged: [N, C, H, W] / [N, F] int64 in and out.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .ir import IR

_F32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is a float32
_F64_EXACT = 1 << 53  # every integer of magnitude <= 2^53 is a float64
CHUNK = 8  # images per chunk: a stage-1 ResNet-20 chunk's float64 temporaries fit in L2
THREADS = int(os.environ.get("SHIFTQ_GOLDEN_THREADS", min(2, os.cpu_count() or 1)))


class WidthError(AssertionError):
    """A value exceeded the width the IR declares for it: the IR (or the lowering) is wrong."""


def _check_signed(a, bits, what):
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -(1 << (bits - 1)) or hi > (1 << (bits - 1)) - 1:
            raise WidthError(f"{what}: values in [{lo}, {hi}] exceed {bits} signed bits")


def _check_out(a, out, what):
    if out["kind"] == "code":
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(out["levels"])):
            raise WidthError(f"{what}: codes outside 0..{len(out['levels']) - 1}")
    else:
        _check_signed(a, out["bits"], what)


def quantize_input(ir: IR, x) -> np.ndarray:
    """Float images [N, C, H, W] (normalised as the loader does) to input integers."""
    inp = ir.graph["input"]
    q = (1 << (inp["bits"] - 1)) - 1
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    return np.clip(np.floor(x / inp["scale"] + 0.5), -q, q).astype(np.int64)


# ---------------------------------------------------------------- per-run constants

def _vmax(t: dict) -> int:
    """Largest |value| of a tensor that fits its declared description."""
    if t["kind"] == "code":
        return max(abs(int(v)) for v in t["levels"])
    return 1 << (t["bits"] - 1)


def _float_dtype(bound: int):
    """The cheapest dtype exact for integer arithmetic bounded by `bound` (see the module doc)."""
    if bound <= _F32_EXACT:
        return np.float32
    if bound <= _F64_EXACT:
        return np.float64
    return np.int64


def _code_dtype(top: int):
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64


class _Plan:
    """The constants of one node for one run: weights in the compute dtype, bounds,
    lookup tables, and which width checks the bounds already prove."""

    def __init__(self, ir: IR, n: dict, trusted: bool):
        self.n, self.op, self.name = n, n["op"], n["name"]
        self.out = n["out"]
        tin = ir.tensor(n["input"])
        # decode table of the input (value = levels[code]); None for int tensors
        self.levels = np.asarray(tin["levels"], dtype=np.int64) if tin["kind"] == "code" else None
        # value == code (uniform levels): decoding is a cast
        self.identity = self.levels is not None and np.array_equal(self.levels, np.arange(len(self.levels)))
        self.rq = None
        vmax = _vmax(tin)
        acc_bound = None  # per output channel: worst-case |acc| (Python ints)
        if self.op in ("conv2d", "linear"):
            w = ir.array(n["weight"]["key"]).astype(np.int64)
            o = w.shape[0]
            wabs = np.abs(w).reshape(o, -1)
            acc_bound = [int(a) * vmax for a in wabs.sum(1).tolist()]
            # every product w*v and partial sum is within acc_bound; operands within wmax, vmax
            worst = max(acc_bound + [int(wabs.max(initial=0)), vmax])
            self.dt = _float_dtype(worst) if trusted else np.int64
            if self.op == "conv2d":
                self.wk = np.ascontiguousarray(w.transpose(2, 3, 0, 1).astype(self.dt))  # [KH, KW, O, I]
                self.wall = self.wk.reshape(-1, w.shape[1])  # [KH*KW*O, I]
            else:
                self.wt = np.ascontiguousarray(w.T.astype(self.dt))  # [I, O]
        elif self.op in ("gap", "avgpool"):
            c, h, wd = tin["shape"]
            k = self.k = h * wd if self.op == "gap" else n["kernel"] * n["kernel"]
            acc_bound = [k * vmax] * c  # a sum of k values (`_node` checks k for gap)
            self.dt = _float_dtype(max(acc_bound + [vmax])) if trusted else np.int64
        if acc_bound is not None:
            ab = n["acc_bits"]
            amax = (1 << (ab - 1)) - 1
            # the accumulator check is proven when its worst case fits; if not (or if the
            # input is untrusted) the accumulator is checked value by value, after which
            # |acc| <= 2^(acc_bits-1) is what is known of it
            self.acc_proven = trusted and max(acc_bound, default=0) <= amax
            acc_lim = [min(a, amax + 1) for a in acc_bound] if trusted else [amax + 1] * len(acc_bound)
            if self.levels is not None:
                self.lv = self.levels.astype(self.dt)
            rq = n.get("requant")
            # conv / avgpool accumulators are [O, N, H, W], linear / gap ones [N, O]
            bshape = (1, -1) if self.op in ("linear", "gap") else (-1, 1, 1, 1)
            self.rq = rq and _ReqPlan(ir, n, rq, acc_lim, trusted, bshape)


class _ReqPlan:
    def __init__(self, ir, n, rq, acc_lim, trusted, bshape):
        out = n["out"]
        self.name = n["name"]
        m = ir.array(rq["mult"]).astype(np.int64)
        b = ir.array(rq["bias"]).astype(np.int64)
        sh = self.shift = int(rq["shift"])
        self.m, self.b = m.reshape(bshape), b.reshape(bshape)
        self.sum_bits = rq["sum_bits"]
        bound = [a * abs(mi) + abs(bi) for a, mi, bi in zip(acc_lim, m.tolist(), b.tolist())]
        self.res = rq.get("residual")
        if self.res:
            tr = ir.tensor(self.res["input"])
            rm = ir.array(self.res["mult"]).astype(np.int64)
            rvmax = _vmax(tr)
            bound = [s + rvmax * abs(r) for s, r in zip(bound, rm.tolist())]
            self.rm = rm.reshape(bshape)
            self.rlevels = np.asarray(tr["levels"], dtype=np.int64) if tr["kind"] == "code" else None
        smax = max(bound, default=0)
        self.sum_proven = trusted and smax <= (1 << (self.sum_bits - 1)) - 1
        # float64: every term (acc*m, b, value*rm) and partial sum of s is an integer of
        # magnitude <= smax <= 2^53, so s is exact; scaling by 2^-shift only changes the
        # exponent (no rounding while it stays in the normal range, hence shift <= 900),
        # so s * 2^-shift = acc * (m 2^-shift) + ... is computed exactly as well
        self.f64 = trusted and smax <= _F64_EXACT and sh <= 900
        act = rq.get("act")
        self.act = act
        if act is None:
            self.top = None
        elif act["scheme"] == "uniform":
            self.top = (1 << out["bits"]) - 1
        else:
            thr = np.asarray(act["thresholds"], dtype=np.int64)
            self.thr_last = int(thr[-1])
            # code = #{k: y >= thr[k]}, through a table over [0, thr[-1]] (thresholds are >= 1,
            # so everything below 0 is code 0 and everything from thr[-1] up is the top code)
            table = np.searchsorted(thr, np.arange(self.thr_last + 1), side="right")
            self.top = len(thr)
            self.table = table.astype(_code_dtype(self.top))
        # codes from the activation are in 0..top: proven in range when top < len(levels)
        self.out_proven = act is not None and out["kind"] == "code" and self.top < len(out["levels"])
        # set by `run` when a consumer reads this node's values: they are then produced
        # here from the same index as the codes (levels[table[i]], float32-exact when the
        # levels are within 2^24), sparing the consumer a decode of the codes
        self.values = None
        self.codes = True  # False (set by `run`) when every reader takes the values
        if self.out_proven and act["scheme"] != "uniform" and max(abs(v) for v in out["levels"]) <= _F32_EXACT:
            self.vtable = np.asarray(out["levels"], dtype=np.float32)[self.table]
        if self.f64:
            scale = 2.0 ** -sh
            self.m2 = m.astype(np.float64).reshape(bshape) * scale
            self.b2 = b.astype(np.float64).reshape(bshape) * scale
            if self.res:
                self.rm2 = rm.astype(np.float64).reshape(bshape) * scale
                self.rlv = self.rlevels.astype(np.float64) if self.rlevels is not None else None

    def __call__(self, acc, env, sc):
        """Requantize `acc` to the output codes / ints."""
        if not self.f64:
            return self._int64(acc, env)
        s = sc.buf(("s",) + acc.shape, np.float64)
        np.multiply(acc, self.m2, out=s)
        s += self.b2
        if self.res:
            r = env[self.res["input"]]
            rv = sc.buf(("rv",) + acc.shape, np.float64)
            rvals = env.get(("values", self.res["input"]))
            if rvals is not None:
                rv[...] = rvals
            elif self.rlv is not None:
                np.take(self.rlv, r, out=rv)
            else:
                rv[...] = r
            rv *= self.rm2
            s += rv
        if not self.sum_proven and s.size:
            # s holds the exact sums times 2^-shift, and so do these limits (powers of two
            # times integers below 2^53: here sum_bits - 1 <= 53, or the bound would fit)
            sb, scale = self.sum_bits, 2.0 ** -self.shift
            if s.min() < -float(1 << (sb - 1)) * scale or s.max() > float((1 << (sb - 1)) - 1) * scale:
                return self._int64(acc, env)  # raises, with the integer range in the message
        act = self.act
        if act is None:
            return np.floor(s).astype(np.int64)  # y = floor(s / 2^shift), s already scaled
        # floor(clip(s', 0, T)) == clip(floor(s'), 0, T) for an integer T (floor is monotone
        # and fixes integers), and the cast truncates toward 0, which is floor on [0, T]
        if act["scheme"] == "uniform":
            np.clip(s, 0, self.top, out=s)
            return s.astype(_code_dtype(self.top))
        np.clip(s, 0, self.thr_last, out=s)
        idx = sc.buf(("idx",) + acc.shape, np.intp)
        np.copyto(idx, s, casting="unsafe")
        if self.values:
            vals = env[("values", self.name)] = self.vtable.take(idx)
            if not self.codes:
                return vals  # a stand-in of the right shape: no reader looks at the codes
        return self.table.take(idx)

    def _int64(self, acc, env):
        s = acc.astype(np.int64) * self.m + self.b
        if self.res:
            r = env[self.res["input"]]
            rvals = env.get(("values", self.res["input"]))  # then r may be a stand-in
            if rvals is not None:
                rv = rvals.astype(np.int64)
            else:
                rv = self.rlevels[r] if self.rlevels is not None else r.astype(np.int64)
            s = s + rv * self.rm
        _check_signed(s, self.sum_bits, f"{self.name} requant sum")
        y = s >> self.shift
        act = self.act
        if act is None:
            return y
        if act["scheme"] == "uniform":
            return np.clip(y, 0, self.top).astype(_code_dtype(self.top))
        return self.table[np.clip(y, 0, self.thr_last)]


class _Scratch:
    """One thread's reusable work arrays (no allocation, no page faults per chunk)."""

    def __init__(self):
        self.bufs = {}

    def buf(self, key, dtype, zeros=False, shape=None):
        k = (key, np.dtype(dtype).str)
        a = self.bufs.get(k)
        if a is None:
            shape = shape if shape is not None else key[1:]
            a = self.bufs[k] = (np.zeros if zeros else np.empty)(shape, dtype=dtype)
        return a


# ---------------------------------------------------------------- node kernels (channel-major)

def _decode(p: _Plan, x, out, env):
    """Input values, in the plan's compute dtype, into `out`."""
    vals = env.get(("values", p.n["input"]))
    if vals is not None:
        out[...] = vals
    elif p.levels is not None and not p.identity:
        np.take(p.lv, x, out=out)
    else:
        out[...] = x


def _values(p: _Plan, x, env):
    vals = env.get(("values", p.n["input"]))
    if vals is not None:
        return vals.astype(p.dt)
    return p.lv.take(x) if p.levels is not None and not p.identity else x.astype(p.dt)


def _conv2d(p: _Plan, x, sc, env):
    """x [I, N, H, W] -> accumulator [O, N, HO, WO] (possibly a view of a scratch array)."""
    n = p.n
    kh, kw, o, i = p.wk.shape
    s, pad = n["stride"], n["padding"]
    _, nb, h, wd = x.shape
    ho, wo = (h + 2 * pad - kh) // s + 1, (wd + 2 * pad - kw) // s + 1
    if s == 1 and pad < min(kh, kw):
        return _conv2d_flat(p, x, sc, env, kh, kw, pad, ho, wo)
    vp = np.zeros((i, nb, h + 2 * pad, wd + 2 * pad), dtype=p.dt)
    _decode(p, x, vp[:, :, pad:pad + h, pad:pad + wd], env)
    acc = np.zeros((o, nb * ho * wo), dtype=p.dt)
    for ky in range(kh):
        for kx in range(kw):
            patch = vp[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]
            acc += p.wk[ky, kx] @ np.ascontiguousarray(patch).reshape(i, -1)
    return acc.reshape(o, nb, ho, wo)


def _conv2d_flat(p: _Plan, x, sc, env, kh, kw, pad, ho, wo):
    """Stride 1 without patch copies. Per channel, the chunk is laid out as one long run
    of pixels: each image row followed by `pad` zero pixels, each image by `pad` zero
    rows, after `pad` leading zero pixels and rows. The window of output (n, y, x) then
    starts at pixel a = (n*(h+pad) + y)*(w+pad) + x and kernel offset (ky, kx) is pixel
    a + ky*(w+pad) + kx, so each offset is one BLAS product on a contiguous slice.
    Reads left of column 0 land in the previous row's zero gap, reads right of column w-1
    in this row's gap (each side needs pad zeros: the gap is shared, kw > pad), reads
    above / below an image in the zero rows between images (kh > pad). Outputs at
    y >= ho or x >= wo (windows that wrap) are computed and dropped."""
    i, nb, h, wd = x.shape
    o = p.wk.shape[2]
    wp = wd + pad
    rows = nb * (h + pad) * wp  # the anchors computed: every (n, y < h + pad, x < w + pad)
    body = pad + (pad + nb * (h + pad)) * wp
    tot = max(body, rows + (kh - 1) * wp + kw - 1)
    # the key fixes the geometry, so a reused array has zeros exactly where they belong
    g = sc.buf(("g", i, nb, h, wd, pad, tot), p.dt, zeros=True, shape=(i, tot))
    img = g[:, pad:body].reshape(i, pad + nb * (h + pad), wp)[:, pad:].reshape(i, nb, h + pad, wp)
    assert np.may_share_memory(img, g)  # a view, not a copy
    _decode(p, x, img[:, :, :h, :wd], env)
    # all offsets in one product (the weights of offset k are rows k*o..(k+1)*o of wall),
    # then the shifted slices summed: faster than one small product per offset
    ext = (kh - 1) * wp + kw - 1
    y = sc.buf(("y", kh * kw * o, rows + ext), p.dt)
    np.matmul(p.wall, g[:, :rows + ext], out=y)
    offs = [ky * wp + kx for ky in range(kh) for kx in range(kw)]
    if len(offs) == 1:
        acc = y[:, :rows]
    else:
        acc = sc.buf(("acc", o, rows), p.dt)
        np.add(y[:o, offs[0]:offs[0] + rows], y[o:2 * o, offs[1]:offs[1] + rows], out=acc)
        for k in range(2, len(offs)):
            acc += y[k * o:(k + 1) * o, offs[k]:offs[k] + rows]
    return acc.reshape(o, nb, h + pad, wp)[:, :, :ho, :wo]


def _pool_windows(x, k, s):
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return win[:, :, ::s, ::s]  # [C, N, HO, WO, k, k]


def _node(p: _Plan, env: dict, sc: _Scratch):
    """One node's output (internal layout) from `env` (name -> internal tensor)."""
    op, name, n = p.op, p.name, p.n
    x = env[n["input"]]
    if op in ("conv2d", "linear", "gap", "avgpool"):
        if op == "conv2d":
            acc = _conv2d(p, x, sc, env)
        elif op == "linear":
            acc = _values(p, x, env) @ p.wt
        elif op == "gap" and x.shape[2] * x.shape[3] != p.k:
            # not the declared size, so not the bound: sum and check exactly
            acc = _values(p, x, env).astype(np.int64).sum(axis=(2, 3)).T
            _check_signed(acc, n["acc_bits"], f"{name} sum")
            y = p.rq._int64(acc, env)
            _check_out(y, p.out, name)
            return y
        elif op == "gap":
            acc = _values(p, x, env).sum(axis=(2, 3), dtype=p.dt).T
        else:
            acc = _pool_windows(_values(p, x, env), n["kernel"], n["stride"]).sum(axis=(4, 5), dtype=p.dt)
        if not p.acc_proven:
            _check_signed(acc, n["acc_bits"], f"{name} {'accumulator' if op in ('conv2d', 'linear') else 'sum'}")
        if p.rq is None:
            y = acc.astype(np.int64)
        else:
            y = p.rq(acc, env, sc)
            if p.rq.out_proven:
                return y
    elif op == "maxpool":
        y = _pool_windows(x, n["kernel"], n["stride"]).max(axis=(4, 5))
    elif op == "shortcut":
        s = n["stride"]
        src = np.asarray(n["src"])
        y = x[:, :, ::s, ::s][np.maximum(src, 0)]
        y[src < 0] = 0
    elif op == "flatten":
        y = _external(x).reshape(x.shape[1], -1) if x.ndim == 4 else x.reshape(x.shape[0], -1)
    else:
        raise ValueError(f"unknown op {op!r}")
    _check_out(y, p.out, name)
    return y


def _internal(a):
    """[N, C, H, W] -> the internal [C, N, H, W] (a view); vectors are unchanged."""
    return a.transpose(1, 0, 2, 3) if a.ndim == 4 else a


def _external(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3) if a.ndim == 4 else a, dtype=np.int64)


# ---------------------------------------------------------------- interface

def _fits(ir, name, a) -> bool:
    try:
        _check_out(a, ir.tensor(name), name)
    except WidthError:
        return False
    return True


def run_node(ir: IR, n: dict, env: dict) -> np.ndarray:
    """One node's integer output from `env` (name -> integer tensor [N, C, H, W] or
    [N, F], batch first), as int64 [N, ...]."""
    deps = [n["input"]]
    rq = n.get("requant")
    if rq and rq.get("residual"):
        deps.append(rq["residual"]["input"])
    # the bounds assume inputs within their declared widths; these come from outside,
    # so check that, and compute in int64 with every value checked if they do not
    trusted = all(_fits(ir, d, np.asarray(env[d])) for d in deps)
    local = {d: _internal(np.asarray(env[d])) for d in deps}
    return _external(_node(_Plan(ir, n, trusted), local, _Scratch()))


def _last_use(ir: IR) -> dict:
    last = {}
    for k, n in enumerate(ir.nodes):
        last[n["input"]] = k
        rq = n.get("requant")
        if rq and rq.get("residual"):
            last[rq["residual"]["input"]] = k
    return last


def _run_chunk(plans, last, output, x, keep_all, sc):
    env = {"input": _internal(x)}
    for k, p in enumerate(plans):
        env[p.name] = _node(p, env, sc)
        for d in [p.n["input"]] + ([p.rq.res["input"]] if p.rq and p.rq.res else []):
            if last.get(d) == k:
                env.pop(("values", d), None)
                if not keep_all and d != output:
                    env.pop(d, None)
    if keep_all:
        return {k: _external(v) for k, v in env.items() if isinstance(k, str)}
    return {output: _external(env[output])}


_controller = []


def _blas_one_thread():
    """Limit BLAS to one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext()
    if not _controller:  # finding the libraries is the slow part: once per process
        _controller.append(ThreadpoolController())
    return _controller[0].limit(limits=1, user_api="blas")


def run(ir: IR, inputs, return_all: bool = False, quantized: bool = False):
    """Run the network on a batch.

    `inputs`: float images [N, C, H, W] (or input integers with `quantized=True`).
    Returns the output node's integers [N, ...], or with `return_all` a dict of every
    node's integer output (codes for code tensors), "input" included.
    """
    x = np.asarray(inputs)
    xq = x.astype(np.int64) if quantized else quantize_input(ir, x)
    _check_signed(xq, ir.graph["input"]["bits"], "input")
    plans = [_Plan(ir, n, trusted=True) for n in ir.nodes]
    readers = {p.n["input"] for p in plans if p.op in ("conv2d", "linear", "gap", "avgpool")}
    readers |= {p.rq.res["input"] for p in plans if p.rq and p.rq.res}
    code_readers = {p.n["input"] for p in plans if p.op not in ("conv2d", "linear", "gap", "avgpool")}
    for p in plans:
        if p.rq and p.name in readers and hasattr(p.rq, "vtable"):
            p.rq.values = True
            p.rq.codes = return_all or p.name == ir.graph["output"] or p.name in code_readers
    last, output = _last_use(ir), ir.graph["output"]
    chunks = [xq[k:k + CHUNK] for k in range(0, max(len(xq), 1), CHUNK)]
    local = threading.local()

    def work(c):
        if not hasattr(local, "sc"):
            local.sc = _Scratch()
        return _run_chunk(plans, last, output, c, return_all, local.sc)

    try:
        # BLAS on one thread: the chunks are small (multi-threaded BLAS on them costs more
        # than it gains, five times more on a loaded machine) and run on our own threads
        with _blas_one_thread():
            if THREADS > 1 and len(chunks) > 1:
                with ThreadPoolExecutor(THREADS) as pool:
                    parts = list(pool.map(work, chunks))
            else:
                parts = [work(c) for c in chunks]
    except WidthError:
        if len(chunks) == 1:
            raise
        # the same checks on the whole batch at once, so the error names the first
        # offending node and the batch's range, as it always has
        _run_chunk(plans, last, output, xq, return_all, _Scratch())
        raise
    env = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}
    if return_all:
        env["input"] = xq
        return env
    return env[output]


def predict(ir: IR, inputs, quantized: bool = False) -> np.ndarray:
    """Class indices: argmax of the output integers (first on ties)."""
    return run(ir, inputs, quantized=quantized).argmax(axis=1)
