"""FAKE FAULT INJECTOR for tests and `bench/soak.py`: adapters that misbehave on purpose. Never use in production.

Workers find these families through `VLM_ADAPTER_MODULES`, e.g.
`faulty_oom=tests.fakes.faulty,faulty_hang=tests.fakes.faulty,throttled=tests.fakes.faulty` (see `ENV`;
the server's catalogue check needs the same variable). Each loads a real checkpoint with the generic
adapter (point `repo` at a tiny qwen2_vl checkpoint) and runs the real transformers `generate`:

- `faulty_oom` streams a few real pieces, then raises
  `torch.OutOfMemoryError("CUDA out of memory (injected by the test)")`, as a model that runs out of
  GPU memory mid-answer does;
- `faulty_hang` streams a few real pieces, then blocks forever and ignores the cancel event, as a
  wedged CUDA kernel or a deadlocked remote-code model does; only ending the process stops it;
- `throttled` is a healthy model slowed to about 40 tokens/s (it sleeps before every forward pass),
  so that a long answer lasts long enough, on any machine, to kill or abandon it mid-answer. It
  honours cancellation like any model.

A prompt containing `NO_FAULT` ("[no fault]") makes the faulty families generate normally, so a test
can check that a replaced worker answers again.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.adapters import register
from app.adapters.generic import GenericAdapter
from app.core.generation import Call, Finish, Piece

if TYPE_CHECKING:
    from app.core.catalog import ModelSpec

ENV = {"VLM_ADAPTER_MODULES": "faulty_oom=tests.fakes.faulty,faulty_hang=tests.fakes.faulty,"
                              "throttled=tests.fakes.faulty"}
NO_FAULT = "[no fault]"
STEP_S = 0.025  # the throttled family's pause before each forward pass (one per generated token)
REAL_PIECES = 3  # pieces streamed before the fault
OOM_MESSAGE = "CUDA out of memory (injected by the test)"


def _real_pieces(adapter: GenericAdapter, call: Call) -> Iterator[str]:
    """A few genuine text pieces from the real model, then stop its generation."""
    inner = threading.Event()
    produced = 0
    generation = GenericAdapter._generate(adapter, call, inner)
    try:
        for piece in generation:
            if isinstance(piece, Finish):
                break
            yield piece
            produced += 1
            if produced >= REAL_PIECES:
                break
    finally:
        inner.set()
        generation.close()


@register("faulty_oom")
class OutOfMemoryAdapter(GenericAdapter):
    """Streams a few real pieces, then raises torch's out-of-memory error (a fake fault)."""

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        if NO_FAULT in call.prompt:
            yield from super()._generate(call, cancel)
            return
        import torch

        yield from _real_pieces(self, call)
        raise torch.OutOfMemoryError(OOM_MESSAGE)


@register("faulty_hang")
class HangingAdapter(GenericAdapter):
    """Streams a few real pieces, then blocks forever, deaf to cancellation (a fake fault)."""

    def _generate(self, call: Call, cancel: threading.Event) -> Iterator[Piece]:
        if NO_FAULT in call.prompt:
            yield from super()._generate(call, cancel)
            return
        yield from _real_pieces(self, call)
        while True:  # ignores `cancel` on purpose: only the process's end stops it
            time.sleep(0.5)


@register("throttled")
class ThrottledAdapter(GenericAdapter):
    """A real model that pauses `STEP_S` before every forward pass: slow, healthy, cancellable (a fake)."""

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> ThrottledAdapter:
        adapter = super().load(spec, device)
        forward = adapter.model.forward

        @functools.wraps(forward)  # `generate` checks its arguments against forward's signature
        def slowed(*args: Any, **kwargs: Any) -> Any:
            time.sleep(STEP_S)
            return forward(*args, **kwargs)

        adapter.model.forward = slowed  # nn.Module.__call__ looks `forward` up on the instance first
        return adapter  # type: ignore[return-value]
