//! The IPVS sync message decoder: `lb::sync::decode` on one datagram.
//!
//! Input: one flags byte, then the datagram. Flags: bit 0 writes the datagram's length into its
//! size field first, so mutations get past the size check and reach the entries.
//!
//! Properties: never panics; a header error drops the whole message, entry errors only entries;
//! the decoded entries encode (in messages within the limit) and decode back to the same entries.
#![no_main]

use lb::sync::codec::{MAX_MESSAGE_LEN, decode, encode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, msg @ ..] = data else { return };
    let mut msg = msg.to_vec();
    if flags & 1 != 0
        && let (Ok(size), Some(field)) = (u16::try_from(msg.len()), msg.get_mut(2..4))
    {
        field.copy_from_slice(&size.to_be_bytes());
    }
    let decoded = match decode(&msg) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.is_entry_error(), "entry error {e:?} dropped the whole message");
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    for (_, e) in decoded.skipped.iter().chain(&decoded.rest_dropped) {
        assert!(e.is_entry_error(), "header error {e:?} reported for an entry");
    }
    // From just over the largest entry (381 bytes with its header) to near the size limit.
    let max_len = (512 + usize::from(*flags) * 256).min(MAX_MESSAGE_LEN);
    let messages = encode_batch(decoded.sync_id, &decoded.conns, max_len)
        .unwrap_or_else(|e| panic!("decoded entries do not encode: {e}: {decoded:?}"));
    let mut again = Vec::new();
    for m in &messages {
        assert!(m.len() <= max_len, "message of {} bytes over {max_len}", m.len());
        let d = decode(m).unwrap_or_else(|e| panic!("an encoded message does not decode: {e}"));
        assert!(d.is_clean(), "an encoded message drops entries: {d:?}");
        assert_eq!(d.sync_id, decoded.sync_id);
        again.extend(d.conns);
    }
    assert_eq!(again, decoded.conns, "entries round trip");
});
