//! The control socket's request decoder: each connection sends one line, which the server decodes
//! with `serde_json::from_str::<lb::control::proto::Request>(line.trim())`.
//!
//! Properties: never panics (nor overflows the stack on deeply nested JSON); a decoded request
//! encodes to JSON that decodes to the same request.
#![no_main]

use lb::control::proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server reads a line into a String: invalid UTF-8 never reaches the decoder.
    let Ok(line) = std::str::from_utf8(data) else { return };
    let decoded = serde_json::from_str::<Request>(line.trim());
    // Bytes straight from a socket, as a client library might decode them.
    let from_slice = serde_json::from_slice::<Request>(data);
    if let Ok(request) = decoded {
        let json = serde_json::to_string(&request).expect("a request encodes");
        let again: Request = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("`{json}` (from {request:?}) does not decode: {e}"));
        assert_eq!(again, request, "request round trip through `{json}`");
        if let Ok(r) = from_slice {
            assert_eq!(r, request, "from_slice and from_str disagree");
        }
    } else if let Err(e) = decoded {
        let _ = e.to_string();
    }
});
