"""`f.remote_gen(...)`: a generator function's items, streamed from its container as they are made.

    @cellhop.remote(gpu="H100")
    def tokens(prompt):
        for token in model.generate(prompt):
            yield token

    for token in tokens.remote_gen("Hello"):
        print(token, end="")

The container keeps the generator between requests; the notebook asks for the next item when it
wants it (one apply request an item, on the container's lean channel: a fraction of a millisecond
besides the item's own time), so nothing is made ahead of the consumer. The container is leased to
the generator until it ends: leaving the loop early (break, an exception) or dropping the generator
closes it there too, and its `finally` runs. An async generator works alike, on the container's
loop (awaited_there.py). Its prints go to the cell that asks for each item.
"""

from __future__ import annotations

import inspect
import itertools

from .awaited_there import run_to_end

CLOSE_TIMEOUT = 10.0  # seconds for a generator's finally when the notebook stops early

# -- the container's side ------------------------------------------------------------------------------
_OPEN: dict[int, object] = {}  # generator id -> the generator, while it runs
_IDS = itertools.count(1)


class StartGenerator:
    """What the first request calls: the generator function, whose generator is kept here under an id."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "generator")

    def __call__(self, *args, **kwargs) -> int:
        gen = self.fn(*args, **kwargs)
        if not (inspect.isgenerator(gen) or inspect.isasyncgen(gen)):
            raise TypeError(f"{self.__name__} returned {type(gen).__name__}, not a generator: call it with "
                            f".remote(), or make it yield")
        gen_id = next(_IDS)
        _OPEN[gen_id] = gen
        return gen_id


def next_item(gen_id: int) -> tuple:
    """(True, the next item), or (False, None) once the generator ended; its exception, raised."""
    gen = _OPEN.get(gen_id)
    if gen is None:
        raise RuntimeError("the generator is no longer in its container (it ended, or the container restarted)")
    try:
        if inspect.isasyncgen(gen):
            item = run_to_end(gen.__anext__)
        else:
            item = next(gen)
    except (StopIteration, StopAsyncIteration):
        _OPEN.pop(gen_id, None)
        return (False, None)
    except BaseException:
        _OPEN.pop(gen_id, None)
        raise
    return (True, item)


def close_generator(gen_id: int) -> None:
    gen = _OPEN.pop(gen_id, None)
    if inspect.isasyncgen(gen):
        run_to_end(gen.aclose)
    elif gen is not None:
        gen.close()


# -- the notebook's side -------------------------------------------------------------------------------
def stream(where, fn, args: tuple, kwargs: dict, lease_of, parent_now, raise_remote, policy, input_fn):
    """The items of `fn(*args, **kwargs)` run in a container: `where()` gives (pool, parent, spec),
    `lease_of(pool, spec)` the container's lease, `parent_now()` the cell asking now."""
    pool, parent, spec = where()
    with lease_of(pool, spec) as lease:
        session = lease.session
        (ok, gen_id), = session.apply(StartGenerator(fn), [(args, kwargs)], parent, timeout=spec.timeout,
                                      policy=policy, input_fn=input_fn)
        if not ok:
            raise_remote(gen_id)
        ended = False
        try:
            while True:
                (ok, value), = session.apply(next_item, [((gen_id,), {})], parent_now(), timeout=spec.timeout,
                                             policy=policy, input_fn=input_fn)
                if not ok:
                    ended = True
                    raise_remote(value)
                more, item = value
                if not more:
                    ended = True
                    return
                yield item
        finally:
            if not ended:
                try:
                    session.apply(close_generator, [((gen_id,), {})], parent_now(), timeout=CLOSE_TIMEOUT)
                except Exception:  # noqa: BLE001 - the container went meanwhile: so did the generator
                    pass
