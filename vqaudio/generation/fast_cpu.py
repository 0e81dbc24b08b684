"""Fused CPU generation kernel, compiled with numba.

Why numba: a well-kept package on PyPI (librosa also depends on it), it compiles at first use on the user's
machine for the CPU it runs on (AVX2/AVX-512 where present), and lets the whole per-sample step -
every layer, the output head and the sampling - run as one loop with no Python or PyTorch
dispatch in between. That per-operator overhead, not arithmetic, is what limits the PyTorch loop
(about 10 operators per layer per sample). torch.compile and TorchScript still dispatch per
step; hand-written C would need a compiler on every user's machine.

The matrix products are written as "axpy" loops (for each input i: out[:] += x[i] * W[i, :]) over
weights laid out input-major, unrolled four inputs deep, which LLVM vectorises without
horizontal reductions; within a thread, each weight row is reused across all the thread's
sequences before moving on. A block-sparse or int8 decoder's matrices are read instead as one
flat list of non-zero 16-wide output blocks (`vqaudio.generation.packed`), each one explicit
16-lane vector multiply-add. Sequences
are split between threads once per block, so threads never synchronise inside a block. tanh uses
a rational approximation (float32 rounding level, about 1e-7) that vectorises, where libm's tanhf
does not.
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: without it the engine falls back to the PyTorch path with a warning
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic

    NUMBA_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - exercised only where numba is missing or broken
    numba = None
    NUMBA_ERROR = f"{type(exc).__name__}: {exc}"


def available() -> str | None:
    """None when the fast path can run, else why not."""
    return NUMBA_ERROR


if numba is not None:

    @njit(inline="always", fastmath=True, cache=True)
    def _tanh(x):
        # Rational approximation of tanh on [-7.905, 7.905] (the form Eigen uses for float32).
        x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
        x2 = x * x
        p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
        p = x2 * p + np.float32(-8.60467152213735e-11)
        p = x2 * p + np.float32(5.12229709037114e-08)
        p = x2 * p + np.float32(1.48572235717979e-05)
        p = x2 * p + np.float32(6.37261928875436e-04)
        p = x2 * p + np.float32(4.89352455891786e-03)
        q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
        q = x2 * q + np.float32(2.26843463243900e-03)
        q = x2 * q + np.float32(4.89352518554385e-03)
        return x * p / q

    @njit(inline="always", fastmath=True, cache=True)
    def _accumulate(x, w, out, nb):
        """out[j, :] += x[j, :] @ w for j < nb, four input rows at a time.

        Unrolling over inputs keeps four products in registers per load/store of `out`, which
        is what bounds the plain axpy loop (one store per multiply-add vector)."""
        n_in = w.shape[0]
        n_out = w.shape[1]
        top = n_in - n_in % 4
        for i in range(0, top, 4):
            w0 = w[i]
            w1 = w[i + 1]
            w2 = w[i + 2]
            w3 = w[i + 3]
            for j in range(nb):
                x0 = x[j, i]
                x1 = x[j, i + 1]
                x2 = x[j, i + 2]
                x3 = x[j, i + 3]
                oj = out[j]
                for c in range(n_out):
                    oj[c] += (x0 * w0[c] + x1 * w1[c]) + (x2 * w2[c] + x3 * w3[c])
        for i in range(top, n_in):
            wi = w[i]
            for j in range(nb):
                xi = x[j, i]
                oj = out[j]
                for c in range(n_out):
                    oj[c] += xi * wi[c]

    BLOCK = 16  # the output block width with a vector instruction path

    @intrinsic
    def _axpy16(typingctx, out, offset, scalar, vals, row):
        """out.flat[offset : offset + 16] += scalar * vals[row, :16], as one 16-lane vector
        multiply-add (float32 or int8 values, C-contiguous arrays of 16 columns). Written as
        LLVM vectors because LLVM will not vectorise the scalar loop: it cannot prove that the
        output and the weights do not overlap, and 16 lanes are too few for a runtime check."""
        if out.layout != "C" or vals.layout != "C" or out.dtype != types.float32:
            return None
        if vals.dtype not in (types.float32, types.int8):
            return None

        def codegen(context, builder, signature, args):
            out_type, _, _, vals_type, _ = signature.args
            out_array = context.make_array(out_type)(context, builder, args[0])
            vals_array = context.make_array(vals_type)(context, builder, args[3])
            lanes = ir.VectorType(ir.FloatType(), BLOCK)
            stored = ir.VectorType(context.get_data_type(vals_type.dtype), BLOCK)
            out_ptr = builder.bitcast(builder.gep(out_array.data, [args[1]]), lanes.as_pointer())
            first = builder.mul(args[4], ir.Constant(ir.IntType(64), BLOCK))
            vals_ptr = builder.bitcast(builder.gep(vals_array.data, [first]), stored.as_pointer())
            weights = builder.load(vals_ptr, align=1)
            if isinstance(stored.element, ir.IntType):
                weights = builder.sitofp(weights, lanes)
            one = builder.insert_element(ir.Constant(lanes, ir.Undefined), args[2], ir.Constant(ir.IntType(32), 0))
            broadcast = builder.shuffle_vector(one, ir.Constant(lanes, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), BLOCK), [0] * BLOCK))
            total = builder.fadd(builder.load(out_ptr, align=4), builder.fmul(broadcast, weights, flags=("fast",)), flags=("fast",))
            builder.store(total, out_ptr, align=4)
            return context.get_dummy_value()

        return types.void(out, types.int64, types.float32, vals, types.int64), codegen

    @njit(inline="always", fastmath=True, cache=True)
    def _accumulate_blocks(x, first, last, rows, cols, vals, out, nb):
        """out[j, :] += x[j, :] @ W for j < nb, with W's non-zero blocks first .. last - 1: block
        k holds vals[k] [width] for input rows[k] and outputs cols[k] * width onwards. One flat
        loop over the blocks, so how many blocks an input row has costs no mispredicted branch;
        zero blocks cost nothing; int8 values are widened here."""
        width = vals.shape[1]
        n_out = out.shape[1]
        if nb == 1 and width == BLOCK:  # the loop batch-1 generation spends its time in, kept minimal
            x0 = x[0]
            for k in range(first, last):
                _axpy16(out, np.int64(cols[k]) * BLOCK, np.float32(x0[rows[k]]), vals, k)
            return
        for k in range(first, last):
            i = rows[k]
            base = np.int64(cols[k]) * width
            for j in range(nb):
                xi = np.float32(x[j, i])
                if width == BLOCK:
                    _axpy16(out, j * n_out + base, xi, vals, k)
                else:
                    for c in range(width):
                        out[j, base + c] += xi * np.float32(vals[k, c])

    @njit(inline="always", fastmath=True, cache=True)
    def _layer_matmul(x, dense_w, first, last, rows, cols, vals, scale, out, nb, blocks, init):
        """out[j] = init[j] + x[j] @ W for j < nb: W dense (`dense_w`, input-major) or in blocks
        with per-output scales (blocks first .. last - 1 of `rows`, `cols`, `vals`, and `scale`,
        empty for unscaled float32 values; see `_accumulate_blocks`). `init` has a row per
        sequence, or one row for all."""
        shared = init.shape[0] == 1
        if not blocks or scale.shape[0] == 0:
            for j in range(nb):
                out[j, :] = init[0 if shared else j]
            if blocks:
                _accumulate_blocks(x, first, last, rows, cols, vals, out, nb)
            else:
                _accumulate(x, dense_w, out, nb)
            return
        for j in range(nb):
            out[j, :] = 0
        _accumulate_blocks(x, first, last, rows, cols, vals, out, nb)
        for j in range(nb):
            for c in range(out.shape[1]):
                out[j, c] = init[0 if shared else j, c] + out[j, c] * scale[c]

    @njit(cache=True)
    def _sample_mixture(logits, noise, step, b_lo, nb, mixtures, inv_temperature, greedy, out, prev):
        """One 16-bit sample class per sequence from its mixture of logistics (no fastmath: the
        draw must round to the class the PyTorch path's float64 arithmetic rounds to)."""
        levels = 65536
        inv_t = np.float64(inv_temperature)
        for j in range(nb):
            b = b_lo + j
            best = 0
            best_value = -np.inf
            for c in range(mixtures):
                v = np.float64(logits[j, c])
                if not greedy:
                    v = v * inv_t + np.float64(noise[step, b, c])
                if v > best_value:
                    best_value = v
                    best = c
            x = np.float64(logits[j, mixtures + best])
            if not greedy:
                log_scale = max(np.float64(logits[j, 2 * mixtures + best]), -7.0)
                u = np.exp(-np.exp(-np.float64(noise[step, b, mixtures])))
                u = min(max(u, 1e-5), 1.0 - 1e-5)
                x = x + np.exp(log_scale) / inv_t * (np.log(u) - np.log1p(-u))
            x = min(max(x, -1.0), 1.0)
            chosen = np.int64(np.rint((x + 1.0) * ((levels - 1) / 2.0)))
            out[b, step] = chosen
            prev[b] = chosen

    @njit(fastmath=True, cache=True, parallel=True)
    def generate_block(
        t0, n_steps, prev,
        embed, conv_w, out_w, out_b, head_w1, head_b1, head_w2, head_b2,
        frame_bias, frame0, hop, dilations, offsets, spans, kernel_size, history,
        noise, inv_temperature, greedy, out, logits_out, record, n_chunks, mixtures,
        blocks, conv_start, conv_rows, conv_cols, conv_vals, conv_scale, out_start, out_rows, out_cols, out_vals, out_scale,
    ):  # fmt: skip
        """Generate `n_steps` positions starting at absolute position `t0` for every sequence.

        prev [B] int64: last input class per sequence, updated in place.
        frame_bias [B, F, L*gate]: conditioning + conv bias for frames frame0 .. frame0+F-1.
        history [B, total_span, R]: per-layer ring buffers, `offsets[l]` where layer l starts.
        noise [n_steps, B, K]: Gumbel noise (unused when greedy).
        out [B, n_steps] int64; logits_out [B, n_steps, K] when record.
        mixtures > 0: the K = 3 x mixtures outputs are a mixture of logistics over 16-bit samples,
        sampled as `vqaudio.models.mixture.sample` does (in float64), with noise [n_steps, B, mixtures + 1].
        blocks: the layers' matrices are read from `conv_*` and `out_*` (`vqaudio.generation.packed`:
        where each layer's blocks start [layers + 1], every block's input row and output column,
        float32 or int8 values [blocks, width], per-output scales [layers, outputs], or
        [layers, 0] for float32) instead of the dense `conv_w` and `out_w`.
        """
        batch = prev.shape[0]
        n_layers = dilations.shape[0]
        gate = frame_bias.shape[2] // n_layers
        half = gate // 2
        residual = embed.shape[1]
        skip_ch = out_b.shape[1] - residual
        classes = head_w2.shape[1]
        taps = kernel_size * residual
        scale = np.float32(np.sqrt(0.5))
        for chunk in prange(n_chunks):
            b_lo = chunk * batch // n_chunks
            b_hi = (chunk + 1) * batch // n_chunks
            nb = b_hi - b_lo
            x = np.empty((nb, taps), dtype=np.float32)
            a = np.empty((nb, gate), dtype=np.float32)
            z = np.empty((nb, half), dtype=np.float32)
            o = np.empty((nb, residual + skip_ch), dtype=np.float32)
            h = np.empty((nb, residual), dtype=np.float32)
            skip = np.empty((nb, skip_ch), dtype=np.float32)
            y = np.empty((nb, skip_ch), dtype=np.float32)
            logits = np.empty((nb, classes), dtype=np.float32)
            for step in range(n_steps):
                t = t0 + step
                f = t // hop - frame0
                for j in range(nb):
                    b = b_lo + j
                    h[j, :] = embed[prev[b]]
                    skip[j, :] = 0
                for layer in range(n_layers):
                    d = dilations[layer]
                    span = spans[layer]
                    off = offsets[layer]
                    for j in range(nb):
                        b = b_lo + j
                        for k in range(kernel_size - 1):
                            slot = (t - (kernel_size - 1 - k) * d) % span
                            x[j, k * residual : (k + 1) * residual] = history[b, off + slot]
                        x[j, (kernel_size - 1) * residual :] = h[j]
                        history[b, off + t % span] = h[j]
                    conv_dense = conv_w[layer] if not blocks else conv_w[0]
                    out_dense = out_w[layer] if not blocks else out_w[0]
                    frame_rows = frame_bias[b_lo:b_hi, f, layer * gate : (layer + 1) * gate]
                    _layer_matmul(
                        x, conv_dense, conv_start[layer], conv_start[layer + 1], conv_rows, conv_cols, conv_vals,
                        conv_scale[layer], a, nb, blocks, frame_rows,
                    )  # fmt: skip
                    for j in range(nb):
                        for c in range(half):
                            sig = np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * a[j, half + c])
                            z[j, c] = _tanh(a[j, c]) * sig
                    _layer_matmul(
                        z, out_dense, out_start[layer], out_start[layer + 1], out_rows, out_cols, out_vals,
                        out_scale[layer], o, nb, blocks, out_b[layer : layer + 1],
                    )  # fmt: skip
                    for j in range(nb):
                        for c in range(residual):
                            h[j, c] = (h[j, c] + o[j, c]) * scale
                        for c in range(skip_ch):
                            skip[j, c] += o[j, residual + c]
                # output head: relu -> 1x1 -> relu -> 1x1
                for j in range(nb):
                    for c in range(skip_ch):
                        skip[j, c] = max(skip[j, c], np.float32(0.0))
                    y[j, :] = head_b1
                _accumulate(skip, head_w1, y, nb)
                for j in range(nb):
                    for c in range(skip_ch):
                        y[j, c] = max(y[j, c], np.float32(0.0))
                    logits[j, :] = head_b2
                _accumulate(y, head_w2, logits, nb)
                if mixtures > 0:
                    _sample_mixture(logits, noise, step, b_lo, nb, mixtures, inv_temperature, greedy, out, prev)
                    if record:
                        for j in range(nb):
                            logits_out[b_lo + j, step, :] = logits[j]
                    continue
                for j in range(nb):
                    b = b_lo + j
                    best = 0
                    best_value = np.float32(-np.inf)
                    for c in range(classes):
                        v = logits[j, c] if greedy else logits[j, c] * inv_temperature + noise[step, b, c]
                        if v > best_value:
                            best_value = v
                            best = c
                    out[b, step] = best
                    prev[b] = best
                    if record:
                        logits_out[b, step, :] = logits[j]
