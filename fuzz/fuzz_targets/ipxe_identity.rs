//! Any query string of `GET /ipxe` parses, never panics; five values
//! percent-encoded into a query the way the chain script's settings are
//! (`mac`, `uuid`, `serial`, `arch`, `platform`) come back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use vaquero_ipxe::Identity;

const KEYS: [&str; 5] = ["mac", "uuid", "serial", "arch", "platform"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Identity::parse(Some(&text));

    // The input as five values (NUL-separated), encoded into a query.
    let values: Vec<&str> = text.splitn(KEYS.len(), '\0').collect();
    let query = KEYS
        .iter()
        .zip(&values)
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&");
    let id = Identity::parse(Some(&query));
    let got = [&id.mac, &id.uuid, &id.serial, &id.arch, &id.platform];
    for (i, v) in values.iter().enumerate() {
        assert_eq!(got[i].as_deref(), Some(*v), "{} in {query}", KEYS[i]);
    }
    for g in &got[values.len()..] {
        assert_eq!(g.as_deref(), None, "a value not sent, in {query}");
    }
});
