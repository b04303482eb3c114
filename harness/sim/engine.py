"""Discrete-step model of vLLM's continuous batching, pure and steppable in virtual time.

One scheduler loop: each step every running sequence advances together, a decoding sequence
by one token, a prefilling one by a chunk of its prompt, within a per-step token budget
(``max_num_batched_tokens``, chunked prefill) and at most ``max_num_seqs`` running sequences.
Running sequences are served first; waiting ones are admitted, in arrival order, while the
budget and the KV cache allow (vLLM V1's scheduler).

KV cache: ``kv_cache_tokens / block_size`` blocks. A sequence holds ceil(computed tokens /
block_size) blocks. When a running sequence needs a block and none is free, the most recently
admitted running sequence is preempted (recompute: its blocks are freed and it goes back to the
front of the queue, to prefill its prompt and the tokens it had generated again). A sequence
that could not fit even alone in the whole cache (prompt + output - 1 tokens of KV, the last
token is sampled but never cached) is refused by :meth:`Engine.add` instead of being queued
forever (the server answers such requests 400 before they reach the engine).

Prefix cache: full prompt blocks, keyed by chained hashes of their tokens, stay cached after
their sequence ends (evicted least recently freed first). A new sequence whose leading blocks
are cached skips computing them: they are its ``cached_tokens`` and cut its prefill time.

Step duration (s) = (step_base_ms + decode_per_seq_ms * decoding seqs + prefill_per_token_ms *
prefill tokens + attn_per_ctx_token_ms * context tokens) / 1000 * (1 + step_jitter * N(0,1)).
The token a step samples is emitted at the step's end: a prefill step that completes a prompt
emits the first token (TTFT), each decode step one more (ITL = that step's duration).

:func:`simulate` runs the model over a list of arrivals in virtual time (tests, capacity
estimates); :class:`harness.sim.server.EngineDriver` runs it against the wall clock.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .params import VllmParams

WAITING, RUNNING, FINISHED, ABORTED = "waiting", "running", "finished", "aborted"


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine."""

    seq_id: int
    prompt_len: int
    max_output: int  # tokens it will generate (decided up front: forced or natural EOS)
    block_hashes: list[int] = field(default_factory=list)  # of full prompt blocks, chained
    arrival: float = 0.0  # when it reached the engine
    num_output: int = 0
    num_computed: int = 0  # tokens whose KV is computed (prompt and output)
    num_blocks: int = 0
    cached_hashes: list[int] = field(default_factory=list)  # its blocks held in the prefix cache
    cached_tokens: int | None = None  # prefix-cache hit at first admission
    first_token_time: float | None = None
    finish_time: float | None = None
    preemptions: int = 0
    status: str = WAITING
    user: Any = None  # the driver's payload (the HTTP stream)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output


@dataclass(slots=True)
class Step:
    """What one engine step computes: (sequence, tokens) pairs and how long it takes."""

    start: float
    duration: float
    scheduled: list[tuple[Sequence, int]]


class Engine:
    """The continuous-batching model. Call :meth:`add`, then alternate :meth:`schedule`
    (plan a step starting at ``now``) and :meth:`finish_step` (at the step's end)."""

    def __init__(self, params: VllmParams, seed: int = 0) -> None:
        self.params = params
        self.rng = random.Random(seed)
        self.block_size = params.block_size
        self.total_blocks = max(1, params.kv_cache_tokens // params.block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.cache: dict[int, int] = {}  # block hash -> reference count
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached blocks with refcount 0
        self.used_blocks = 0  # blocks held by sequences (a shared cached block counts once)
        # Counters (Prometheus).
        self.num_preemptions = 0
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found
        self.steps = 0
        self.busy_time = 0.0

    # -- queue --------------------------------------------------------------------------
    def fits(self, prompt_len: int, max_output: int) -> bool:
        """Whether a sequence of this shape fits in the whole KV cache on its own."""
        kv_tokens = prompt_len + max(max_output, 1) - 1
        return -(-kv_tokens // self.block_size) <= self.total_blocks

    def add(self, seq: Sequence) -> bool:
        """Queue ``seq`` (admitted at a following step); ``False`` (and ``seq`` aborted) when
        it could never fit in the KV cache, which would block the queue forever."""
        if not self.fits(seq.prompt_len, seq.max_output):
            seq.status = ABORTED
            return False
        seq.status = WAITING
        self.waiting.append(seq)
        return True

    def abort(self, seq: Sequence) -> None:
        """Drop ``seq`` (client gone) and free its KV blocks; a no-op once finished."""
        if seq.status == RUNNING:
            self.running.remove(seq)
            self._free(seq)
        elif seq.status == WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        if seq.status in (RUNNING, WAITING):
            seq.status = ABORTED

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_usage(self) -> float:
        """Share of KV blocks held by sequences (vllm:kv_cache_usage_perc)."""
        return self.used_blocks / self.total_blocks

    # -- KV blocks ----------------------------------------------------------------------
    def _allocate(self, seq: Sequence, need: int) -> bool:
        if need > self.total_blocks - self.used_blocks:
            return False
        physical_free = self.total_blocks - self.used_blocks - len(self.evictable)
        while physical_free < need:
            h, _ = self.evictable.popitem(last=False)
            del self.cache[h]
            physical_free += 1
        self.used_blocks += need
        seq.num_blocks += need
        return True

    def _free(self, seq: Sequence) -> None:
        for h in seq.cached_hashes:
            ref = self.cache[h] - 1
            self.cache[h] = ref
            if ref == 0:
                self.used_blocks -= 1
                self.evictable[h] = None
        self.used_blocks -= seq.num_blocks - len(seq.cached_hashes)
        seq.num_blocks = 0
        seq.cached_hashes = []

    def _prefix_hit(self, seq: Sequence) -> list[int]:
        """Leading block hashes of ``seq`` found in the cache (at least one token left)."""
        if not self.params.enable_prefix_caching:
            return []
        limit = (seq.num_tokens - 1) // self.block_size
        hits = []
        for h in seq.block_hashes[:limit]:
            if h not in self.cache:
                break
            hits.append(h)
        return hits

    def _register_blocks(self, seq: Sequence) -> None:
        """Put ``seq``'s newly computed full prompt blocks into the prefix cache."""
        if not self.params.enable_prefix_caching:
            return
        full = min(seq.num_computed, seq.prompt_len) // self.block_size
        for j in range(len(seq.cached_hashes), min(full, len(seq.block_hashes))):
            h = seq.block_hashes[j]
            if h in self.cache:  # computed concurrently by another sequence: keep ours private
                break
            self.cache[h] = 1
            seq.cached_hashes.append(h)

    def _preempt(self, seq: Sequence) -> None:
        self._free(seq)
        seq.num_computed = 0
        seq.status = WAITING
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    # -- steps --------------------------------------------------------------------------
    def schedule(self, now: float) -> Step | None:
        """Plan the step starting at ``now``; ``None`` when there is nothing to run."""
        p = self.params
        bs = self.block_size
        budget = p.max_num_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []
        n_decode = n_prefill = ctx = 0
        preempted = False
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            computed = seq.num_computed
            n = seq.prompt_len + seq.num_output - computed
            if n > budget:
                n = budget
            need = (computed + n + bs - 1) // bs - seq.num_blocks
            if need > 0 and not self._allocate(seq, need):
                while True:  # preempt from the back until ``seq`` fits (or is preempted)
                    victim = running.pop()
                    self._preempt(victim)
                    preempted = True
                    if victim is seq or self._allocate(seq, need):
                        break
                if victim is seq:
                    break
            scheduled.append((seq, n))
            budget -= n
            if n == 1 and computed >= seq.prompt_len:
                n_decode += 1
            else:
                n_prefill += n
            ctx += computed + n
            i += 1
        if not preempted:
            waiting = self.waiting
            while waiting and len(running) < p.max_num_seqs and budget > 0:
                seq = waiting[0]
                hits = self._prefix_hit(seq)  # a waiting sequence holds no computed tokens
                hit_tokens = len(hits) * bs
                n = min(seq.num_tokens - hit_tokens, budget)
                evictable_hits = sum(1 for h in hits if self.cache[h] == 0)
                need = (hit_tokens + n + bs - 1) // bs - len(hits)
                if need > self.total_blocks - self.used_blocks - evictable_hits:
                    break
                waiting.popleft()
                for h in hits:
                    if self.cache[h] == 0:
                        del self.evictable[h]
                        self.used_blocks += 1
                    self.cache[h] += 1
                seq.cached_hashes = hits
                seq.num_blocks = len(hits)
                seq.num_computed = hit_tokens
                if seq.cached_tokens is None:
                    seq.cached_tokens = hit_tokens
                    self.prefix_queries += seq.prompt_len
                    self.prefix_hits += hit_tokens
                self._allocate(seq, need)
                seq.status = RUNNING
                running.append(seq)
                scheduled.append((seq, n))
                budget -= n
                n_prefill += n
                ctx += hit_tokens + n
        if not scheduled:
            return None
        ms = (
            p.step_base_ms
            + p.decode_per_seq_ms * n_decode
            + p.prefill_per_token_ms * n_prefill
            + p.attn_per_ctx_token_ms * ctx
        )
        if p.step_jitter > 0:
            ms *= max(0.5, 1.0 + p.step_jitter * self.rng.gauss(0.0, 1.0))
        return Step(now, ms / 1000.0, scheduled)

    def finish_step(self, step: Step, end: float) -> tuple[list[Sequence], list[Sequence]]:
        """Complete ``step`` at time ``end``: (sequences that sampled a token, of which
        finished). Finished sequences leave the engine and free their blocks."""
        self.steps += 1
        self.busy_time += end - step.start
        sampled: list[Sequence] = []
        finished: list[Sequence] = []
        for seq, n in step.scheduled:
            if seq.status != RUNNING:  # aborted or preempted meanwhile
                continue
            computed = seq.num_computed = seq.num_computed + n
            if computed < seq.prompt_len + seq.num_output:  # prefill/recompute not done yet
                self._register_blocks(seq)
                continue
            if len(seq.cached_hashes) < len(seq.block_hashes):
                self._register_blocks(seq)
            seq.num_output += 1
            if seq.first_token_time is None:
                seq.first_token_time = end
            sampled.append(seq)
            if seq.num_output >= seq.max_output:
                finished.append(seq)
        if finished:
            for seq in finished:
                seq.status = FINISHED
                seq.finish_time = end
                self._free(seq)
            self.running = [s for s in self.running if s.status == RUNNING]
        return sampled, finished


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request for :func:`simulate`: when it arrives and its shape."""

    t: float
    prompt_len: int
    output_len: int
    prefix: str = ""  # requests sharing a prefix id share their first prefix_len tokens
    prefix_len: int = 0


@dataclass(frozen=True, slots=True)
class SeqResult:
    arrival: float
    ttft: float  # NaN when no token came
    e2e: float  # NaN when it did not finish
    output_len: int
    cached_tokens: int
    preemptions: int
    finished: bool  # False: refused (could never fit) or still running when the run ended


@dataclass
class SimulationResult:
    results: list[SeqResult]
    duration: float  # virtual seconds until the last request finished
    max_running: int
    max_waiting: int
    max_kv_usage: float
    preemptions: int
    output_tokens: int

    @property
    def unfinished(self) -> int:
        """Requests that did not finish (refused by the engine, or cut off)."""
        return sum(not r.finished for r in self.results)

    @property
    def throughput(self) -> float:
        """Output tokens per virtual second."""
        return self.output_tokens / self.duration if self.duration > 0 else 0.0


def prompt_tokens_for(a: Arrival, index: int) -> list[str]:
    """A token list for ``a``, arrival number ``index``: its shared prefix, then tokens
    unique to the request (keyed by the index: simultaneous arrivals differ too)."""
    toks = [f"p{a.prefix}:{i}" for i in range(min(a.prefix_len, a.prompt_len))]
    toks += [f"u{index}:{i}" for i in range(a.prompt_len - len(toks))]
    return toks


def simulate(params: VllmParams, arrivals: Iterable[Arrival], seed: int = 0) -> SimulationResult:
    """Run the engine over ``arrivals`` in virtual time. Each request reaches the engine
    ``api_overhead_ms`` after it arrives; TTFT and E2E are measured from the arrival."""
    from .tokens import block_hashes

    eng = Engine(params, seed)
    overhead = params.api_overhead_ms / 1000.0
    pending = deque(sorted(arrivals, key=lambda a: a.t))
    seqs: list[tuple[Arrival, Sequence]] = []
    t = 0.0
    max_running = max_waiting = 0
    max_kv = 0.0
    out_tokens = 0
    while pending or eng.has_work:
        while pending and pending[0].t + overhead <= t:
            a = pending.popleft()
            k = len(seqs)
            toks = prompt_tokens_for(a, k) if a.prefix_len else []
            hashes = block_hashes(toks, params.block_size) if toks else []
            seq = Sequence(k, a.prompt_len, a.output_len, hashes, arrival=a.t)
            seqs.append((a, seq))
            eng.add(seq)  # refused ones stay unfinished
        step = eng.schedule(t)
        if step is None:
            if not pending:
                break
            t = pending[0].t + overhead
            continue
        max_running = max(max_running, len(eng.running))
        max_waiting = max(max_waiting, len(eng.waiting))
        max_kv = max(max_kv, eng.kv_usage)
        t += step.duration
        sampled, _ = eng.finish_step(step, t)
        out_tokens += len(sampled)
    results = [
        SeqResult(
            a.t,
            math.nan if s.first_token_time is None else s.first_token_time - a.t,
            math.nan if s.finish_time is None else s.finish_time - a.t,
            s.num_output,
            s.cached_tokens or 0,
            s.preemptions,
            s.status == FINISHED,
        )
        for a, s in seqs
    ]
    return SimulationResult(
        results, t, max_running, max_waiting, max_kv, eng.num_preemptions, out_tokens
    )
