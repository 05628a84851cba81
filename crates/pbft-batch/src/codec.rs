//! The batch encoding: a versioned header, then length-prefixed requests,
//! optionally lz4-compressed.
//!
//! ```text
//! offset size  field
//! 0      1     version      FORMAT_VERSION (1)
//! 1      1     codec        0 = raw, 1 = lz4 block (see `Compression`)
//! 2      4     count        number of requests, u32 little endian
//! 6      4     body_len     length of the uncompressed body, u32 little endian
//! 10     ..    payload      raw: exactly `body_len` bytes of body
//!                           lz4: an lz4 block that decompresses to exactly `body_len` bytes
//! body = count times { len: u32 little endian, len bytes of request }
//! ```
//!
//! The header is never compressed, so the decoder checks the count and the
//! declared uncompressed size against its bounds before it allocates or
//! decompresses anything.

use std::ops::Range;

use crate::error::BatchError;

/// The format version this crate writes and reads (first header byte).
pub const FORMAT_VERSION: u8 = 1;
/// Length of the batch header in bytes: version, codec, count, body length.
pub const HEADER_LEN: usize = 10;
/// Length of the prefix in front of each request in bytes (a `u32` LE).
pub const LEN_PREFIX_LEN: usize = 4;
/// An lz4 block never expands its input by more than this factor (one
/// extension byte adds at most 255 bytes of match). A header declaring a
/// larger ratio is refused before any allocation.
const LZ4_EXPANSION_MAX: usize = 255;
/// Bodies of at least `4 * COMPRESS_PROBE_BYTES` are first probed: if their
/// first `COMPRESS_PROBE_BYTES` do not compress enough, the body is stored raw
/// without compressing the rest. This makes incompressible batches (random,
/// encrypted or already compressed payloads) about as cheap as raw ones.
const COMPRESS_PROBE_BYTES: usize = 4096;

/// The compression of a batch payload, as written in the header's codec byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as is (codec byte 0).
    None,
    /// An lz4 block, via the pure-Rust `lz4_flex` (codec byte 1).
    Lz4,
}

impl Compression {
    /// The codec byte written in the header.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Lz4 => 1,
        }
    }

    /// The compression named by a header codec byte.
    ///
    /// # Errors
    /// [`BatchError::UnknownCodec`] for a byte that names none.
    pub fn from_byte(byte: u8) -> Result<Self, BatchError> {
        match byte {
            0 => Ok(Self::None),
            1 => Ok(Self::Lz4),
            got => Err(BatchError::UnknownCodec { got }),
        }
    }
}

/// Bounds and compression policy for [`encode`] and [`decode`].
///
/// The bounds should equal the [`BatcherConfig`](crate::BatcherConfig) ones
/// (see [`CodecConfig::for_batcher`]), so that every batch the batcher closes
/// encodes, and decodes on the other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    /// Most requests in one batch. Default 1024.
    pub batch_requests_max: usize,
    /// Most bytes of one batch uncompressed, header and length prefixes
    /// included; also bounds the encoded input `decode` accepts, and so the
    /// memory a decode can allocate. Default 1 MiB. At most `u32::MAX`.
    pub batch_bytes_max: usize,
    /// Compression to try when encoding. Default [`Compression::Lz4`].
    /// Decoding accepts every known codec whatever this says.
    pub compression: Compression,
    /// Bodies shorter than this many bytes are stored raw without trying to
    /// compress. Default 512.
    pub compress_bytes_min: usize,
    /// The compressed body is kept only if it is at least this many percent
    /// smaller than the raw body; otherwise the batch is stored raw.
    /// Default 10. At most 100.
    pub compress_savings_percent_min: u32,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            batch_requests_max: 1024,
            batch_bytes_max: 1024 * 1024,
            compression: Compression::Lz4,
            compress_bytes_min: 512,
            compress_savings_percent_min: 10,
        }
    }
}

impl CodecConfig {
    /// The default policy with the bounds of a batcher config.
    #[must_use]
    pub fn for_batcher(config: &crate::BatcherConfig) -> Self {
        Self {
            batch_requests_max: config.batch_requests_max,
            batch_bytes_max: config.batch_bytes_max,
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// [`encode`] and [`decode`] never panic on an invalid config either;
    /// they just enforce whatever bounds it holds.
    ///
    /// # Errors
    /// [`BatchError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), BatchError> {
        let invalid = |field, reason| Err(BatchError::InvalidConfig { field, reason });
        if self.batch_requests_max == 0 {
            return invalid("batch_requests_max", "must be at least 1");
        }
        if u32::try_from(self.batch_requests_max).is_err() {
            return invalid("batch_requests_max", "must fit in a u32");
        }
        if self.batch_bytes_max < HEADER_LEN + LEN_PREFIX_LEN {
            return invalid(
                "batch_bytes_max",
                "must hold a header and one length prefix",
            );
        }
        if u32::try_from(self.batch_bytes_max).is_err() {
            return invalid("batch_bytes_max", "must fit in a u32");
        }
        if self.compress_savings_percent_min > 100 {
            return invalid("compress_savings_percent_min", "must be at most 100");
        }
        Ok(())
    }
}

/// Size in bytes of the raw (uncompressed) encoding of these requests,
/// header included: `HEADER_LEN + sum(LEN_PREFIX_LEN + len)`. Saturates at
/// `usize::MAX`.
#[must_use]
pub fn raw_encoded_len<T: AsRef<[u8]>>(requests: &[T]) -> usize {
    requests.iter().fold(HEADER_LEN, |acc, r| {
        acc.saturating_add(LEN_PREFIX_LEN)
            .saturating_add(r.as_ref().len())
    })
}

/// Encodes requests into one batch, compressed if that pays.
///
/// The body is compressed only when `compression` is not `None`, the body is
/// at least `compress_bytes_min` bytes, and the compressed body is at least
/// `compress_savings_percent_min` percent smaller; otherwise it is stored raw.
/// A body of 16 KiB or more is stored raw at once if its first 4 KiB do not
/// compress by that much (a cheap probe for incompressible payloads).
///
/// # Errors
/// [`BatchError::TooManyRequests`] or [`BatchError::BatchTooLarge`] when the
/// batch breaks the config's bounds (a batch that the peers would refuse).
pub fn encode<T: AsRef<[u8]>>(requests: &[T], config: &CodecConfig) -> Result<Vec<u8>, BatchError> {
    let count = requests.len();
    if count > config.batch_requests_max {
        return Err(BatchError::TooManyRequests {
            limit: config.batch_requests_max,
            got: count,
        });
    }
    let raw_len = raw_encoded_len(requests);
    if raw_len > config.batch_bytes_max {
        return Err(BatchError::BatchTooLarge {
            limit: config.batch_bytes_max,
            got: raw_len,
        });
    }
    let body_len = raw_len - HEADER_LEN;
    let too_large = || BatchError::BatchTooLarge {
        limit: u32::MAX as usize,
        got: raw_len,
    };
    let count_u32 = u32::try_from(count).map_err(|_| too_large())?;
    let body_len_u32 = u32::try_from(body_len).map_err(|_| too_large())?;

    let mut raw = Vec::with_capacity(raw_len);
    write_header(&mut raw, Compression::None, count_u32, body_len_u32);
    for request in requests {
        let request = request.as_ref();
        // Fits: the total was checked against a u32 above.
        let len = u32::try_from(request.len()).map_err(|_| too_large())?;
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(request);
    }

    if config.compression == Compression::Lz4 && body_len >= config.compress_bytes_min {
        if let Some(compressed) = compress_lz4(&raw, count_u32, body_len_u32, config) {
            return Ok(compressed);
        }
    }
    Ok(raw)
}

/// True if `compressed` bytes out of `raw` save at least the configured
/// percentage.
fn pays(compressed: usize, raw: usize, config: &CodecConfig) -> bool {
    let keep_percent = 100usize.saturating_sub(config.compress_savings_percent_min as usize);
    compressed.saturating_mul(100) <= raw.saturating_mul(keep_percent)
}

/// Compresses the body of a raw encoding; `None` if that does not pay.
fn compress_lz4(raw: &[u8], count: u32, body_len: u32, config: &CodecConfig) -> Option<Vec<u8>> {
    let body = raw.get(HEADER_LEN..)?;
    if body.len() >= 4 * COMPRESS_PROBE_BYTES {
        let probe = body.get(..COMPRESS_PROBE_BYTES)?;
        if !pays(lz4_flex::block::compress(probe).len(), probe.len(), config) {
            return None;
        }
    }
    let mut out = vec![0u8; HEADER_LEN + lz4_flex::block::get_maximum_output_size(body.len())];
    let written = lz4_flex::block::compress_into(body, out.get_mut(HEADER_LEN..)?).ok()?;
    if !pays(written, body.len(), config) {
        return None;
    }
    out.truncate(HEADER_LEN + written);
    let header = out.get_mut(..HEADER_LEN)?;
    header.copy_from_slice(&header_bytes(Compression::Lz4, count, body_len));
    Some(out)
}

fn header_bytes(codec: Compression, count: u32, body_len: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let c = count.to_le_bytes();
    let b = body_len.to_le_bytes();
    let bytes = [
        FORMAT_VERSION,
        codec.to_byte(),
        c[0],
        c[1],
        c[2],
        c[3],
        b[0],
        b[1],
        b[2],
        b[3],
    ];
    header.copy_from_slice(&bytes);
    header
}

fn write_header(out: &mut Vec<u8>, codec: Compression, count: u32, body_len: u32) {
    out.extend_from_slice(&header_bytes(codec, count, body_len));
}

/// Reads a little-endian `u32` at `offset`, or reports how far it was short.
fn read_u32(bytes: &[u8], offset: usize) -> Result<u32, BatchError> {
    let end = offset.saturating_add(4);
    let slice = bytes.get(offset..end).ok_or(BatchError::Truncated {
        needed: end,
        got: bytes.len(),
    })?;
    let mut word = [0u8; 4];
    word.copy_from_slice(slice);
    Ok(u32::from_le_bytes(word))
}

/// The parsed, bounds-checked header of an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The payload's compression.
    pub compression: Compression,
    /// The declared number of requests.
    pub count: usize,
    /// The declared length of the uncompressed body (header excluded).
    pub body_len: usize,
}

/// Parses and checks the header of an encoded batch without touching the
/// payload: version, codec, `count <= batch_requests_max`, declared
/// uncompressed size `<= batch_bytes_max`, and input length `<= batch_bytes_max`.
///
/// # Errors
/// The same header errors as [`decode`].
pub fn decode_header(bytes: &[u8], config: &CodecConfig) -> Result<Header, BatchError> {
    if bytes.len() > config.batch_bytes_max {
        return Err(BatchError::InputTooLarge {
            limit: config.batch_bytes_max,
            got: bytes.len(),
        });
    }
    let header = bytes.get(..HEADER_LEN).ok_or(BatchError::Truncated {
        needed: HEADER_LEN,
        got: bytes.len(),
    })?;
    let version = header.first().copied().unwrap_or_default();
    if version != FORMAT_VERSION {
        return Err(BatchError::UnsupportedVersion {
            expected: FORMAT_VERSION,
            got: version,
        });
    }
    let compression = Compression::from_byte(header.get(1).copied().unwrap_or_default())?;
    let count = read_u32(header, 2)? as usize;
    let body_len = read_u32(header, 6)? as usize;
    if count > config.batch_requests_max {
        return Err(BatchError::TooManyRequests {
            limit: config.batch_requests_max,
            got: count,
        });
    }
    let raw_len = body_len.saturating_add(HEADER_LEN);
    if raw_len > config.batch_bytes_max {
        return Err(BatchError::BatchTooLarge {
            limit: config.batch_bytes_max,
            got: raw_len,
        });
    }
    let prefixes_len = count.saturating_mul(LEN_PREFIX_LEN);
    if prefixes_len > body_len {
        return Err(BatchError::Truncated {
            needed: prefixes_len,
            got: body_len,
        });
    }
    Ok(Header {
        compression,
        count,
        body_len,
    })
}

/// Decodes and checks one encoded batch.
///
/// Never panics. Every bound is checked before the memory it guards is
/// allocated: the input length, the declared count and the declared
/// uncompressed size come first; a compressed payload is then decompressed
/// into a buffer of exactly the declared size, so it cannot write past it.
///
/// # Errors
/// [`BatchError::InputTooLarge`], [`BatchError::Truncated`],
/// [`BatchError::UnsupportedVersion`], [`BatchError::UnknownCodec`],
/// [`BatchError::TooManyRequests`], [`BatchError::BatchTooLarge`] (a
/// compression bomb), [`BatchError::Decompress`],
/// [`BatchError::LengthMismatch`], [`BatchError::TrailingBytes`].
pub fn decode(bytes: &[u8], config: &CodecConfig) -> Result<DecodedBatch, BatchError> {
    let header = decode_header(bytes, config)?;
    let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
    let body = match header.compression {
        Compression::None => {
            if payload.len() < header.body_len {
                return Err(BatchError::Truncated {
                    needed: HEADER_LEN + header.body_len,
                    got: bytes.len(),
                });
            }
            if payload.len() > header.body_len {
                return Err(BatchError::TrailingBytes {
                    extra: payload.len() - header.body_len,
                });
            }
            payload.to_vec()
        }
        Compression::Lz4 => decompress_lz4(payload, header.body_len)?,
    };
    let ranges = split_body(&body, header.count)?;
    Ok(DecodedBatch {
        body,
        ranges,
        compression: header.compression,
    })
}

fn decompress_lz4(payload: &[u8], body_len: usize) -> Result<Vec<u8>, BatchError> {
    let corrupt = |reason: String| BatchError::Decompress {
        codec: Compression::Lz4,
        reason,
    };
    if body_len > payload.len().saturating_mul(LZ4_EXPANSION_MAX) {
        return Err(corrupt(format!(
            "declared {body_len} bytes from {} compressed bytes exceeds lz4's maximum ratio",
            payload.len()
        )));
    }
    let mut body = vec![0u8; body_len];
    let written =
        lz4_flex::block::decompress_into(payload, &mut body).map_err(|e| corrupt(e.to_string()))?;
    if written != body_len {
        return Err(BatchError::LengthMismatch {
            declared: body_len,
            got: written,
        });
    }
    Ok(body)
}

/// Splits a body into exactly `count` length-prefixed requests.
fn split_body(body: &[u8], count: usize) -> Result<Vec<Range<usize>>, BatchError> {
    // count * LEN_PREFIX_LEN <= body.len() was checked on the header.
    let mut ranges = Vec::with_capacity(count);
    let mut pos = 0usize;
    for _ in 0..count {
        let len = read_u32(body, pos)? as usize;
        let start = pos + LEN_PREFIX_LEN;
        let end = start.saturating_add(len);
        if end > body.len() {
            return Err(BatchError::Truncated {
                needed: end,
                got: body.len(),
            });
        }
        ranges.push(start..end);
        pos = end;
    }
    if pos != body.len() {
        return Err(BatchError::TrailingBytes {
            extra: body.len() - pos,
        });
    }
    Ok(ranges)
}

/// A decoded batch: the body bytes and where each request lies in them (one
/// allocation for the whole batch, not one per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    body: Vec<u8>,
    ranges: Vec<Range<usize>>,
    compression: Compression,
}

impl DecodedBatch {
    /// Number of requests.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True for a batch of no request.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The request at `index`, if any.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.ranges
            .get(index)
            .and_then(|r| self.body.get(r.clone()))
    }

    /// The requests in batch order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ranges
            .iter()
            .map(|r| self.body.get(r.clone()).unwrap_or_default())
    }

    /// The requests, each copied into its own vector.
    #[must_use]
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    /// How the batch was stored on the wire.
    #[must_use]
    pub fn compression(&self) -> Compression {
        self.compression
    }
}
