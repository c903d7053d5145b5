//! The GenAI request marker: whether a target's egress transfer starts a
//! request to a GenAI API, so that its socket is captured whole from the
//! request's write on (payload.rs makes it sticky).

use core::ptr::read_volatile;

use gatescope_common::{DataEvent, DATA_TAIL_MAX};

use crate::payload::same;

/// How long a request's path may be for its end to be found: the longest
/// real ones (a gateway's prefix before Azure OpenAI's
/// `/openai/deployments/NAME/chat/completions`) are under 100 bytes.
const GENAI_PATH_MAX: usize = 192;

/// The ends of the paths of the GenAI APIs the agent recognises
/// (http/src/genai/mod.rs): OpenAI's `…/chat/completions`, `…/completions`,
/// `…/embeddings`, `…/responses` with or without `/v1` (Azure's have none),
/// Anthropic's `…/messages`, Ollama's `/api/chat`, `/api/generate`,
/// `/api/embed` (and `/api/embeddings`).
const GENAI_PATH_ENDS: [&[u8]; 7] = [
    b"/completions",
    b"/embeddings",
    b"/responses",
    b"/messages",
    b"/api/chat",
    b"/api/generate",
    b"/api/embed",
];

/// Whether an egress transfer starts a request to a GenAI API: a POST whose
/// path (up to a space or `?`, within [`GENAI_PATH_MAX`] bytes; a trailing
/// `/` aside) ends in one of [`GENAI_PATH_ENDS`], whatever prefix a gateway
/// or a provider put before it. The socket is then an upstream connection
/// to a model provider, whose usage sits at the end of a response body
/// (OpenAI) or in SSE events spread over many reads, beyond the usual head
/// and 64-byte tail. Marked here, at the request's write, so that the
/// capture is wide before any byte of the response can be read: the agent
/// setting it later would race a fast upstream. An ordinary API's POST to
/// such a path (`/rooms/7/messages`) is captured wide too: more bytes
/// copied, nothing misread (the agent counts it as a GenAI call only when
/// confirmed). Only a target's POSTs pay for the scan.
#[inline(always)]
pub fn starts_genai_request(event: &mut DataEvent) -> bool {
    let len = event.header.data.head_len as usize;
    let head = &event.data[DATA_TAIL_MAX..DATA_TAIL_MAX + 6 + GENAI_PATH_MAX];
    if len < 12 || !same(&head[..6], b"POST /") {
        return false;
    }
    // The path's end, after its first `/` at 5. Indexes go through `get`:
    // a bounds check's panic path would end the program with a call the
    // verifier refuses ("last insn is not an exit or jmp").
    let at = |i: usize| head.get(i).copied().unwrap_or(0);
    let mut end = 0;
    let mut i = 6;
    while i < 6 + GENAI_PATH_MAX {
        if i >= len {
            return false;
        }
        if at(i) == b' ' || at(i) == b'?' {
            end = i;
            break;
        }
        i += 1;
    }
    if end == 0 {
        return false;
    }
    // Through memory the verifier does not follow (the scratch's last
    // byte, past any record's end), so that the paths leaving the loop at
    // each of its 192 places meet in one state for what follows: checked
    // once per place it blew the verifier's budget (1M instructions).
    let spare = event.data.len() - 1;
    event.data[spare] = end as u8;
    // SAFETY: a byte of our own scratch.
    let end = usize::from(unsafe { read_volatile(&raw const event.data[spare]) });
    if end < 6 {
        return false;
    }
    // Indexes of `data` are `end` plus a constant (the head starts
    // DATA_TAIL_MAX in): a difference the verifier may take as negative is
    // refused as an unbounded access.
    let data = &event.data[..DATA_TAIL_MAX + 6 + GENAI_PATH_MAX];
    let slash = usize::from(data.get(end + DATA_TAIL_MAX - 1) == Some(&b'/'));
    GENAI_PATH_ENDS
        .iter()
        .any(|want| path_ends(data, end + DATA_TAIL_MAX - slash, want))
}

/// Whether the bytes of `data` before `end` are `want` (and the path, which
/// starts at DATA_TAIL_MAX + 5, is at least as long).
#[inline(always)]
fn path_ends(data: &[u8], end: usize, want: &[u8]) -> bool {
    if end < DATA_TAIL_MAX + 5 + want.len() {
        return false;
    }
    let mut j = 0;
    while j < want.len() {
        if data.get(end + j - want.len()) != Some(&want[j]) {
            return false;
        }
        j += 1;
    }
    true
}
