//! Per-direction framing over sparse segments (`Stream`, reporting to a `Sink`).
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
//! bytes, message ends and anomalies to it, and the payload (de-chunked known
//! bytes and gaps, [`Piece`]) for the sinks that read bodies.

mod chunk;
mod head;
#[cfg(test)]
mod tap_tests;

use std::mem;

use self::{
    chunk::{ends_with_last_chunk, Chunk, ChunkStep, Recent},
    head::{HeadAcc, HeadStep},
};
use super::{
    genai::Piece,
    parse::{
        check_start, check_start_strict, find_head_end, leading_newlines, parse_request,
        parse_response, Kind, ReqHead, RespHead, Start, MAX_HEAD,
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
    /// The current message's payload (its body without the transfer
    /// coding), as far as it was captured; reported before the
    /// [`Sink::body`] call that counts its bytes. Sinks that do not read
    /// bodies ignore it: nothing is copied for them.
    fn payload(&mut self, _piece: Piece<'_>, _ts: u64) {}
    /// The current message's body was cut short by the connection's end (the
    /// [`Sink::end`] that follows is not its real end).
    fn cut(&mut self) {}
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
    /// A chunked body whose chunk-size lines fell in an uncaptured region:
    /// it ends with the segment that ends with its last chunk (see
    /// [`Recent`]). Only if another message starts first is its framing
    /// reported lost (the sink was told at once that messages may go unseen,
    /// as they may in a gap, for its pairing).
    ChunkLost(Recent),
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

    /// At a message boundary, in step.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
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
        matches!(self.state, State::BodyLost | State::ChunkLost(_))
    }

    /// Gives up a message whose end is unknown (its counterpart in the other
    /// direction has ended): wait for the next message start.
    pub(crate) fn abandon_body(&mut self, sink: &mut impl Sink) {
        if let State::ChunkLost(_) = self.state {
            sink.anomaly(Anomaly::Desync);
        }
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
        // A fully captured segment holding only the beginning of a start
        // line (one split across writes) may be the first piece of a message.
        let split_start = head.len() as u64 == len
            && head.len() > leading_newlines(head)
            && matches!(check_start_strict(self.kind, head), Start::Partial { .. });
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
            // a tentative start ends the lost body too, or the message it
            // starts would be counted in it
            State::BodyLost if starts(self.kind) || split_start => {
                sink.end();
                self.state = State::Idle;
                self.uncertain = true;
            }
            // a message started before the chunked body's last chunk was
            // seen: where the body ended was lost after all
            State::ChunkLost(_) if starts(self.kind) || split_start => {
                sink.anomaly(Anomaly::Desync);
                sink.end();
                self.state = State::Idle;
                self.uncertain = true;
            }
            // and a head whose end was lost in a gap: where it ended is a
            // guess anyway, and the message the segment starts would
            // otherwise be taken for the rest of it
            State::Head(acc) if acc.holed && (starts(self.kind) || split_start) => {
                self.finish_holed(Ending::HoledEnded, sink);
                // a head nothing could be attributed to leaves the stream
                // lost, but this segment starts a message: resume here
                if let State::Lost { why, skipped } = self.state {
                    if sink.accept_resync(ts) {
                        self.resumed = Some((why, skipped));
                        self.state = State::Idle;
                    }
                }
            }
            // Otherwise the segment is taken for more of the head, as it may
            // be; but it may as well be, or hold, other messages, whose loss
            // must show: reported once per head.
            State::Head(acc) if acc.holed && !acc.spilled => {
                acc.spilled = true;
                sink.anomaly(Anomaly::Desync);
            }
            _ => {}
        }
        self.known(head, ts, sink);
        if gap > 0 {
            self.gap(gap, ts, sink);
        }
        self.known(tail, ts, sink);
        if let State::ChunkLost(recent) = &self.state {
            if recent.ends_body() {
                sink.end();
                self.state = State::Idle;
            }
        } else if self.is_body_lost() && ends_with_last_chunk(head, tail, gap) {
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
                // An incomplete head is no message: its bytes are counted
                // with the skip it was ending, if any; else as not HTTP if
                // its start line was not even complete, or as a message cut
                // short.
                match self.resumed.take() {
                    Some((why, skipped)) => {
                        report_skip(why, skipped.saturating_add(acc.total), sink);
                    }
                    None if acc.start_ok => sink.anomaly(Anomaly::Desync),
                    None => report_skip(LostWhy::NonHttp, acc.total, sink),
                }
            }
            State::Length(_) | State::Chunked(_) | State::BodyLost | State::ChunkLost(_) => {
                sink.cut();
                sink.end();
            }
            State::Close => sink.end(),
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
                                self.complete_head(&b[..end], info, Ending::Normal, false, sink);
                                b = &b[end..];
                            }
                            None => {
                                self.state = State::Head(HeadAcc::new(ts, strict, sink.clock()));
                            }
                        },
                        Start::Partial { .. } => {
                            self.state = State::Head(HeadAcc::new(ts, strict, sink.clock()));
                        }
                    }
                }
                State::Head(acc) => {
                    let (used, step) = acc.known(self.kind, b, ts);
                    b = &b[used..];
                    let (holed, total) = (acc.holed, acc.total);
                    match step {
                        HeadStep::More if holed && total > MAX_HEAD as u64 => {
                            self.finish_holed(Ending::HoledOpen, sink);
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
                            self.complete_head(&acc.buf, info, Ending::Normal, acc.spilled, sink);
                        }
                        HeadStep::Invalid if holed => self.finish_holed(Ending::HoledOpen, sink),
                        HeadStep::Invalid => self.lose(LostWhy::NonHttp, total, ts, sink),
                    }
                }
                State::Length(left) => {
                    let n = (*left).min(b.len() as u64);
                    *left -= n;
                    let done = *left == 0;
                    sink.payload(Piece::Known(&b[..n as usize]), ts);
                    sink.body(n, ts);
                    b = &b[n as usize..];
                    if done {
                        sink.end();
                        self.state = State::Idle;
                    }
                }
                State::Chunked(chunk) => {
                    let (used, step) =
                        chunk.known_data(b, &mut |d| sink.payload(Piece::Known(d), ts));
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
                State::Close => {
                    sink.payload(Piece::Known(b), ts);
                    sink.body(b.len() as u64, ts);
                    break;
                }
                // where the payload is in these bytes is not known
                State::BodyLost => {
                    sink.payload(Piece::Gap(b.len() as u64), ts);
                    sink.body(b.len() as u64, ts);
                    break;
                }
                State::ChunkLost(recent) => {
                    recent.known(b);
                    sink.payload(Piece::Gap(b.len() as u64), ts);
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
                sink.payload(Piece::Gap(t), ts);
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
                    sink.payload(Piece::Gap(t), ts);
                    sink.body(t, ts);
                }
                if t < n {
                    // chunk-size lines in the gap: the body goes on to its
                    // last chunk, which ends a later transfer
                    sink.lost(ts);
                    self.state = State::ChunkLost(Recent::default());
                    sink.payload(Piece::Gap(n - t), ts);
                    sink.body(n - t, ts);
                }
            }
            State::Close | State::BodyLost => {
                sink.payload(Piece::Gap(n), ts);
                sink.body(n, ts);
            }
            State::ChunkLost(recent) => {
                recent.gap();
                sink.payload(Piece::Gap(n), ts);
                sink.body(n, ts);
            }
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
        self.complete_head(&acc.buf, info, ending, acc.spilled, sink);
    }

    /// `reported`: a desync was reported for this head already (it took in
    /// later segments, see [`HeadAcc::spilled`]); not reported again.
    fn complete_head(
        &mut self,
        buf: &[u8],
        mut info: HeadInfo,
        ending: Ending,
        reported: bool,
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
            if reported {
                sink.lost(info.last_ts);
                self.state = State::Lost {
                    why: LostWhy::Desync,
                    skipped: 0,
                };
                return;
            }
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
                if !reported {
                    sink.anomaly(Anomaly::Desync);
                }
                sink.lost(info.last_ts);
                State::BodyLost
            }
            // a head that took in later segments may have taken its
            // framing header from another message's lines: where its body
            // ends is not known (the desync is reported already)
            (Ending::Normal, _) if reported => {
                sink.lost(info.last_ts);
                State::BodyLost
            }
            (Ending::Normal, Framing::Length(n)) => State::Length(n),
            (Ending::Normal, Framing::Chunked) => State::Chunked(Chunk::new()),
            (Ending::Normal, Framing::Close) => State::Close,
        };
    }
}
