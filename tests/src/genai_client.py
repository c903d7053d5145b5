"""The clients of tests/tests/genai.rs (tests/src/genai.rs runs it): the
official `openai` and `anthropic` SDKs, and curl for Ollama's API.

    python3 genai_client.py PLAN_JSON

PLAN_JSON: {"calls": [CALL, ...]}, each CALL
    {"kind": "openai_chat" | "openai_completions" | "openai_embeddings" |
             "openai_responses" | "anthropic" | "ollama_chat" |
             "ollama_generate" | "ollama_embed",
     "base_url": "http://127.0.0.1:8080/buf",   # without /v1 or /api
     "model": "gpt-4o", "prompt": "...", "max_tokens": 12,
     "stream": false, "include_usage": false,    # OpenAI streams
     "headers": {"x-mock-delay-ms": "300"},      # sent as they are
     "repeat": 1}
made in order, one at a time. Prints its own account as one JSON object:
    {"calls": n, "marker_seen": m,
     "models": {"<kind> <model>": {"calls": n, "with_usage": n,
                                   "input": n, "output": n}}}
where input and output sum the usage the client read (input counted as the
OTel conventions do: Anthropic's cache_read and cache_creation included)
and marker_seen counts the calls whose completion text held the mock's
marker (embeddings have none).
"""

import json
import subprocess
import sys

import anthropic
import openai

MARKER = "GSMOCKCOMPLETION7f3a"


def openai_call(c):
    client = openai.OpenAI(base_url=c["base_url"] + "/v1", api_key=c.get("api_key", "sk-gatescope-test"), max_retries=0,
                           timeout=30)
    kind, model, prompt = c["kind"], c["model"], c["prompt"]
    h = c.get("headers") or None
    mt = c.get("max_tokens", 16)
    if kind == "openai_embeddings":
        r = client.embeddings.create(model=model, input=prompt, extra_headers=h)
        return r.usage.prompt_tokens, 0, ""
    if kind == "openai_responses":
        if not c.get("stream"):
            r = client.responses.create(model=model, input=prompt, max_output_tokens=mt, extra_headers=h)
            return r.usage.input_tokens, r.usage.output_tokens, r.output_text
        text, usage = "", None
        for e in client.responses.create(model=model, input=prompt, max_output_tokens=mt, stream=True,
                                         extra_headers=h):
            if e.type == "response.output_text.delta":
                text += e.delta
            elif e.type == "response.completed":
                usage = e.response.usage
        return (usage.input_tokens, usage.output_tokens, text) if usage else (None, None, text)
    stream = bool(c.get("stream"))
    extra = {}
    if stream and c.get("include_usage"):
        extra["stream_options"] = {"include_usage": True}
    if kind == "openai_completions":
        r = client.completions.create(model=model, prompt=prompt, max_tokens=mt, stream=stream,
                                      extra_headers=h, **extra)
    else:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=mt, stream=stream, extra_headers=h, **extra)
    if not stream:
        text = r.choices[0].text if kind == "openai_completions" else r.choices[0].message.content
        return r.usage.prompt_tokens, r.usage.completion_tokens, text
    text, usage = "", None
    for chunk in r:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += (ch.text if kind == "openai_completions" else ch.delta.content) or ""
    return (usage.prompt_tokens, usage.completion_tokens, text) if usage else (None, None, text)


def anthropic_call(c):
    client = anthropic.Anthropic(base_url=c["base_url"], api_key=c.get("api_key", "sk-ant-gatescope-test"), max_retries=0,
                                 timeout=30)
    args = dict(model=c["model"], max_tokens=c.get("max_tokens", 16),
                messages=[{"role": "user", "content": c["prompt"]}], extra_headers=c.get("headers") or None)

    def full_input(u):
        return u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)

    if not c.get("stream"):
        r = client.messages.create(**args)
        return full_input(r.usage), r.usage.output_tokens, "".join(b.text for b in r.content)
    inp = out = None
    text = ""
    for e in client.messages.create(stream=True, **args):
        if e.type == "message_start":
            inp = full_input(e.message.usage)
        elif e.type == "content_block_delta":
            text += e.delta.text
        elif e.type == "message_delta":
            out = e.usage.output_tokens
    return inp, out, text


def ollama_call(c):
    kind = c["kind"]
    path = {"ollama_chat": "/api/chat", "ollama_generate": "/api/generate", "ollama_embed": "/api/embed"}[kind]
    body = {"model": c["model"]}
    if kind == "ollama_chat":
        body["messages"] = [{"role": "user", "content": c["prompt"]}]
    elif kind == "ollama_generate":
        body["prompt"] = c["prompt"]
    else:
        body["input"] = c["prompt"]
    if kind != "ollama_embed":
        body["stream"] = bool(c.get("stream", True))
        body["options"] = {"num_predict": c.get("max_tokens", 16)}
    cmd = ["curl", "-sS", "--fail", "-N", "--max-time", "30", "-H", "Content-Type: application/json"]
    for k, v in (c.get("headers") or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd += ["--data-binary", json.dumps(body), c["base_url"] + path]
    out = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    text, inp, outp = "", None, None
    for line in out.splitlines():
        if not line.strip():
            continue
        o = json.loads(line)
        text += (o.get("message") or {}).get("content", "") + o.get("response", "")
        if kind == "ollama_embed" or o.get("done"):
            inp, outp = o.get("prompt_eval_count"), o.get("eval_count", 0)
    return inp, outp, text


def main():
    plan = json.loads(sys.argv[1])
    models, calls, seen = {}, 0, 0
    for c in plan["calls"]:
        for _ in range(c.get("repeat", 1)):
            if c["kind"].startswith("openai"):
                inp, out, text = openai_call(c)
            elif c["kind"] == "anthropic":
                inp, out, text = anthropic_call(c)
            else:
                inp, out, text = ollama_call(c)
            calls += 1
            seen += MARKER in (text or "")
            m = models.setdefault(f"{c['kind']} {c['model']}",
                                  {"calls": 0, "with_usage": 0, "input": 0, "output": 0})
            m["calls"] += 1
            if inp is not None:
                m["with_usage"] += 1
                m["input"] += inp
                m["output"] += out or 0
    print(json.dumps({"calls": calls, "marker_seen": seen, "models": models}))


if __name__ == "__main__":
    main()
