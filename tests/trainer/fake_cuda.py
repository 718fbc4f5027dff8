"""A CPU process that believes it has CUDA GPUs and an NCCL process group.

Computation stays on the CPU, but every tensor carries the device it would have on a
CUDA machine, following PyTorch's rules: a factory call without `device` makes a CPU
tensor, `.to(device)`/`.cuda()`/`.cpu()` move it, and an op's result lives where its
tensor inputs live. The process group is gloo underneath; its collectives refuse, as
NCCL does, any tensor that would not be on this rank's GPU. `torch.cuda` answers as a
machine with `gpus` GPUs would, and the calls that matter (set_device, the backend and
device asked of init_process_group, each collective, each copy to the GPU and whether
its source was pinned by the DataLoader and the copy non-blocking) are recorded in
`events`.

Tensors whose place cannot be known (made by C++ code, such as autograd's gradients,
or unpickled from loader workers) are let through: the check is aimed at what our own
code makes, which is where a CPU tensor slips in.
"""

from __future__ import annotations

import traceback

import torch
import torch.distributed as dist
import torch.utils.data._utils.pin_memory as loader_pinning
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

TAG, PINNED = "_fake_cuda_device", "_fake_cuda_pinned"
CPU = torch.device("cpu")
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
               "scatter", "gather", "send", "recv", "isend", "irecv", "barrier",
               "all_gather_object", "broadcast_object_list", "gather_object",
               "scatter_object_list")
OBJECT_COLLECTIVES = {"all_gather_object", "broadcast_object_list", "gather_object",
                      "scatter_object_list"}


def where(t: torch.Tensor) -> torch.device | None:
    return getattr(t, TAG, None)


class FakeCuda(TorchFunctionMode):
    def __init__(self, gpus: int, local_rank: int):
        super().__init__()
        self.gpus, self.local_rank = gpus, local_rank
        self.current: int | None = None
        self.events: list[dict] = []  # set_device, init_process_group, collectives
        self._saved: list[tuple[object, str, object]] = []

    # --- the simulated torch.cuda and process group -------------------------------
    def __enter__(self):
        cuda = torch.cuda
        self._patch(cuda, "is_available", lambda: True)
        self._patch(cuda, "device_count", lambda: self.gpus)
        self._patch(cuda, "set_device", self._set_device)
        self._patch(cuda, "current_device", lambda: self.current or 0)
        self._patch(cuda, "is_bf16_supported", lambda *a, **k: True)
        # gradient caching saves and restores the GPU's random state with the CPU's
        self._patch(cuda, "get_rng_state", lambda device=None: torch.zeros(16, dtype=torch.uint8))
        self._patch(cuda, "set_rng_state", lambda state, device=None: None)
        self._patch(cuda, "get_rng_state_all", lambda: [])
        self._patch(cuda, "set_rng_state_all", lambda states: None)
        # the DataLoader's pinning thread: mark what it would pin
        self._patch(torch.accelerator, "current_device_index", lambda: self.current or 0)
        self._patch(torch.accelerator, "set_device_index", lambda index: None)
        self._patch(loader_pinning, "pin_memory", _pin)
        # the optimizer asks whether a CUDA graph is being captured: none is
        self._patch(torch.accelerator, "current_stream", lambda *a: _NotCapturing())
        self._patch(dist, "init_process_group", self._init_process_group)
        for name in COLLECTIVES:
            self._patch(dist, name, self._collective(name, getattr(dist, name)))
        return super().__enter__()

    def __exit__(self, *exc):
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        return super().__exit__(*exc)

    def _patch(self, owner, name, value) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def _set_device(self, device) -> None:
        index = device.index if isinstance(device, torch.device) else int(device)
        if not 0 <= index < self.gpus:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        self.current = index
        self.events.append({"event": "set_device", "device": index})

    def _init_process_group(self, backend=None, *args, device_id=None, **kwargs):
        self.events.append({"event": "init_process_group", "backend": backend,
                            "device_id": str(device_id) if device_id is not None else None,
                            "current_device": self.current})
        self.backend = backend
        return self._saved_value(dist, "init_process_group")("gloo", *args, **kwargs)

    def _saved_value(self, owner, name):
        return next(v for o, n, v in self._saved if o is owner and n == name)

    def _collective(self, name, real):
        def call(*args, **kwargs):
            here = torch.device("cuda", self.local_rank)
            tensors = [t for t in tree_flatten((args, kwargs))[0]
                       if isinstance(t, torch.Tensor)]
            devices = [where(t) for t in tensors]
            caller = _caller()
            self.events.append({"event": "collective", "name": name, "caller": caller,
                                "devices": [str(d) for d in devices]})
            if getattr(self, "backend", None) == "nccl":
                wrong = [d for d in devices if d is not None and d != here]
                if wrong:
                    raise RuntimeError(
                        f"No backend type associated with device type {wrong[0].type} "
                        f"(fake NCCL: dist.{name} from {caller} was handed a tensor on "
                        f"{wrong[0]}; this rank's GPU is {here})")
                if name in OBJECT_COLLECTIVES and self.current != self.local_rank:
                    raise RuntimeError(f"fake NCCL: dist.{name} from {caller} would move its "
                                       f"pickles to cuda:{self.current}, not this rank's GPU "
                                       f"{here}: torch.cuda.set_device was not called")
            return real(*args, **kwargs)
        return call

    # --- where each tensor would live ---------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if name == "__get__" and owner in (torch._C.TensorBase.device,
                                           torch._C.TensorBase.is_cuda):
            device = where(args[0]) or args[0].device
            return device if owner is torch._C.TensorBase.device else device.type == "cuda"
        if name == "get_device" and isinstance(args[0], torch.Tensor):
            device = where(args[0]) or CPU
            return device.index if device.type == "cuda" else -1
        if name == "__set__" and owner is torch._C.TensorBase.data:
            out = func(*args, **kwargs)
            _tag(args[0], where(args[1]))
            return out
        target = None
        if name == "to" and isinstance(args[0], torch.Tensor):
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                target = where(args[1]) or args[1].device
                args = (args[0], args[1].dtype, *args[2:])
            else:
                device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
                if device is not None:
                    target = self._normal(device)
                    if target.type == "cuda" and where(args[0]) != target:
                        self.events.append({"event": "copy_to_gpu", "caller": _caller(),
                                            "shape": list(args[0].shape),
                                            "pinned": getattr(args[0], PINNED, False),
                                            "non_blocking": non_blocking})
                    kwargs = {"dtype": dtype or args[0].dtype, "non_blocking": non_blocking,
                              "copy": kwargs.get("copy", False)}
                    args = args[:1]
        elif name == "cuda" and isinstance(args[0], torch.Tensor):
            target = self._normal(torch.device("cuda", args[1] if len(args) > 1 else
                                               kwargs.get("device", self.current or 0)))
            args, kwargs = args[:1], {}
            func = torch.Tensor.clone
        elif name == "cpu" and isinstance(args[0], torch.Tensor):
            target = CPU
        elif "device" in kwargs and kwargs["device"] is not None:
            target = self._normal(torch.device(kwargs["device"]))
            kwargs["device"] = CPU
        out = func(*args, **kwargs)
        if target is None:
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            known = [d for d in map(where, inputs) if d is not None]
            # no tensor inputs: a factory call, which without `device` makes a CPU tensor
            target = next((d for d in known if d.type == "cuda"), known[0] if known else
                          None if inputs else CPU)
        if target is None:
            return out
        sources = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}

        def tag(t):
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) in sources and where(t) != target:
                # the op returned its input (a move that was a no-op on the CPU): tag an
                # alias, so the original keeps its own place
                t = t.view_as(t)
            _tag(t, target)
            return t
        return tree_map(tag, out)

    def _normal(self, device: torch.device) -> torch.device:
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.current or 0)
        return device


class _NotCapturing:
    def is_capturing(self) -> bool:
        return False


def _pin(data, device=None):
    """The DataLoader's pin_memory, without CUDA: marks tensors instead of pinning them."""
    if isinstance(data, torch.Tensor):
        setattr(data, PINNED, True)
    elif isinstance(data, dict):
        for value in data.values():
            _pin(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            _pin(value)
    return data


def _tag(t: torch.Tensor, device: torch.device | None) -> None:
    if device is not None:
        setattr(t, TAG, device)


def _caller() -> str:
    """The innermost frame outside torch and this file: who handed over the tensor."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("fake_cuda.py"):
            path = "/".join(frame.filename.rsplit("/", 2)[-2:])
            return f"{path}:{frame.lineno} in {frame.name}"
    return "?"
