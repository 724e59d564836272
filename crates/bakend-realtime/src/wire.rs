//! Server-to-client WebSocket framing (RFC 6455 §5.2). Server frames are never masked, so a
//! frame is a 2–10 byte header in front of the payload: the payload itself — one event's JSON,
//! shared by every recipient — is written straight from its shared buffer behind a header
//! built on the stack, never copied per connection.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest header a server frame needs (FIN/opcode, 127, 64-bit length).
pub const MAX_HEADER: usize = 10;

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// An empty ping (the server's heartbeat).
pub const PING: &[u8] = &[FIN | OP_PING, 0];

/// Writes the header of a final text frame carrying `len` payload bytes; returns its length.
pub fn text_header(len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = FIN | OP_TEXT;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame with `code` and `reason` (a control frame's payload is at most 125 bytes, so
/// a longer reason is cut at a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut b = BytesMut::with_capacity(4 + reason.len());
    b.put_u8(FIN | OP_CLOSE);
    b.put_u8((2 + reason.len()) as u8);
    b.put_u16(code);
    b.put_slice(reason);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    fn parse(bytes: &[u8]) -> (FrameHeader, u64) {
        let mut cur = std::io::Cursor::new(bytes);
        FrameHeader::parse(&mut cur)
            .expect("valid header")
            .expect("complete header")
    }

    #[test]
    fn text_headers_match_tungstenite_for_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let mut h = [0u8; MAX_HEADER];
            let n = text_header(len, &mut h);
            let (header, parsed_len) = parse(&h[..n]);
            assert!(header.is_final);
            assert!(header.mask.is_none(), "server frames are unmasked");
            assert_eq!(parsed_len, len as u64, "length {len}");
            let reference = Frame::message(vec![0u8; len], header.opcode, true);
            assert_eq!(
                n,
                reference.header().len(len as u64),
                "header size for {len}"
            );
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason_within_125_bytes() {
        let f = close_frame(4008, "slow_consumer");
        assert_eq!(&f[..4], &[0x88, 15, 0x0f, 0xa8]);
        assert_eq!(&f[4..], b"slow_consumer");
        let long = "é".repeat(100);
        let f = close_frame(1001, &long);
        assert!(f.len() - 2 <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
