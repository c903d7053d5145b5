//! Per-direction framing over sparse segments.
//!
//! A segment is seen as known bytes (its head), an uncaptured region of known
//! length (the gap), and known bytes again (its tail). A [`Stream`] walks one
//! direction of a connection through that, message by message: heads are
//! buffered until complete (also across segments and across gaps), bodies are
//! counted by length, chunked bodies are decoded where their framing bytes
//! are visible and skipped by arithmetic where they are not. Where framing is
//! lost the stream waits for the next segment that starts with a message.
//!
//! What a message means (which request a response answers, how a response's
//! body is framed) is the [`Sink`]'s business: the stream reports heads, body
//! bytes, message ends and anomalies to it.

use std::mem;

use super::{
    parse::{
        check_start, check_start_strict, find_head_end, leading_newlines, parse_request,
        parse_response, synth_start_line, Kind, ReqHead, RespHead, Start, MAX_HEAD,
    },
    Anomaly, Segment,
};

/// How a message's body is delimited, as the sink decides from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: the message ends with its head.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
    /// Not knowable from what was captured: count everything until the next
    /// message start (reported as a desync).
    Unknown,
    /// The message ends with its head and the connection stops being HTTP.
    Tunnel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Request(ReqHead),
    Response(RespHead),
}

/// Where a head came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadInfo {
    /// True length of the head on the wire.
    pub bytes: u64,
    /// Timestamps of the segments holding its first and last bytes.
    pub first_ts: u64,
    pub last_ts: u64,
    /// Part of the head fell in an uncaptured region.
    pub holed: bool,
    /// Messages before this one may have gone unseen: the stream lost (or
    /// never had) its place, or the previous message's end was inferred
    /// (framing lost, head cut by a gap) rather than read.
    pub uncertain: bool,
    /// The sink's [`Sink::clock`] when the head's first byte arrived.
    pub clock: u64,
}

pub(crate) trait Sink {
    /// May the stream, lost, resynchronise at a message starting in a
    /// segment at `ts`?
    fn accept_resync(&mut self, ts: u64) -> bool;
    /// A complete head. `None` rejects the message (nothing to attribute it
    /// to): the stream skips it.
    fn head(&mut self, head: Head, info: HeadInfo) -> Option<Framing>;
    /// Body bytes of the current message, in a segment at `ts`.
    fn body(&mut self, bytes: u64, ts: u64);
    /// The current message is complete (or cut short by the close).
    fn end(&mut self);
    fn anomaly(&mut self, a: Anomaly);
    /// Framing was lost in uncaptured bytes of a segment at `ts` (place,
    /// message end or head end): messages may go unseen from there until
    /// the stream resynchronises.
    fn lost(&mut self, ts: u64);
    /// A counter of the other direction's progress, stamped on heads when
    /// their first byte arrives.
    fn clock(&self) -> u64;
}

/// Why a stream is not at a known place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LostWhy {
    /// Started in the middle of the connection.
    Midstream,
    /// Bytes that are not HTTP.
    NonHttp,
    /// Framing lost in an uncaptured region (already reported).
    Desync,
}

fn report_skip(why: LostWhy, skipped: u64, sink: &mut impl Sink) {
    if skipped == 0 {
        return;
    }
    match why {
        LostWhy::Midstream => sink.anomaly(Anomaly::Resync { skipped }),
        LostWhy::NonHttp => sink.anomaly(Anomaly::NonHttp { bytes: skipped }),
        LostWhy::Desync => {}
    }
}

/// One direction of one connection.
#[derive(Debug)]
pub(crate) struct Stream {
    kind: Kind,
    state: State,
    /// Set when the stream has just resynchronised: what it was lost for and
    /// how many bytes it skipped. Reported once the first head parses;
    /// if that head fails the stream goes back to skipping.
    resumed: Option<(LostWhy, u64)>,
    /// The last message's end was inferred, not read.
    uncertain: bool,
}

#[derive(Debug)]
enum State {
    /// At a message boundary.
    Idle,
    Head(HeadAcc),
    /// Content-Length body: bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Close-delimited body.
    Close,
    /// Inside a message whose end cannot be known: counting everything until
    /// the next segment that starts a message.
    BodyLost,
    /// Between messages at an unknown place: skipping until a segment starts
    /// with a message.
    Lost {
        why: LostWhy,
        skipped: u64,
    },
    /// Not HTTP any more (upgrade, tunnel, closed).
    Opaque,
}

/// How a head that is complete ends its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// A head whose end was seen: the body follows as framed.
    Normal,
    /// A head cut by a gap, followed by a segment that starts a message: the
    /// message ended before that segment.
    HoledEnded,
    /// A head cut by a gap whose end was never found: where it and its body
    /// end is unknown.
    HoledOpen,
}

impl Stream {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            state: State::Idle,
            resumed: None,
            uncertain: false,
        }
    }

    /// A stream of a connection already open: skip to the next message start.
    pub(crate) fn new_midstream(kind: Kind) -> Self {
        Self {
            kind,
            state: State::Lost {
                why: LostWhy::Midstream,
                skipped: 0,
            },
            resumed: None,
            uncertain: false,
        }
    }

    pub(crate) fn set_opaque(&mut self) {
        self.state = State::Opaque;
        self.resumed = None;
    }

    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Some bytes of a head received, the head not complete.
    pub(crate) fn in_head(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    pub(crate) fn is_non_http(&self) -> bool {
        matches!(
            self.state,
            State::Lost {
                why: LostWhy::NonHttp,
                ..
            }
        )
    }

    pub(crate) fn is_body_lost(&self) -> bool {
        matches!(self.state, State::BodyLost)
    }

    /// Gives up a message whose end is unknown (its counterpart in the other
    /// direction has ended): wait for the next message start.
    pub(crate) fn abandon_body(&mut self) {
        if self.is_body_lost() {
            self.state = State::Lost {
                why: LostWhy::Desync,
                skipped: 0,
            };
        }
    }

    /// A head whose start line is complete (or was cut by a gap) is being
    /// received.
    pub(crate) fn in_started_head(&self) -> bool {
        matches!(&self.state, State::Head(acc) if acc.start_ok)
    }

    /// Ends such a head here with the lines received: the other direction
    /// shows the server is done reading it (a response to it started: its
    /// end lay in an uncaptured region, or the server answered it before it
    /// was complete, as nginx does with 400 for an oversized head).
    pub(crate) fn end_head_early(&mut self, sink: &mut impl Sink) {
        if self.in_started_head() {
            self.finish_holed(Ending::HoledEnded, sink);
        }
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.state {
            State::Head(acc) => acc.buf.capacity(),
            _ => 0,
        }
    }

    pub(crate) fn feed(&mut self, seg: &Segment<'_>, sink: &mut impl Sink) {
        let (head, tail, ts) = (seg.head, seg.tail, seg.ts_ns);
        let known = head.len() as u64 + tail.len() as u64;
        let len = seg.len.max(known);
        let gap = len - known;
        if len == 0 || self.is_opaque() {
            return;
        }
        // Message boundaries are trusted at segment starts only.
        let starts = |kind| match check_start_strict(kind, head) {
            Start::Line(_) => true,
            Start::Partial { confident } => confident && (head.len() as u64) < len,
            Start::Invalid => false,
        };
        match &mut self.state {
            State::Lost { why, skipped } => {
                // A fully captured segment holding only the beginning of a
                // start line may be the first piece of a split head: try it.
                let tentative = head.len() as u64 == len
                    && matches!(check_start_strict(self.kind, head), Start::Partial { .. });
                if (tentative || starts(self.kind)) && sink.accept_resync(ts) {
                    self.resumed = Some((*why, *skipped));
                    self.state = State::Idle;
                } else {
                    *skipped = skipped.saturating_add(len);
                    return;
                }
            }
            State::BodyLost if starts(self.kind) => {
                sink.end();
                self.state = State::Idle;
                self.uncertain = true;
            }
            State::Head(acc) if acc.holed && starts(self.kind) => {
                self.finish_holed(Ending::HoledEnded, sink);
            }
            _ => {}
        }
        self.known(head, ts, sink);
        if gap > 0 {
            self.gap(gap, ts, sink);
        }
        self.known(tail, ts, sink);
        if self.is_body_lost() && ends_with_last_chunk(head, tail, gap) {
            sink.end();
            self.state = State::Idle;
            self.uncertain = true;
        }
    }

    /// The connection closed: ends close-delimited (and truncated) messages
    /// and reports what was skipped. The stream ignores input afterwards.
    pub(crate) fn close(&mut self, sink: &mut impl Sink) {
        match mem::replace(&mut self.state, State::Idle) {
            State::Head(acc) if acc.holed => {
                self.state = State::Head(acc);
                self.finish_holed(Ending::HoledEnded, sink);
            }
            State::Head(acc) => {
                // An incomplete head is no request; only a resynchronisation
                // it was confirming is reported.
                if let Some((why, skipped)) = self.resumed.take() {
                    report_skip(why, skipped.saturating_add(acc.total), sink);
                }
            }
            State::Length(_) | State::Chunked(_) | State::Close | State::BodyLost => sink.end(),
            State::Lost { why, skipped } => report_skip(why, skipped, sink),
            State::Idle | State::Opaque => {}
        }
        if let Some((why, skipped)) = self.resumed.take() {
            report_skip(why, skipped, sink);
        }
        self.state = State::Opaque;
    }

    /// Known bytes, contiguous with whatever came before.
    fn known(&mut self, mut b: &[u8], ts: u64, sink: &mut impl Sink) {
        while !b.is_empty() {
            match &mut self.state {
                State::Idle => {
                    b = &b[leading_newlines(b)..];
                    if b.is_empty() {
                        break;
                    }
                    let strict = self.resumed.is_some();
                    let start = if strict {
                        check_start_strict(self.kind, b)
                    } else {
                        check_start(self.kind, b)
                    };
                    match start {
                        Start::Invalid => self.lose(LostWhy::NonHttp, 0, ts, sink),
                        Start::Line(_) => match find_head_end(b, 0) {
                            // the whole head in hand: parse it in place
                            Some(end) => {
                                let info = HeadInfo {
                                    bytes: end as u64,
                                    first_ts: ts,
                                    last_ts: ts,
                                    holed: false,
                                    uncertain: false,
                                    clock: sink.clock(),
                                };
                                self.complete_head(&b[..end], info, Ending::Normal, sink);
                                b = &b[end..];
                            }
                            None => {
                                self.state = State::Head(HeadAcc::new(ts, strict, sink.clock()))
                            }
                        },
                        Start::Partial { .. } => {
                            self.state = State::Head(HeadAcc::new(ts, strict, sink.clock()))
                        }
                    }
                }
                State::Head(acc) => {
                    let (used, step) = acc.known(self.kind, b, ts);
                    b = &b[used..];
                    let (holed, total) = (acc.holed, acc.total);
                    match step {
                        HeadStep::More if holed && total > MAX_HEAD as u64 => {
                            self.finish_holed(Ending::HoledOpen, sink)
                        }
                        HeadStep::More => {}
                        HeadStep::Complete => {
                            let State::Head(acc) = mem::replace(&mut self.state, State::Idle)
                            else {
                                return;
                            };
                            let info = HeadInfo {
                                bytes: acc.total,
                                first_ts: acc.first_ts,
                                last_ts: acc.last_ts,
                                holed: acc.holed,
                                uncertain: false,
                                clock: acc.clock,
                            };
                            self.complete_head(&acc.buf, info, Ending::Normal, sink);
                        }
                        HeadStep::Invalid if holed => self.finish_holed(Ending::HoledOpen, sink),
                        HeadStep::Invalid => self.lose(LostWhy::NonHttp, total, ts, sink),
                    }
                }
                State::Length(left) => {
                    let n = (*left).min(b.len() as u64);
                    *left -= n;
                    let done = *left == 0;
                    sink.body(n, ts);
                    b = &b[n as usize..];
                    if done {
                        sink.end();
                        self.state = State::Idle;
                    }
                }
                State::Chunked(chunk) => {
                    let (used, step) = chunk.known(b);
                    if used > 0 {
                        sink.body(used as u64, ts);
                    }
                    b = &b[used..];
                    match step {
                        ChunkStep::More => {}
                        ChunkStep::Done => {
                            sink.end();
                            self.state = State::Idle;
                        }
                        ChunkStep::Bad => self.body_lost(ts, sink),
                    }
                }
                State::Close | State::BodyLost => {
                    sink.body(b.len() as u64, ts);
                    break;
                }
                State::Lost { skipped, .. } => {
                    *skipped = skipped.saturating_add(b.len() as u64);
                    break;
                }
                State::Opaque => break,
            }
        }
    }

    /// `n` uncaptured bytes.
    fn gap(&mut self, n: u64, ts: u64, sink: &mut impl Sink) {
        match &mut self.state {
            // a message starts where nothing was captured
            State::Idle => self.lose(LostWhy::Desync, n, ts, sink),
            State::Head(acc) => {
                if acc.gap(self.kind, n, ts) {
                    // where the head ends is a guess from here: messages may
                    // go unseen inside it
                    sink.lost(ts);
                    if acc.total > MAX_HEAD as u64 {
                        self.finish_holed(Ending::HoledOpen, sink);
                    }
                } else {
                    // too little seen to tell it is HTTP at all: counted as
                    // not HTTP, but it may have been a message
                    sink.lost(ts);
                    let total = acc.total.saturating_add(n);
                    self.lose(LostWhy::NonHttp, total, ts, sink);
                }
            }
            State::Length(left) => {
                let t = (*left).min(n);
                *left -= t;
                let done = *left == 0;
                sink.body(t, ts);
                if done {
                    sink.end();
                    self.state = State::Idle;
                    if n > t {
                        self.lose(LostWhy::Desync, n - t, ts, sink);
                    }
                }
            }
            State::Chunked(chunk) => {
                let t = chunk.gap(n);
                if t > 0 {
                    sink.body(t, ts);
                }
                if t < n {
                    self.body_lost(ts, sink);
                    sink.body(n - t, ts);
                }
            }
            State::Close | State::BodyLost => sink.body(n, ts),
            State::Lost { skipped, .. } => *skipped = skipped.saturating_add(n),
            State::Opaque => {}
        }
    }

    fn body_lost(&mut self, ts: u64, sink: &mut impl Sink) {
        sink.anomaly(Anomaly::Desync);
        sink.lost(ts);
        self.state = State::BodyLost;
    }

    /// Stops at an unknown place; `bytes` already consumed count as skipped.
    fn lose(&mut self, why: LostWhy, bytes: u64, ts: u64, sink: &mut impl Sink) {
        if why == LostWhy::Desync {
            sink.lost(ts);
        }
        if let Some((was, skipped)) = self.resumed.take() {
            // the resynchronisation did not hold: back to skipping
            self.state = State::Lost {
                why: was,
                skipped: skipped.saturating_add(bytes),
            };
            return;
        }
        if why == LostWhy::Desync {
            sink.anomaly(Anomaly::Desync);
        }
        self.state = State::Lost {
            why,
            skipped: bytes,
        };
    }

    /// Ends a head cut by a gap (or never finished) with its complete lines.
    fn finish_holed(&mut self, ending: Ending, sink: &mut impl Sink) {
        let State::Head(mut acc) = mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let keep = acc
            .buf
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        acc.buf.truncate(keep);
        acc.buf.extend_from_slice(b"\r\n");
        let info = HeadInfo {
            bytes: acc.total,
            first_ts: acc.first_ts,
            last_ts: acc.last_ts,
            holed: true,
            uncertain: false,
            clock: acc.clock,
        };
        self.complete_head(&acc.buf, info, ending, sink);
    }

    fn complete_head(
        &mut self,
        buf: &[u8],
        mut info: HeadInfo,
        ending: Ending,
        sink: &mut impl Sink,
    ) {
        let parse = |b: &[u8]| match self.kind {
            Kind::Request => parse_request(b).map(Head::Request),
            Kind::Response => parse_response(b).map(Head::Response),
        };
        let mut head = parse(buf);
        if head.is_none() && info.holed {
            // the visible header lines did not parse: the start line alone
            if let Some(nl) = buf.iter().position(|&c| c == b'\n') {
                let mut line = buf[..=nl].to_vec();
                line.extend_from_slice(b"\r\n");
                head = parse(&line);
            }
        }
        let Some(head) = head else {
            return self.lose(LostWhy::NonHttp, info.bytes, info.last_ts, sink);
        };
        if let Some((why, skipped)) = self.resumed.take() {
            report_skip(why, skipped, sink);
            info.uncertain = true;
        }
        info.uncertain |= mem::take(&mut self.uncertain);
        // a head cut by a gap may have swallowed messages, or been found in
        // one that followed: what comes next is uncertain too
        self.uncertain = info.holed;
        let Some(framing) = sink.head(head, info) else {
            // nothing to attribute it to
            return self.lose(LostWhy::Desync, 0, info.last_ts, sink);
        };
        self.state = match (ending, framing) {
            (_, Framing::Tunnel) => {
                sink.end();
                State::Opaque
            }
            (Ending::HoledEnded, _) => {
                sink.end();
                self.uncertain = true;
                State::Idle
            }
            (Ending::Normal, Framing::None | Framing::Length(0)) => {
                sink.end();
                State::Idle
            }
            (Ending::HoledOpen, _) | (Ending::Normal, Framing::Unknown) => {
                sink.anomaly(Anomaly::Desync);
                sink.lost(info.last_ts);
                State::BodyLost
            }
            (Ending::Normal, Framing::Length(n)) => State::Length(n),
            (Ending::Normal, Framing::Chunked) => State::Chunked(Chunk::new()),
            (Ending::Normal, Framing::Close) => State::Close,
        };
    }
}

/// Whether the last known bytes of a segment are a chunked body's last chunk
/// (`0\r\n\r\n` after a line end, or alone at the segment's start).
fn ends_with_last_chunk(head: &[u8], tail: &[u8], gap: u64) -> bool {
    const LAST: &[u8] = b"0\r\n\r\n";
    // the last (up to) 6 contiguous known bytes that end the segment
    let mut w = [0u8; 6];
    let mut n = 0;
    let parts: [&[u8]; 2] = if gap == 0 { [head, tail] } else { [&[], tail] };
    for part in parts.iter().rev() {
        for &c in part.iter().rev() {
            if n == w.len() {
                break;
            }
            n += 1;
            w[w.len() - n] = c;
        }
    }
    let w = &w[w.len() - n..];
    match n {
        6 => w[0] == b'\n' && &w[1..] == LAST,
        5 => gap == 0 && w == LAST,
        _ => false,
    }
}

/// A head being received piece by piece.
#[derive(Debug)]
struct HeadAcc {
    /// Known bytes of the head; once holed, only complete lines (and a start
    /// line made up from its visible part if the gap cut it).
    buf: Vec<u8>,
    /// True bytes consumed, uncaptured ones included.
    total: u64,
    first_ts: u64,
    last_ts: u64,
    /// Some of the head fell in an uncaptured region.
    holed: bool,
    /// After a gap: the bytes up to the next line end belong to a line whose
    /// beginning was not seen.
    skip_line: bool,
    /// The start line is complete and valid.
    start_ok: bool,
    /// Where to resume looking for the empty line.
    scan: usize,
    /// Found by resynchronising: the start line must pass the strict check.
    strict: bool,
    /// The sink's clock at the first byte.
    clock: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadStep {
    More,
    Complete,
    Invalid,
}

impl HeadAcc {
    fn new(ts: u64, strict: bool, clock: u64) -> Self {
        Self {
            strict,
            clock,
            buf: Vec::new(),
            total: 0,
            first_ts: ts,
            last_ts: ts,
            holed: false,
            skip_line: false,
            start_ok: false,
            scan: 0,
        }
    }

    /// Takes bytes of `b` up to the end of the head; returns how many.
    fn known(&mut self, kind: Kind, b: &[u8], ts: u64) -> (usize, HeadStep) {
        self.last_ts = ts;
        let mut used = 0;
        if self.skip_line {
            match b.iter().position(|&c| c == b'\n') {
                None => {
                    self.total = self.total.saturating_add(b.len() as u64);
                    return (b.len(), HeadStep::More);
                }
                Some(i) => {
                    used = i + 1;
                    self.skip_line = false;
                }
            }
        }
        let rest = &b[used..];
        let old = self.buf.len();
        // one byte over the limit is enough to know the head is too long
        let take = rest.len().min((MAX_HEAD + 1).saturating_sub(old));
        grow(&mut self.buf, take);
        self.buf.extend_from_slice(&rest[..take]);
        if !self.start_ok && (self.buf.len() <= 64 || rest[..take].contains(&b'\n')) {
            let start = if self.strict {
                check_start_strict(kind, &self.buf)
            } else {
                check_start(kind, &self.buf)
            };
            match start {
                Start::Invalid => {
                    self.total = self.total.saturating_add((used + take) as u64);
                    return (used + take, HeadStep::Invalid);
                }
                Start::Line(_) => self.start_ok = true,
                Start::Partial { .. } => {}
            }
        }
        if self.start_ok {
            if let Some(end) = find_head_end(&self.buf, self.scan) {
                let n = used + end.saturating_sub(old);
                self.buf.truncate(end);
                self.total = self.total.saturating_add(n as u64);
                return (n, HeadStep::Complete);
            }
            self.scan = self.buf.len().saturating_sub(2);
        }
        self.total = self.total.saturating_add((used + take) as u64);
        if self.buf.len() > MAX_HEAD {
            return (used + take, HeadStep::Invalid);
        }
        (used + take, HeadStep::More)
    }

    /// `n` uncaptured bytes inside the head. False when too little of the
    /// start line is visible to go on.
    fn gap(&mut self, kind: Kind, n: u64, ts: u64) -> bool {
        if !self.start_ok {
            match synth_start_line(kind, &self.buf) {
                Some(line) => {
                    self.buf = line;
                    self.start_ok = true;
                }
                None => return false,
            }
        } else {
            // a line cut by the gap is dropped (a partial value would lie)
            let keep = self
                .buf
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |i| i + 1);
            self.buf.truncate(keep);
        }
        self.holed = true;
        self.skip_line = true;
        self.total = self.total.saturating_add(n);
        self.last_ts = ts;
        self.scan = self.buf.len().saturating_sub(2);
        true
    }
}

/// Grows `buf` for `more` bytes, doubling but never past the head limit, so
/// a head split into tiny pieces is not copied over and over and the buffer
/// stays within MAX_HEAD + 1 bytes.
fn grow(buf: &mut Vec<u8>, more: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = (buf.capacity() * 2).clamp(256, MAX_HEAD + 1).max(need);
        buf.reserve_exact(target - buf.len());
    }
}

/// Chunked transfer coding decoder over known bytes, skipping uncaptured
/// chunk data by arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digit count, and whether
    /// an extension (or whitespace) has started, with its length.
    Size {
        size: u64,
        digits: u8,
        ext: Option<u16>,
    },
    /// Size line's CR seen.
    SizeLf {
        size: u64,
    },
    Data(u64),
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// Trailer section: bytes in the current line.
    Trailer(u32),
    /// A trailer line's CR seen; `empty` if the line was empty.
    TrailerLf {
        empty: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkStep {
    More,
    Done,
    Bad,
}

const MAX_CHUNK_EXT: u16 = 4096;
const MAX_TRAILER_LINE: u32 = 64 * 1024;

impl Chunk {
    fn new() -> Self {
        Chunk::Size {
            size: 0,
            digits: 0,
            ext: None,
        }
    }

    fn after_size(size: u64) -> Self {
        if size == 0 {
            Chunk::Trailer(0)
        } else {
            Chunk::Data(size)
        }
    }

    /// Consumes known bytes; returns how many and whether the body ended
    /// (the bytes after it are not consumed) or the framing is broken.
    fn known(&mut self, b: &[u8]) -> (usize, ChunkStep) {
        let mut i = 0;
        while i < b.len() {
            if let Chunk::Data(left) = self {
                let t = (*left).min((b.len() - i) as u64);
                *left -= t;
                i += t as usize;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                continue;
            }
            let c = b[i];
            let next = match *self {
                Chunk::Data(_) => return (i, ChunkStep::Bad), // handled above
                Chunk::Size { size, digits, ext } => match (c, ext) {
                    (b'\r', _) if digits > 0 => Chunk::SizeLf { size },
                    (b'\n', _) if digits > 0 => Self::after_size(size),
                    (_, None) if c.is_ascii_hexdigit() => {
                        if digits >= 15 {
                            return (i, ChunkStep::Bad);
                        }
                        let d = u64::from((c as char).to_digit(16).unwrap_or(0));
                        Chunk::Size {
                            size: size * 16 + d,
                            digits: digits + 1,
                            ext: None,
                        }
                    }
                    (b';' | b' ' | b'\t', None) if digits > 0 => Chunk::Size {
                        size,
                        digits,
                        ext: Some(1),
                    },
                    (_, Some(n)) if n < MAX_CHUNK_EXT && c != 0 && c != b'\n' => Chunk::Size {
                        size,
                        digits,
                        ext: Some(n + 1),
                    },
                    _ => return (i, ChunkStep::Bad),
                },
                Chunk::SizeLf { size } if c == b'\n' => Self::after_size(size),
                Chunk::DataCr if c == b'\r' => Chunk::DataLf,
                Chunk::DataCr | Chunk::DataLf if c == b'\n' => Chunk::new(),
                Chunk::Trailer(0) if c == b'\n' => {
                    return (i + 1, ChunkStep::Done);
                }
                Chunk::Trailer(n) if c == b'\r' => Chunk::TrailerLf { empty: n == 0 },
                Chunk::Trailer(_) if c == b'\n' => Chunk::Trailer(0),
                Chunk::Trailer(n) if n < MAX_TRAILER_LINE => Chunk::Trailer(n + 1),
                Chunk::TrailerLf { empty: true } if c == b'\n' => {
                    return (i + 1, ChunkStep::Done);
                }
                Chunk::TrailerLf { empty: false } if c == b'\n' => Chunk::Trailer(0),
                _ => return (i, ChunkStep::Bad),
            };
            *self = next;
            i += 1;
        }
        (i, ChunkStep::More)
    }

    /// Skips `n` uncaptured bytes as far as they are chunk data; returns how
    /// many were (fewer than `n`: the framing fell in the gap).
    fn gap(&mut self, n: u64) -> u64 {
        match self {
            Chunk::Data(left) => {
                let t = (*left).min(n);
                *left -= t;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                t
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_decoder() {
        let body = b"1f4;name=x\r\n"
            .iter()
            .copied()
            .chain([b'a'; 500])
            .chain(*b"\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT");
        let body: Vec<u8> = body.collect();
        let mut c = Chunk::new();
        assert_eq!(c.known(&body), (body.len() - 4, ChunkStep::Done));
        // the same byte by byte
        let mut c = Chunk::new();
        for (i, b) in body.iter().enumerate() {
            let (n, step) = c.known(std::slice::from_ref(b));
            assert_eq!(n, 1, "byte {i}");
            if i == body.len() - 5 {
                assert_eq!(step, ChunkStep::Done);
                break;
            }
            assert_eq!(step, ChunkStep::More, "byte {i}");
        }
        // data skipped by a gap, framing visible
        let mut c = Chunk::new();
        assert_eq!(c.known(b"10\r\nabc"), (7, ChunkStep::More));
        assert_eq!(c.gap(13), 13);
        assert_eq!(c.known(b"\r\n0\r\n\r\n"), (7, ChunkStep::Done));
        // a gap past the data
        let mut c = Chunk::new();
        assert_eq!(c.known(b"4\r\n"), (3, ChunkStep::More));
        assert_eq!(c.gap(10), 4);
        assert_eq!(c.gap(1), 0);
        // bad framing
        assert_eq!(Chunk::new().known(b"zz\r\n"), (0, ChunkStep::Bad));
        assert_eq!(Chunk::new().known(b"\r\n"), (0, ChunkStep::Bad));
        assert_eq!(Chunk::new().known(b"2\r\nabX"), (5, ChunkStep::Bad));
        assert_eq!(
            Chunk::new().known(b"fffffffffffffffff\r\n").1,
            ChunkStep::Bad
        );
    }

    #[test]
    fn last_chunk_detection() {
        assert!(ends_with_last_chunk(b"", b"xxxx\r\n0\r\n\r\n", 10));
        assert!(ends_with_last_chunk(b"0\r\n\r\n", b"", 0));
        assert!(ends_with_last_chunk(b"abc\r", b"\n0\r\n\r\n", 0));
        assert!(!ends_with_last_chunk(b"", b"0\r\n\r\n", 10));
        assert!(!ends_with_last_chunk(b"", b"xx10\r\n\r\n", 10));
        assert!(!ends_with_last_chunk(b"0\r\n\r\n", b"", 10));
    }
}
