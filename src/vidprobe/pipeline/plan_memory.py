"""The memory model of the planner: peak accelerator memory of a pass, traced on the ``meta`` device.

A model's peak is ``parameters + buffers`` (counted exactly, from the modules) plus the peak of the
**activations**: every tensor the code allocates while it runs, alive until its last reference dies. The
activations are not guessed from a formula; the code itself runs on ``meta`` tensors (shapes and dtypes, no
data, no memory) under :class:`LiveBytes`, a dispatch mode that adds a tensor's storage bytes when an op
creates it and subtracts them when the storage is freed, and keeps the maximum. So views, in-place ops,
tensors saved for backward, hooks that keep a block's output, early stopping and gradient checkpointing all
count as they do on a real device. What a trace on meta cannot see, and how it stands in:

* **attention**: meta runs ``scaled_dot_product_attention`` through its math path (an ``L x L`` score
  matrix); CUDA and CPU run a fused kernel. :class:`MetaCosts` routes meta attention to the fused kernel's
  own meta function (output + float32 log-sum-exp, O(L) extra), which is what the GPU kernels allocate.
* **autocast**: meta has none. With ``autocast=torch.bfloat16``, :class:`MetaCosts` casts the inputs of the
  ops CUDA autocast runs in low precision (linear, matmul, bmm, conv, attention ...) to bf16, and of its
  float32 ops (layer/group norm, softmax) to float32, with the weight casts cached as autocast caches them,
  in the region the code enables autocast for (the probe's trunk; its heads run in float32).
* **data-dependent checks** (``bool(t)``, ``t.item()``: the loss's finiteness check): answered ``True`` / 0.
* not modelled: kernel workspaces (cuDNN, cuBLAS), the caching allocator's rounding and fragmentation
  (typically a few to ~20 %), CUDA context (~0.3-0.5 GiB). ``benchmarks/gpu_check.py`` compares the model
  with ``torch.cuda.max_memory_allocated`` on a GPU; ``tests/test_plan.py`` with the CPU allocator.

:func:`measured_cpu_peak` is the check: the CPU allocator reports every allocation and free to the profiler
(``profile_memory=True``), so the running sum of those events is the exact peak of allocated bytes --
independent of the trace (it sees kernel-internal buffers too), unlike RSS, which counts the allocator's
cached pages and library code, and tracemalloc, which sees no tensor memory.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["LiveBytes", "MetaCosts", "TrainMemory", "cpu_workspace", "module_bytes", "measured_cpu_peak",
           "probe_train_memory"]


class LiveBytes(TorchDispatchMode):
    """Live storage bytes of the tensors created inside the mode on ``device`` (a device type), and their peak.

    A storage counts once, from the op that allocates it (an output sharing an input's storage -- a view, an
    in-place op, a no-op ``.to()`` -- allocates nothing) until it is freed; tensors that existed before the mode
    (parameters, the inputs) are not counted. ``workspace(func, args, out)``: bytes a kernel allocates and frees
    inside the op (see :func:`cpu_workspace`), added to the peak only. ``phase(name)`` records the peak reached
    inside a block in ``phases[name]``; ``peak`` is the overall one.
    """

    def __init__(self, device: str = "meta", workspace: Callable[..., int] | None = None):
        super().__init__()
        self.device = device
        self.workspace = workspace
        self.current = 0
        self.peak = 0
        self.phases: dict[str, int] = {}
        self._live: dict[int, Any] = {}
        self._open: list[str] = []

    def _freed(self, key: int, n: int) -> None:
        self.current -= n
        self._live.pop(key, None)

    def _bump(self, level: int) -> None:
        if level > self.peak:
            self.peak = level
        for name in self._open:
            if level > self.phases[name]:
                self.phases[name] = level

    def _track(self, t: torch.Tensor, inputs: set[int]) -> None:
        if t.device.type != self.device or t.__class__ not in (torch.Tensor, torch.nn.Parameter):
            return
        st = t.untyped_storage()
        key = st._cdata
        if key in self._live or key in inputs:
            return
        n = st.nbytes()
        self.current += n
        self._live[key] = weakref.finalize(st, self._freed, key, n)
        self._bump(self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        if self.workspace is not None:
            ws = self.workspace(func, args, out)
            if ws:
                self._bump(self.current + ws)
        return out

    @contextlib.contextmanager
    def phase(self, name: str):
        """Inside: the peak of live bytes reached is recorded as ``phases[name]`` (starting at the current level)."""
        self.phases[name] = max(self.phases.get(name, 0), self.current)
        self._open.append(name)
        try:
            yield self
        finally:
            self._open.remove(name)


#: ops CUDA autocast runs in its low-precision dtype (torch.amp's CUDA "lower_precision_fp" list, the torch level)
_LOWP = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.bmm, torch.addmm,
         torch.baddbmm, torch.einsum, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
         F.conv_transpose3d, F.scaled_dot_product_attention}
#: ops CUDA autocast runs in float32
_FP32 = {F.layer_norm, F.group_norm, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax}


class MetaCosts(TorchFunctionMode):
    """What a meta trace needs to cost like the device (module docstring): fused attention on meta, the
    data-dependent checks answered, and autocast emulated inside the modules given to :meth:`autocast_in`."""

    def __init__(self):
        super().__init__()
        self.lowp: torch.dtype | None = None

    @contextlib.contextmanager
    def autocast_in(self, modules, dtype: torch.dtype | None):
        """Emulate ``torch.autocast(dtype)`` inside every call of ``modules`` (forward hooks, so a checkpointed
        block recomputed in backward casts as it did in the forward); None: no-op."""
        if dtype is None:
            yield
            return
        depth = [0]

        def pre(_m, _args):
            depth[0] += 1
            self.lowp = dtype

        def post(_m, _args, _out):
            depth[0] -= 1
            if depth[0] == 0:
                self.lowp = None

        handles = [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self.lowp = None

    def _backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` with this mode kept on: the handler runs with the mode popped, and the checkpointed
        blocks recomputed inside backward must cost (and cast) as in the forward; the engine call does not
        re-dispatch to the mode."""
        from torch.autograd.graph import _engine_run_backward

        with self:
            _engine_run_backward((loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True,
                                 accumulate_grad=True)

    @staticmethod
    def _cast(x: Any, dtype: torch.dtype) -> Any:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype == dtype:
            return x
        return x.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.backward, torch.autograd.backward):
            return self._backward(args[0])
        first = args[0] if args and isinstance(args[0], torch.Tensor) else next(
            (a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)), None)
        if first is None or not first.is_meta:
            return func(*args, **kwargs)
        if func in (torch.Tensor.__bool__, torch.Tensor.item):
            return True if func is torch.Tensor.__bool__ else 0.0
        if self.lowp is not None and func in _LOWP:
            args, kwargs = tree_map(lambda x: self._cast(x, self.lowp), (args, kwargs))
        elif self.lowp is not None and func in _FP32:
            args, kwargs = tree_map(lambda x: self._cast(x, torch.float32), (args, kwargs))
        if func is F.scaled_dot_product_attention:
            return _fused_attention(*args, **kwargs)
        return func(*args, **kwargs)


def cpu_workspace(func, args, out) -> int:
    """Bytes the CPU kernels allocate inside an op, for a trace that stands in for a CPU run: a 3-D convolution
    runs ``slow_conv3d``, whose im2col buffer is ``batch x C_in/groups x kT kH kW x T_out H_out W_out`` elements of
    the input dtype (what ``aten::slow_conv3d_forward`` allocates). CUDA's cuDNN workspace is not modelled."""
    aten = torch.ops.aten
    if func in (aten.convolution.default, aten._convolution.default):
        transposed, groups = args[6], args[8]
    elif func in (aten.conv3d.default, aten.conv3d.padding):  # what inference mode dispatches
        transposed, groups = False, (args[6] if len(args) > 6 else 1)
    else:
        return 0
    x, w = args[0], args[1]
    if x.dim() != 5 or transposed:
        return 0
    return x.shape[0] * (x.shape[1] // groups) * w.shape[2] * w.shape[3] * w.shape[4] * out[0, 0].numel() * \
        x.element_size()


def _fused_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The fused (flash) attention kernel's allocations on meta: the output and a float32 log-sum-exp."""
    out, _lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
    return out


def module_bytes(*modules: torch.nn.Module | None) -> tuple[int, int]:
    """(elements, bytes) of the parameters and buffers of ``modules`` (each storage once)."""
    seen: set[int] = set()
    n = b = 0
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            key = id(t)
            if key in seen:
                continue
            seen.add(key)
            n += t.numel()
            b += t.numel() * t.element_size()
    return n, b


def measured_cpu_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), peak)``: the peak of CPU bytes allocated while ``fn`` ran, above what was allocated before,
    from the CPU allocator's own reports to the profiler (module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == cpu]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return out, peak


# ------------------------------------------------------------------------------------------ probe training
@dataclass
class TrainMemory:
    """Peak memory of one probe training step (bytes): the resident state and the step's activations."""

    params: int  # parameters and buffers
    grads: int
    optimizer: int  # AdamW exp_avg + exp_avg_sq (+ step counters)
    activations: int  # peak above the resident state during one step (batch, activations, new grads, temporaries)
    param_count: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, int]:
    """Bytes of (parameters + buffers, gradients, optimizer state) held now."""
    params = module_bytes(model)[1]
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    optim = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0)  # exp_avg, exp_avg_sq (not the scalar steps)
    return params, grads, optim


def train_step(model, opt, batch_fn: Callable[[], tuple[torch.Tensor, dict]], loss_fn, grad_clip: float = 0.0) -> None:
    """One step in :func:`vidprobe.probe.train._optimise`'s order: the batch to the device, forward, loss,
    ``zero_grad(set_to_none)``, backward, gradient norm (clipped or only measured), AdamW step."""
    feats, gt = batch_fn()
    pred = model(feats)
    loss = loss_fn(pred, gt)
    del pred, feats, gt
    opt.zero_grad(set_to_none=True)
    loss.backward()
    del loss
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    opt.step()


def steady_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Give ``model`` and AdamW ``opt`` what they hold after a first step: gradients and exp_avg / exp_avg_sq."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.empty_like(p)
            opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.empty_like(p),
                            "exp_avg_sq": torch.empty_like(p)}


def probe_train_memory(build_model: Callable[[], torch.nn.Module], build_opt: Callable[[torch.nn.Module], Any],
                       batch_fn: Callable[[torch.device], tuple[torch.Tensor, dict]], loss_fn,
                       autocast: torch.dtype | None = None, foreach: bool | None = None, grad_clip: float = 0.0,
                       autocast_modules: Callable[[torch.nn.Module], list] | None = None,
                       workspace: Callable[..., int] | None = None) -> TrainMemory:
    """Peak memory of a steady-state training step, traced on meta (module docstring).

    The model is built on meta with the gradients and AdamW state of a finished step (:func:`steady_state`),
    counted exactly; one step (:func:`train_step`) is traced: the batch, the activations, the new gradients
    while the previous ones are freed by ``zero_grad`` after the forward, the optimizer's temporaries.
    ``autocast``: the low-precision dtype of the modules ``autocast_modules(model)`` (the probe's trunk).
    ``foreach``: the AdamW implementation (CUDA's default, foreach, allocates parameter-sized temporaries);
    ``workspace``: the kernels' own buffers (:func:`cpu_workspace` for a CPU run).
    """
    meta = torch.device("meta")
    with torch.device(meta):
        model = build_model()
    model.train()
    opt = build_opt(model)
    for g in opt.param_groups:
        g["foreach"] = foreach
    steady_state(model, opt)
    params, grads, optim = state_bytes(model, opt)
    costs = MetaCosts()
    trunk = autocast_modules(model) if autocast_modules is not None and autocast is not None else []
    with costs, costs.autocast_in(trunk, autocast), LiveBytes("meta", workspace) as live:
        train_step(model, opt, lambda: batch_fn(meta), loss_fn, grad_clip)
    return TrainMemory(params, grads, optim, live.peak, module_bytes(model)[0])
