#!/usr/bin/env python3
"""Writes the GenAI seeds of the http_conn fuzz target (corpus/http_conn/genai-*) in the
script format of src/script.rs: python3 genai_seeds.py corpus/http_conn"""
import struct, sys, os
out = sys.argv[1]

def step(d, dt, data, head=None, tail=0):
    """one transfer: captured head (all by default) and tail, the rest a gap"""
    h = len(data) if head is None else min(head, len(data))
    t = min(tail, len(data) - h)
    gap = len(data) - h - t
    shift = 0
    while gap >> shift > 0xffff:
        shift += 1
    # the gap must be exact: round the captured tail up to absorb the remainder
    g = gap >> shift
    extra = gap - (g << shift)
    t += extra
    assert t <= 255
    op = d | (shift << 2)
    return struct.pack('<BHHBH', op, dt, h, t, g) + data[:h] + (data[len(data) - t:] if t else b'')

def post(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:18601\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\ncontent-type: application/json\r\n\r\n").encode() + body

def chunk(b):
    return f"{len(b):x}\r\n".encode() + b + b"\r\n"

def resp_head(ctype, length=None):
    fr = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"HTTP/1.1 200 OK\r\nDate: Tue, 05 May 2026 09:14:03 GMT\r\nContent-Type: {ctype}\r\n"
            f"{fr}\r\nConnection: keep-alive\r\n\r\n").encode()

C = '"id":"chatcmpl-AzQ5nJ0Yb9H8kQ","object":"chat.completion.chunk","created":1739194007,"model":"gpt-4o-mini-2024-07-18"'
def d(delta, fin="null"):
    return f'data: {{{C},"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{fin}}}],"usage":null}}\n\n'.encode()
chat = [d('{"role":"assistant","content":""}'), d('{"content":"Hello"}'), d('{"content":"!"}'), d('{}', '"stop"'),
        f'data: {{{C},"choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{{"cached_tokens":0}}}}}}\n\n'.encode(),
        b"data: [DONE]\n\n"]
req = post("/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}],"stream":true,"stream_options":{"include_usage":true}}')
s = bytes([1]) + step(0, 10, req)
for i, e in enumerate(chat):
    w = chunk(e) + (b"0\r\n\r\n" if i == len(chat) - 1 else b"")
    if i == 0:
        w = resp_head("text/event-stream; charset=utf-8") + w
    s += step(1, 500, w)
open(os.path.join(out, "genai-1-chat_sse-whole"), "wb").write(s)

A = [("message_start", '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":120,"cache_read_input_tokens":2048,"output_tokens":1}}}'),
     ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}'),
     ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' + "Hello " * 8000 + '"}}'),
     ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}'),
     ("message_stop", '{"type":"message_stop"}')]
req = post("/v1/messages", b'{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello"}]}')
body = b"".join(chunk(f"event: {e}\ndata: {x}\n\n".encode()) for e, x in A) + b"0\r\n\r\n"
w = resp_head("text/event-stream") + body
# as the kernel captures a GenAI socket: 32 KiB whole, then head and a 64-byte tail
# a read larger than the capture: its middle is a gap (the big delta is cut, the usage not)
s = bytes([1]) + step(0, 10, req) + step(1, 900, w[:20000]) + step(1, 300, w[20000:-400], 8192, 64) + step(1, 5, w[-400:])
open(os.path.join(out, "genai-2-messages_sse-kernel"), "wb").write(s)

lines = [b'{"model":"llama3.2","created_at":"2026-05-05T09:14:03Z","message":{"role":"assistant","content":"The"},"done":false}\n',
         b'{"model":"llama3.2","created_at":"2026-05-05T09:14:05Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"prompt_eval_count":26,"eval_count":282,"eval_duration":4535599000}\n']
req = post("/api/chat", b'{"model":"llama3.2","messages":[{"role":"user","content":"why is the sky blue?"}]}')
w = resp_head("application/x-ndjson") + chunk(lines[0]) + chunk(lines[1]) + b"0\r\n\r\n"
s = bytes([1]) + step(0, 10, req[:50]) + step(0, 1, req[50:])
for i in range(0, len(w), 37):
    s += step(1, 40, w[i:i + 37])
open(os.path.join(out, "genai-3-ollama_ndjson-pieces"), "wb").write(s)

emb = '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[' + ",".join("0.0023064255" for _ in range(1536)) + ']}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
req = post("/v1/embeddings", b'{"input":"The food was delicious","model":"text-embedding-3-small"}')
w = resp_head("application/json", len(emb)) + emb.encode()
s = bytes([1]) + step(0, 10, req) + step(1, 700, w, 4096, 200)
open(os.path.join(out, "genai-4-embeddings-kernel"), "wb").write(s)
