//! Lanes and the frame format.
//!
//! Wire format of one lane: a unidirectional QUIC stream whose first byte is
//! the lane tag ([`Lane::tag`]), followed by frames `u32 big-endian length ||
//! payload`, where the payload is a [`pbft_types::Envelope`] encoded with
//! [`pbft_types::encode`].

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix of a frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A lane: one long-lived unidirectional stream per peer and direction, so
/// that bulk traffic never sits in front of consensus messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Small, latency-critical protocol messages (prepare, commit, view
    /// change, requests and replies). Sent with the higher stream priority
    /// and delivered to the application first.
    Consensus,
    /// Large transfers: state transfer, big batches.
    Bulk,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Consensus, Lane::Bulk];

    /// The first byte of the lane's stream.
    #[must_use]
    pub const fn tag(self) -> u8 {
        match self {
            Self::Consensus => 0,
            Self::Bulk => 1,
        }
    }

    /// The lane a stream tag names.
    #[must_use]
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Consensus),
            1 => Some(Self::Bulk),
            _ => None,
        }
    }

    /// A short name for logs and metrics labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Consensus => "consensus",
            Self::Bulk => "bulk",
        }
    }

    /// quinn stream priority: consensus data is sent before bulk data.
    pub(crate) const fn priority(self) -> i32 {
        match self {
            Self::Consensus => 1,
            Self::Bulk => 0,
        }
    }
}

/// One value per lane.
#[derive(Debug, Default)]
pub(crate) struct PerLane<T> {
    pub(crate) consensus: T,
    pub(crate) bulk: T,
}

impl<T> PerLane<T> {
    pub(crate) fn new(mut make: impl FnMut(Lane) -> T) -> Self {
        Self {
            consensus: make(Lane::Consensus),
            bulk: make(Lane::Bulk),
        }
    }

    pub(crate) fn get(&self, lane: Lane) -> &T {
        match lane {
            Lane::Consensus => &self.consensus,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The length prefix announces more than the limit.
    TooLarge { got: usize },
    /// The stream ended inside a frame.
    Truncated,
}

/// Cuts a byte stream into frames, never holding more than one frame (at
/// most the limit) plus one read chunk.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    pub(crate) fn new(frame_bytes_max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            frame_bytes_max,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame's payload, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; FRAME_HEADER_BYTES];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge { got: len });
        }
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Called when the stream ended: a partial frame is an error.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Appends one frame (header and payload) to `out`.
pub(crate) fn put_frame_header(out: &mut BytesMut, payload_len: usize) {
    // Callers check payload_len <= frame_bytes_max <= u32::MAX.
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in payloads {
            put_frame_header(&mut out, p.len());
            out.extend_from_slice(p);
        }
        out.to_vec()
    }

    #[test]
    fn frames_survive_any_chunking() {
        let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 7]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let wire = framed(&refs);
        for chunk in [1, 2, 3, 5, 64, wire.len()] {
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f.to_vec());
                }
            }
            d.finish().unwrap();
            assert_eq!(got, payloads);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(100);
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                got: u32::MAX as usize
            })
        );
        let mut d = FrameDecoder::new(100);
        d.push(&framed(&[&[0; 100]]));
        assert_eq!(d.next_frame().unwrap().map(|b| b.len()), Some(100));
    }

    #[test]
    fn truncated_frame_is_detected() {
        let mut d = FrameDecoder::new(100);
        let wire = framed(&[b"hello"]);
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0]);
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }

    #[test]
    fn lane_tags_round_trip() {
        for lane in Lane::ALL {
            assert_eq!(Lane::from_tag(lane.tag()), Some(lane));
        }
        assert_eq!(Lane::from_tag(2), None);
    }
}
