"""A mock GenAI provider for tests/tests/genai.rs (tests/src/genai.rs runs it).

    python3 genai_mock.py RECORD PROVIDER...

Listens on one free 127.0.0.1 port per PROVIDER name (each port answers
every API; the names let the harness map ports to providers), prints
`PORTS name=port ...`, and appends one JSON line per finished call to
RECORD: that record is the tests' oracle.

APIs: OpenAI `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/responses` (JSON, and SSE with or without
`stream_options.include_usage`); Anthropic `/v1/messages` (JSON and SSE,
with cache_read/cache_creation usage); Ollama `/api/chat`,
`/api/generate` (NDJSON streams, JSON with `"stream": false`) and
`/api/embed`.

Deterministic numbers:
- input tokens P = 8 + (characters of the prompt texts) // 4; OpenAI
  reports cached_tokens = P // 4 (inside prompt_tokens); Anthropic splits P
  into input_tokens + cache_read (P // 4) + cache_creation (P // 8);
- output tokens O = `x-mock-output-tokens`, else the request's max_tokens
  (max_completion_tokens, max_output_tokens, Ollama options.num_predict),
  else 16; embeddings have none;
- the response model: `x-mock-response-model`, else the request's model +
  `x-mock-model-suffix` (default "-2024-08-06" for OpenAI APIs, "" else).

Request headers: `x-mock-delay-ms` (sleep before the first content event,
or before a JSON answer), `x-mock-gzip: 1` (gzip the JSON body when the
client accepts it), `x-mock-tiny: 1` (no padding: bodies of a few hundred
bytes), `x-mock-vendor-headers: 1` (the response headers the real vendor
of the API sends: OpenAI's `openai-*`, Anthropic's `anthropic-*`; Ollama
sends none). Otherwise completions are padded so that usage sits beyond the
first KiB. Every completion text holds COMPLETION_MARKER (privacy tests).

Record line: {"path", "api", "provider", "server_port", "peer_port",
"model", "response_model", "stream", "usage": {"input", "output",
"cached_input"} or null, "gzip", "delay_ms", "status"}; usage input is
normalised as the OTel conventions count it (cached tokens included).
"""

import asyncio
import gzip
import json
import sys
import time

from aiohttp import web

COMPLETION_MARKER = "GSMOCKCOMPLETION7f3a"
PAD_WORDS = 40  # words of filler after the marker: > 1 KiB of JSON
DEFAULT_OUTPUT = 16

RECORD = None


def text_of(value):
    """All the text in a prompt structure (strings, lists, content blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(text_of(v) for v in value)
    if isinstance(value, dict):
        if "text" in value:
            return text_of(value["text"])
        if "content" in value:
            return text_of(value["content"])
    return ""


def prompt_text(api, body):
    if api in ("openai_chat", "anthropic", "ollama_chat"):
        text = text_of(body.get("messages", []))
        if api == "anthropic":
            text += text_of(body.get("system", ""))
        return text
    if api == "openai_responses":
        return text_of(body.get("input", "")) + text_of(body.get("instructions", ""))
    if api in ("openai_embeddings", "ollama_embed"):
        return text_of(body.get("input", ""))
    return text_of(body.get("prompt", ""))


def output_tokens(req, body):
    h = req.headers.get("x-mock-output-tokens")
    if h:
        return int(h)
    for k in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(k), int):
            return body[k]
    opts = body.get("options") or {}
    if isinstance(opts.get("num_predict"), int):
        return opts["num_predict"]
    return DEFAULT_OUTPUT


def completion_pieces(n, tiny, pad=PAD_WORDS):
    """The completion as up to 8 pieces (one per content event)."""
    words = [COMPLETION_MARKER] + ([] if tiny else ["lorem"] * pad)
    text = " ".join(words)
    k = max(1, min(8, n))
    step = -(-len(text) // k)
    return [text[i : i + step] for i in range(0, len(text), step)]


class Call:
    def __init__(self, req, api, body):
        self.req = req
        self.api = api
        self.body = body
        self.model = body.get("model")
        openai = api.startswith("openai")
        suffix = req.headers.get("x-mock-model-suffix", "-2024-08-06" if openai else "")
        self.response_model = req.headers.get("x-mock-response-model") or f"{self.model}{suffix}"
        self.delay_ms = int(req.headers.get("x-mock-delay-ms", "0"))
        self.tiny = req.headers.get("x-mock-tiny") == "1"
        self.vendor = req.headers.get("x-mock-vendor-headers") == "1"
        self.gzip = req.headers.get("x-mock-gzip") == "1" and "gzip" in req.headers.get(
            "Accept-Encoding", ""
        )
        self.input = 8 + len(prompt_text(api, body)) // 4
        self.embeds = api in ("openai_embeddings", "ollama_embed")
        self.output = 0 if self.embeds else output_tokens(req, body)
        self.cached = self.input // 4
        # x-mock-pad-words: filler words in the completion (a long body);
        # x-mock-split-ms: a JSON answer's head, then its body that much later
        # (separate reads for the gateway).
        pad = int(req.headers.get("x-mock-pad-words", PAD_WORDS))
        self.split_ms = int(req.headers.get("x-mock-split-ms", "0"))
        self.pieces = completion_pieces(self.output, self.tiny, pad)
        self.text = "".join(self.pieces)

    def record(self, stream, usage_sent, status=200):
        sock = self.req.transport.get_extra_info("sockname") if self.req.transport else None
        peer = self.req.transport.get_extra_info("peername") if self.req.transport else None
        usage = None
        if usage_sent:
            usage = {"input": self.input, "output": self.output, "cached_input": self.cached}
        line = {
            "path": self.req.path,
            "api": self.api,
            "provider": self.req.app["provider"],
            "server_port": sock[1] if sock else None,
            "peer_port": peer[1] if peer else None,
            "model": self.model,
            "response_model": self.response_model,
            "stream": stream,
            "usage": usage,
            "gzip": self.gzip,
            "delay_ms": self.delay_ms,
            "status": status,
        }
        RECORD.write(json.dumps(line) + "\n")
        RECORD.flush()

    def headers(self, content_type):
        """The response headers: `content_type`, and the vendor's own when
        asked for (names as the vendors send them; values made up)."""
        h = {"Content-Type": content_type}
        if self.vendor and self.api.startswith("openai"):
            h.update({"openai-organization": "user-mock", "openai-processing-ms": "7",
                      "openai-version": "2020-10-01", "x-request-id": "req_mock"})
        elif self.vendor and self.api.startswith("anthropic"):
            h.update({"anthropic-organization-id": "mock-org", "request-id": "req_mock",
                      "anthropic-ratelimit-requests-limit": "50"})
        return h

    async def delay(self):
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)

    async def json_answer(self, obj):
        await self.delay()
        data = json.dumps(obj).encode()
        headers = self.headers("application/json")
        if self.gzip:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        if self.split_ms:
            resp = web.StreamResponse(headers=headers)
            resp.content_length = len(data)
            await resp.prepare(self.req)
            await asyncio.sleep(self.split_ms / 1000)
            await resp.write(data)
            await resp.write_eof()
        else:
            resp = web.Response(body=data, headers=headers)
        self.record(stream=False, usage_sent=True)
        return resp

    async def stream(self, content_type, first, events, last):
        """Headers at once; after the delay, `first` (the opening events and
        the first content event) in one write; then each of `events`; then
        `last`. Each argument is bytes or a list of bytes."""
        resp = web.StreamResponse(headers={**self.headers(content_type), "Cache-Control": "no-cache"})
        await resp.prepare(self.req)
        await self.delay()
        await resp.write(first)
        for e in events:
            await resp.write(e)
        if last:
            await resp.write(last)
        await resp.write_eof()
        return resp


def sse(obj, event=None):
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


def openai_usage(c):
    u = {
        "prompt_tokens": c.input,
        "completion_tokens": c.output,
        "total_tokens": c.input + c.output,
        "prompt_tokens_details": {"cached_tokens": c.cached, "audio_tokens": 0},
    }
    if not c.embeds:
        u["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0}
    return u


async def openai_chat(req, c, completions=False):
    created = int(time.time())
    obj_kind = "text_completion" if completions else "chat.completion"
    cid = "cmpl-mock" if completions else "chatcmpl-mock"
    if not c.body.get("stream"):
        choice = (
            {"index": 0, "text": c.text, "logprobs": None, "finish_reason": "stop"}
            if completions
            else {
                "index": 0,
                "message": {"role": "assistant", "content": c.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        )
        return await c.json_answer(
            {
                "id": cid,
                "object": obj_kind,
                "created": created,
                "model": c.response_model,
                "choices": [choice],
                "usage": openai_usage(c),
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
            }
        )
    include = bool((c.body.get("stream_options") or {}).get("include_usage"))
    kind = "text_completion" if completions else "chat.completion.chunk"

    def chunk(choices, usage=None):
        o = {"id": cid, "object": kind, "created": created, "model": c.response_model,
             "system_fingerprint": "fp_mock", "choices": choices}
        if include:
            o["usage"] = usage
        return sse(o)

    def delta(text, finish=None):
        if completions:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": None, "finish_reason": finish}

    first = b""
    if not completions:
        first = chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None, "finish_reason": None}])
    first += chunk([delta(c.pieces[0])])
    events = [chunk([delta(p)]) for p in c.pieces[1:]] + [chunk([delta("", "stop")])]
    last = (chunk([], openai_usage(c)) if include else b"") + b"data: [DONE]\n\n"
    resp = await c.stream("text/event-stream; charset=utf-8", first, events, last)
    c.record(stream=True, usage_sent=include)
    return resp


async def openai_embeddings(req, c):
    inputs = c.body.get("input", "")
    n = len(inputs) if isinstance(inputs, list) else 1
    dims = 8 if c.tiny else 64
    data = [{"object": "embedding", "index": i, "embedding": [0.015625 * (j % 7) for j in range(dims)]} for i in range(n)]
    u = {"prompt_tokens": c.input, "total_tokens": c.input}
    c.cached = 0
    return await c.json_answer({"object": "list", "data": data, "model": c.response_model, "usage": u})


async def openai_responses(req, c):
    created = int(time.time())
    usage = {
        "input_tokens": c.input,
        "input_tokens_details": {"cached_tokens": c.cached},
        "output_tokens": c.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": c.input + c.output,
    }

    def response(status, text, with_usage):
        out = [] if text is None else [{
            "type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }]
        return {"id": "resp_mock", "object": "response", "created_at": created, "status": status,
                "model": c.response_model, "output": out, "usage": usage if with_usage else None}

    if not c.body.get("stream"):
        return await c.json_answer(response("completed", c.text, True))
    seq = iter(range(1000))

    def ev(kind, **kw):
        return sse({"type": kind, "sequence_number": next(seq), **kw}, event=kind)

    def delta(p):
        return ev("response.output_text.delta", item_id="msg_mock", output_index=0, content_index=0, delta=p)

    first = ev("response.created", response=response("in_progress", None, False)) + delta(c.pieces[0])
    events = [delta(p) for p in c.pieces[1:]]
    last = ev("response.completed", response=response("completed", c.text, True))
    resp = await c.stream("text/event-stream; charset=utf-8", first, events, last)
    c.record(stream=True, usage_sent=True)
    return resp


async def anthropic_messages(req, c):
    cache_read, cache_creation = c.input // 4, c.input // 8
    raw_input = c.input - cache_read - cache_creation
    c.cached = cache_read
    usage = {"input_tokens": raw_input, "cache_creation_input_tokens": cache_creation,
             "cache_read_input_tokens": cache_read, "output_tokens": c.output, "service_tier": "standard"}
    message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": c.response_model,
               "stop_reason": None, "stop_sequence": None}
    if not c.body.get("stream"):
        return await c.json_answer({**message, "content": [{"type": "text", "text": c.text}],
                                    "stop_reason": "end_turn", "usage": usage})
    start_usage = {**usage, "output_tokens": 1}
    first = (
        sse({"type": "message_start", "message": {**message, "content": [], "usage": start_usage}}, "message_start")
        + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              "content_block_start")
        + sse({"type": "ping"}, "ping")
    )
    deltas = [sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                  "content_block_delta") for p in c.pieces]
    first += deltas[0]
    events = deltas[1:] + [sse({"type": "content_block_stop", "index": 0}, "content_block_stop")]
    last = sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": c.output}}, "message_delta") + sse({"type": "message_stop"}, "message_stop")
    resp = await c.stream("text/event-stream; charset=utf-8", first, events, last)
    c.record(stream=True, usage_sent=True)
    return resp


async def ollama(req, c):
    now = "2026-12-02T00:00:00.000000Z"
    if c.api == "ollama_embed":
        dims = 8 if c.tiny else 64
        inputs = c.body.get("input", "")
        n = len(inputs) if isinstance(inputs, list) else 1
        c.cached = 0
        return await c.json_answer({"model": c.response_model,
                                    "embeddings": [[0.015625 * (j % 7) for j in range(dims)]] * n,
                                    "total_duration": 1000, "load_duration": 10, "prompt_eval_count": c.input})
    chat = c.api == "ollama_chat"
    c.cached = 0

    def part(text, done):
        o = {"model": c.response_model, "created_at": now}
        if chat:
            o["message"] = {"role": "assistant", "content": text}
        else:
            o["response"] = text
        o["done"] = done
        if done:
            o.update({"done_reason": "stop", "total_duration": 123456, "load_duration": 1000,
                      "prompt_eval_count": c.input, "prompt_eval_duration": 1000,
                      "eval_count": c.output, "eval_duration": 100000})
        return o

    if c.body.get("stream") is False:
        return await c.json_answer(part(c.text, True))
    lines = [(json.dumps(part(p, False)) + "\n").encode() for p in c.pieces]
    last = (json.dumps(part("", True)) + "\n").encode()
    resp = await c.stream("application/x-ndjson", lines[0], lines[1:], last)
    c.record(stream=True, usage_sent=True)
    return resp


ROUTES = {
    "/v1/chat/completions": ("openai_chat", lambda r, c: openai_chat(r, c)),
    "/v1/completions": ("openai_completions", lambda r, c: openai_chat(r, c, completions=True)),
    "/v1/embeddings": ("openai_embeddings", openai_embeddings),
    "/v1/responses": ("openai_responses", openai_responses),
    "/v1/messages": ("anthropic", anthropic_messages),
    "/api/chat": ("ollama_chat", ollama),
    "/api/generate": ("ollama_generate", ollama),
    "/api/embed": ("ollama_embed", ollama),
}


def route_of(path):
    """The route a path ends with: a gateway may put its own prefix before
    the API's path (/openai/v1/chat/completions), and Azure OpenAI serves
    OpenAI's paths without /v1 (/openai/deployments/NAME/chat/completions).
    The longest match wins (/chat/completions, not /completions)."""
    path = path.rstrip("/")
    best = None
    for key, route in ROUTES.items():
        for suffix in (key, key[3:] if key.startswith("/v1/") else key):
            if path.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), route)
    return best[1] if best else None


async def handle(req):
    route = route_of(req.path)
    if route is None:
        return web.json_response({"error": {"message": f"no route {req.path}"}}, status=404)
    api, fn = route
    body = await req.json()
    return await fn(req, Call(req, api, body))


async def main(record_path, providers):
    global RECORD
    RECORD = open(record_path, "a", encoding="utf-8")
    ports = []
    for name in providers:
        app = web.Application()
        app["provider"] = name
        app.router.add_route("POST", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(f"{name}={site._server.sockets[0].getsockname()[1]}")
    print("PORTS " + " ".join(ports), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
