//! HTTP/2 (RFC 9113) over sparse captures: frames, HPACK, streams to exchanges.

mod hpack;
mod huffman;
