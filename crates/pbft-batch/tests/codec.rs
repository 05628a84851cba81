//! Unit tests of the encoding, with exact expected bytes and errors.

// Test helpers may unwrap and index: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use pbft_batch::{
    decode, decode_header, encode, raw_encoded_len, BatchError, CodecConfig, Compression, Header,
    HEADER_LEN,
};

fn raw_config() -> CodecConfig {
    CodecConfig {
        compression: Compression::None,
        ..CodecConfig::default()
    }
}

#[test]
fn raw_encoding_is_exact() {
    let bytes = encode(&[&b"ab"[..], b"", b"xyz"], &CodecConfig::default()).unwrap();
    #[rustfmt::skip]
    let expected = vec![
        1, 0,             // version 1, raw
        3, 0, 0, 0,       // count
        17, 0, 0, 0,      // body length: 3 * 4 + 5
        2, 0, 0, 0, b'a', b'b',
        0, 0, 0, 0,
        3, 0, 0, 0, b'x', b'y', b'z',
    ];
    assert_eq!(bytes, expected);
    assert_eq!(raw_encoded_len(&[&b"ab"[..], b"", b"xyz"]), expected.len());
    let decoded = decode(&bytes, &CodecConfig::default()).unwrap();
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded.get(0), Some(&b"ab"[..]));
    assert_eq!(decoded.get(1), Some(&b""[..]));
    assert_eq!(decoded.get(2), Some(&b"xyz"[..]));
    assert_eq!(decoded.get(3), None);
    assert_eq!(decoded.compression(), Compression::None);
}

#[test]
fn empty_batch_encodes_to_a_bare_header() {
    let none: [&[u8]; 0] = [];
    let bytes = encode(&none, &CodecConfig::default()).unwrap();
    assert_eq!(bytes, vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(decode(&bytes, &CodecConfig::default()).unwrap().is_empty());
}

#[test]
fn compressible_batch_is_lz4_and_round_trips() {
    let requests: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            format!("{{\"op\":\"put\",\"key\":\"user:{i:06}\",\"value\":\"hello\"}}").into_bytes()
        })
        .collect();
    let bytes = encode(&requests, &CodecConfig::default()).unwrap();
    assert_eq!(bytes[1], 1, "lz4 flag");
    assert!(bytes.len() * 2 < raw_encoded_len(&requests));
    let header = decode_header(&bytes, &CodecConfig::default()).unwrap();
    assert_eq!(
        header,
        Header {
            compression: Compression::Lz4,
            count: 100,
            body_len: raw_encoded_len(&requests) - HEADER_LEN,
        }
    );
    let decoded = decode(&bytes, &CodecConfig::default()).unwrap();
    assert_eq!(decoded.compression(), Compression::Lz4);
    assert_eq!(decoded.to_vecs(), requests);
}

#[test]
fn small_or_incompressible_batches_stay_raw() {
    // Below compress_bytes_min: raw even though it compresses well.
    let small = vec![vec![0u8; 100]];
    assert_eq!(encode(&small, &CodecConfig::default()).unwrap()[1], 0);
    // Pseudo-random bytes do not shrink by 10 %: raw.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let random: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            (0..256)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    let bytes = encode(&random, &CodecConfig::default()).unwrap();
    assert_eq!(bytes[1], 0);
    assert_eq!(bytes.len(), raw_encoded_len(&random));
    // Compression off: raw.
    let zeros = vec![vec![0u8; 4096]];
    assert_eq!(encode(&zeros, &raw_config()).unwrap()[1], 0);
    assert_eq!(encode(&zeros, &CodecConfig::default()).unwrap()[1], 1);
}

#[test]
fn encode_refuses_what_peers_would_refuse() {
    let config = CodecConfig {
        batch_requests_max: 2,
        batch_bytes_max: 30,
        ..CodecConfig::default()
    };
    assert_eq!(
        encode(&[&b""[..], b"", b""], &config),
        Err(BatchError::TooManyRequests { limit: 2, got: 3 })
    );
    assert_eq!(
        encode(&[&[0u8; 17][..]], &config),
        Err(BatchError::BatchTooLarge { limit: 30, got: 31 })
    );
    assert!(encode(&[&[0u8; 16][..]], &config).is_ok());
}

#[test]
fn decode_errors_are_exact() {
    let cfg = CodecConfig::default();
    let good = encode(&[&b"ab"[..]], &cfg).unwrap(); // 10 + 4 + 2 bytes

    assert_eq!(
        decode(&[], &cfg),
        Err(BatchError::Truncated { needed: 10, got: 0 })
    );
    assert_eq!(
        decode(&good[..9], &cfg),
        Err(BatchError::Truncated { needed: 10, got: 9 })
    );
    assert_eq!(
        decode(&good[..15], &cfg),
        Err(BatchError::Truncated {
            needed: 16,
            got: 15
        })
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        decode(&trailing, &cfg),
        Err(BatchError::TrailingBytes { extra: 1 })
    );
    let mut version = good.clone();
    version[0] = 2;
    assert_eq!(
        decode(&version, &cfg),
        Err(BatchError::UnsupportedVersion {
            expected: 1,
            got: 2
        })
    );
    let mut codec = good.clone();
    codec[1] = 7;
    assert_eq!(
        decode(&codec, &cfg),
        Err(BatchError::UnknownCodec { got: 7 })
    );

    // Count says 2 but the body holds one request and nothing after it.
    let mut count = good.clone();
    count[2] = 2;
    assert_eq!(
        decode(&count, &cfg),
        Err(BatchError::Truncated { needed: 8, got: 6 })
    );
    // Count 0 with a 6-byte body: the body is all trailing.
    let mut zero = good.clone();
    zero[2] = 0;
    assert_eq!(
        decode(&zero, &cfg),
        Err(BatchError::TrailingBytes { extra: 6 })
    );
    // A length prefix pointing past the body.
    let mut long = good.clone();
    long[10] = 3;
    assert_eq!(
        decode(&long, &cfg),
        Err(BatchError::Truncated { needed: 7, got: 6 })
    );

    let strict = CodecConfig {
        batch_requests_max: 1,
        batch_bytes_max: 15,
        ..CodecConfig::default()
    };
    assert_eq!(
        decode(&good, &strict),
        Err(BatchError::InputTooLarge { limit: 15, got: 16 })
    );
    let two = encode(&[&b""[..], b""], &cfg).unwrap();
    let one = CodecConfig {
        batch_requests_max: 1,
        ..CodecConfig::default()
    };
    assert_eq!(
        decode(&two, &one),
        Err(BatchError::TooManyRequests { limit: 1, got: 2 })
    );
}

#[test]
fn declared_size_over_the_bound_is_refused_before_decompressing() {
    // 64 MiB of zeros compresses to about 256 KiB: a bomb for a 1 MiB bound.
    let body_len: u32 = 64 * 1024 * 1024;
    let compressed = lz4_flex::block::compress(&vec![0u8; body_len as usize]);
    let mut bomb = vec![1, 1, 1, 0, 0, 0];
    bomb.extend_from_slice(&body_len.to_le_bytes());
    bomb.extend_from_slice(&compressed[..1000]);
    assert_eq!(
        decode(&bomb, &CodecConfig::default()),
        Err(BatchError::BatchTooLarge {
            limit: 1024 * 1024,
            got: 64 * 1024 * 1024 + 10,
        })
    );
}

#[test]
fn lying_header_cannot_make_lz4_write_past_the_declared_size() {
    // An honest 100 KiB lz4 payload of zeros, declared as 1000 bytes.
    let compressed = lz4_flex::block::compress(&[0u8; 100 * 1024]);
    let mut liar = vec![1, 1, 0, 0, 0, 0];
    liar.extend_from_slice(&1000u32.to_le_bytes());
    liar.extend_from_slice(&compressed);
    assert!(matches!(
        decode(&liar, &CodecConfig::default()),
        Err(BatchError::Decompress {
            codec: Compression::Lz4,
            ..
        })
    ));
    // A declared size beyond lz4's maximum ratio is refused without allocating.
    let mut ratio = vec![1, 1, 0, 0, 0, 0];
    ratio.extend_from_slice(&(1000 * 255 + 1u32).to_le_bytes());
    ratio.extend_from_slice(&[0u8; 1000]);
    assert!(matches!(
        decode(&ratio, &CodecConfig::default()),
        Err(BatchError::Decompress { .. })
    ));
}

#[test]
fn maximal_lz4_ratio_still_decodes() {
    // One request of zeros filling the whole bound: the best ratio lz4 gets.
    let cfg = CodecConfig::default();
    let request = vec![0u8; cfg.batch_bytes_max - HEADER_LEN - 4];
    let bytes = encode(&[&request], &cfg).unwrap();
    assert_eq!(bytes[1], 1);
    assert!(bytes.len() < 5000, "ratio above 200: {}", bytes.len());
    assert_eq!(decode(&bytes, &cfg).unwrap().get(0), Some(&request[..]));
}

#[test]
fn config_validation_names_the_field() {
    let ok = CodecConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let bad = |c: CodecConfig| match c.validate() {
        Err(BatchError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert_eq!(
        bad(CodecConfig {
            batch_requests_max: 0,
            ..ok.clone()
        }),
        "batch_requests_max"
    );
    assert_eq!(
        bad(CodecConfig {
            batch_bytes_max: 13,
            ..ok.clone()
        }),
        "batch_bytes_max"
    );
    assert_eq!(
        bad(CodecConfig {
            compress_savings_percent_min: 101,
            ..ok
        }),
        "compress_savings_percent_min"
    );
}

#[test]
fn incompressible_start_is_probed_and_stored_raw() {
    // 4 KiB of noise then 60 KiB of zeros: the probe sees only noise.
    let mut x = 1u32;
    let mut request: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    request.resize(64 * 1024, 0);
    let bytes = encode(&[&request], &CodecConfig::default()).unwrap();
    assert_eq!(bytes[1], 0, "probe says raw");
    // The zeros first: compressed.
    request.reverse();
    let bytes = encode(&[&request], &CodecConfig::default()).unwrap();
    assert_eq!(bytes[1], 1);
    assert_eq!(
        decode(&bytes, &CodecConfig::default()).unwrap().get(0),
        Some(&request[..])
    );
}
