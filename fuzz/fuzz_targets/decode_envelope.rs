//! Fuzz the wire decoder: any bytes must decode or return a typed error,
//! never panic; whatever decodes must re-encode and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbft_types::{decode, encode, ClusterId, MESSAGE_BYTES_MAX_DEFAULT};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode(data, MESSAGE_BYTES_MAX_DEFAULT, ClusterId(1)) {
        let bytes = encode(&envelope).expect("a decoded envelope encodes");
        // The input may use non-minimal varints, so compare values, not bytes.
        let again = decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT, ClusterId(1)).expect("re-decodes");
        assert_eq!(again, envelope);
    }
});
